"""Probe a media file with ffprobe (via ffmpeg-python): duration, streams, channels, tags."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import subprocess

import ffmpeg

from .backends import PermanentError, TransientError
from .models import ProbeResult

# Extensions we try first; anything else is still probed when asked explicitly (watch mode
# probes unknown files too, so a .dat that is really audio is not missed).
MEDIA_EXTENSIONS = frozenset(
    ".mp3 .m4a .m4b .aac .ogg .oga .opus .flac .wav .wma .aiff .aif .amr .ac3 .mka .mp2 .spx .weba "
    ".mp4 .m4v .mkv .webm .mov .avi .wmv .flv .mpg .mpeg .ts .mts .m2ts .3gp .ogv".split()
)
TAG_KEYS = ("title", "artist", "album", "album_artist", "date", "genre", "comment", "language")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "unknown error"


def probe(path: str | os.PathLike) -> ProbeResult:
    """Probe one file. Raises PermanentError for files that are not usable media."""
    path = Path(path)
    if shutil.which("ffprobe") is None:
        raise TransientError("ffprobe not found: install ffmpeg (Debian/Ubuntu: apt-get install -y ffmpeg)")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise TransientError(f"{path}: file disappeared before it could be read") from None
    if size == 0:
        raise PermanentError(f"{path}: empty file (0 bytes)")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as e:
        msg = _last_line((e.stderr or b"").decode("utf-8", "replace")).replace(f"{path}: ", "")
        raise PermanentError(f"{path}: not a readable media file ({msg})") from None
    streams = info.get("streams", [])
    fmt = info.get("format", {})
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    video = [s for s in streams if s.get("codec_type") == "video"
             and not (s.get("disposition") or {}).get("attached_pic")]
    if not audio:
        raise PermanentError(f"{path}: no audio stream (nothing to transcribe)")
    try:
        duration = float(fmt.get("duration") or audio[0].get("duration") or 0)
    except ValueError:
        duration = 0.0
    if duration <= 0:
        raise PermanentError(f"{path}: no playable audio (duration unknown or zero)")
    tags: dict[str, str] = {}
    for source in (fmt.get("tags") or {}, audio[0].get("tags") or {}):
        for k, v in source.items():
            k = k.lower()
            if k in TAG_KEYS and v and str(v).lower() != "und" and k not in tags:
                tags[k] = str(v)
    _check_tail(path, duration)
    a = audio[0]
    return ProbeResult(
        duration=duration,
        container=fmt.get("format_name", ""),
        size=size,
        audio_streams=len(audio),
        video_streams=len(video),
        channels=int(a.get("channels") or 0),
        sample_rate=int(a["sample_rate"]) if a.get("sample_rate") else None,
        audio_codec=a.get("codec_name"),
        video_codec=video[0].get("codec_name") if video else None,
        tags=tags,
    )


def _check_tail(path: Path, duration: float) -> None:
    """Decode the last seconds: a file cut short (a truncated download) has none to decode.

    ffprobe trusts headers, so a truncated MP3 still reports its full duration; seeking near
    the end and decoding costs one short ffmpeg run and catches it.
    """
    window = min(3.0, duration)
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-ss", f"{max(0.0, duration - window):.3f}", "-i", str(path),
           "-map", "0:a:0", "-t", f"{window:.3f}", "-f", "s16le", "-ac", "1", "-ar", "8000", "-"]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        raise PermanentError(f"{path}: decoding the end of the file timed out") from None
    decoded = len(out.stdout) / (2 * 8000)
    if decoded < min(0.25, window / 2):
        raise PermanentError(
            f"{path}: truncated or corrupt: the header says {duration:.1f} s but the end of the audio "
            "cannot be decoded (an incomplete download or copy?)")
