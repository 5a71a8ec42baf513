"""Probe a media file with ffprobe (via ffmpeg-python): duration, streams, channels, tags."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import subprocess
import threading

import ffmpeg

from .backends import PermanentError, TransientError
from .models import ProbeResult
from .paths import MEDIA_EXTENSIONS  # noqa: F401 (re-exported)

TAG_KEYS = ("title", "artist", "album", "album_artist", "date", "genre", "comment", "language")
TAIL_WINDOW = 3.0  # seconds decoded at the end of each file
# Below this many bits per second of file, a duration is checked by decoding: Opus's lowest
# setting is 6 kbit/s, MP3's 8, AMR's 4.75; only silence, Speex or Codec2 go lower.
MIN_BITRATE = 4000
SAMPLE_RATE = 8000  # for the checks' decodes, as 8-bit mono (lower rates drop a 10 ms clip)
DECODE_TIMEOUT = 120  # seconds, for each of those decodes


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
    _check_length(path, duration, size)
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
    if duration > TAIL_WINDOW:
        decoded = _decoded_seconds(path, start=duration - TAIL_WINDOW, limit=TAIL_WINDOW)
        enough = 0.25
    else:  # short media is decoded whole (no seek: seeking to 0 in a one-frame FLAC yields nothing)
        decoded = _decoded_seconds(path, limit=2 * TAIL_WINDOW)
        enough = 1 / SAMPLE_RATE  # any audio at all: a valid 10 ms clip is short, not corrupt
    if decoded < enough:
        raise PermanentError(
            f"{path}: truncated or corrupt: the header says {duration:.1f} s but the end of the audio "
            "cannot be decoded (an incomplete download or copy?)")


def _check_length(path: Path, duration: float, size: int) -> None:
    """Cross-check the header's duration against the file's size, and against a decode when
    the two disagree.

    The duration comes from the container (an Ogg file's last granule position, an MP4's
    header), so one forged field can make a 12 s file claim 12,000 s; the tail check above
    still passes, because the last page decodes at the forged time. Every engine routes,
    estimates cost and applies its limits on this figure, and a cloud engine that gets a URL
    never decodes it here, so it must hold. Audio below MIN_BITRATE bit/s is implausible for
    any codec in use, so such a file is decoded, up to half its claimed length (cheap: bounded
    by what the file really holds). Too little audio fails the file as corrupt rather than
    correcting the figure: its timestamps disagree with its audio, so seeking in it (a player
    jumping to a hit, an engine cutting chunks by time) goes wrong too.
    """
    if size * 8 / duration >= MIN_BITRATE:
        return
    half = duration / 2
    decoded = _decoded_seconds(path, limit=half)
    if decoded < 0.9 * half:
        raise PermanentError(
            f"{path}: corrupt: the header says {duration:.1f} s but the file holds only {decoded:.1f} s "
            f"of audio ({size} bytes; a damaged or forged header)")


def _decoded_seconds(path: Path, *, limit: float, start: float | None = None) -> float:
    """Seconds of audio ffmpeg decodes from the first audio stream (at most ``limit``, from ``start``).

    Samples are counted as they stream past (8 kB per second of audio, never all in memory): the
    count is the measure, not the timestamps a forged file lies about (those can only make
    ``limit`` cut it shorter).
    """
    cmd = ["ffmpeg", "-nostdin", "-v", "error"] + (["-ss", f"{start:.3f}"] if start is not None else [])
    cmd += ["-i", str(path), "-map", "0:a:0", "-t", f"{limit:.3f}"]
    cmd += ["-f", "u8", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError as e:
        raise TransientError(f"could not start ffmpeg for {path}: {e}") from None
    timed_out = threading.Event()
    timer = threading.Timer(DECODE_TIMEOUT, lambda: (timed_out.set(), proc.kill()))
    timer.start()
    count = 0
    try:
        while chunk := proc.stdout.read(1 << 16):  # type: ignore[union-attr]
            count += len(chunk)
    finally:
        timer.cancel()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.wait()
    if timed_out.is_set():
        raise PermanentError(f"{path}: decoding it to check its length timed out ({DECODE_TIMEOUT} s)")
    return count / SAMPLE_RATE
