"""Audio plumbing for transcribers and enrichers: decode, find silences, cut, re-encode.

Everything runs ffmpeg/ffprobe as subprocesses (no new dependencies); numpy comes with
faster-whisper (through CTranslate2). Paths are handed to ffmpeg as ``file:<absolute path>``, so
names starting with ``-``, containing ``:`` or non-ASCII characters are safe.

Errors follow the core's rules: a file ffmpeg cannot decode raises
:class:`~mediaindex.backends.PermanentError` naming the file; ffmpeg/ffprobe missing (or a file
that vanished) raises :class:`~mediaindex.backends.TransientError`; a full disk or an encoder
missing from this ffmpeg build raises :class:`~mediaindex.backends.FatalError`.

Typical use by an engine with a per-request limit (e.g. ``qwen3-asr-flash``: <= 5 min, <= 10 MB)::

    from mediaindex import audio

    total = audio.duration(path)
    for start, end in audio.split_points(total, audio.silences(path), max_chunk=280.0):
        chunk = audio.extract(path, start, end, tmp / f"{start:.3f}.opus")
        chunk = audio.fit_bytes(chunk, 10_000_000, tmp)   # usually already fits
        ...  # transcribe chunk, add ``start`` to every time it returns
"""
from __future__ import annotations

import collections
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from .backends import FatalError, PermanentError, TransientError

__all__ = ["SAMPLE_RATE", "DEFAULT_BITRATES", "pcm_windows", "quiet_cut", "silences", "split_points",
           "extract", "fit_bytes", "duration"]

SAMPLE_RATE = 16000
BYTES_PER_SAMPLE = 2  # s16le
# Tried from the highest down by fit_bytes (mono 16 kHz speech is intelligible down to 8k in opus).
DEFAULT_BITRATES = ("64k", "48k", "32k", "24k", "16k", "12k", "8k")
# codec -> (muxer, file extension)
_CONTAINERS = {"libopus": ("ogg", ".opus"), "opus": ("ogg", ".opus"), "libmp3lame": ("mp3", ".mp3"),
               "libshine": ("mp3", ".mp3")}


# ---- ffmpeg basics ---------------------------------------------------------------------------


def _exe(tool: str = "ffmpeg") -> str:
    exe = shutil.which(tool)
    if exe is None:
        hint = "install it" if tool == "ffmpeg" else "install ffmpeg"
        raise TransientError(f"{tool} not found: {hint} (Debian/Ubuntu: apt-get install -y ffmpeg)")
    return exe


def _url(path: str | os.PathLike) -> str:
    """``file:`` + absolute path: never read as an option ('-x.mp3') or a protocol ('a:b.mp3')."""
    return "file:" + os.path.abspath(os.fspath(path))


def _tail(text: str, limit: int = 600) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-4:])[-limit:]


def _decode_error(path: Path, detail: str, rc: int | None = None) -> PermanentError:
    detail = detail or (f"exit status {rc}" if rc is not None else "unknown error")
    if "does not contain any stream" in detail or "matches no streams" in detail:
        return PermanentError(f"{path}: no audio stream (nothing to transcribe)")
    return PermanentError(f"{path}: ffmpeg cannot decode it: {detail}")


def _check_exists(path: Path) -> None:
    if not path.exists():
        raise TransientError(f"{path}: file disappeared before it could be read")


def duration(path: str | os.PathLike) -> float:
    """Duration in seconds as ffprobe reports it (the container's, else the audio stream's)."""
    path = Path(path)
    _check_exists(path)
    cmd = [_exe("ffprobe"), "-v", "error", "-select_streams", "a:0", "-show_entries",
           "format=duration:stream=duration", "-of", "json", _url(path)]
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace")
    except OSError as e:
        raise TransientError(f"could not start ffprobe for {path}: {e}") from None
    if out.returncode != 0:
        raise _decode_error(path, _tail(out.stderr), out.returncode)
    info = json.loads(out.stdout or "{}")
    if not info.get("streams"):
        raise PermanentError(f"{path}: no audio stream (nothing to transcribe)")
    for value in ((info.get("format") or {}).get("duration"), info["streams"][0].get("duration")):
        try:
            if value is not None and float(value) > 0:
                return float(value)
        except ValueError:
            pass
    raise PermanentError(f"{path}: no playable audio (duration unknown)")


# ---- PCM windows -----------------------------------------------------------------------------


class _StderrTail(threading.Thread):
    """Drains ffmpeg's stderr (so the pipe never blocks) and keeps its last lines."""

    def __init__(self, stream: Any):
        super().__init__(daemon=True)
        self.stream, self.lines = stream, collections.deque(maxlen=20)

    def run(self) -> None:
        for line in iter(self.stream.readline, b""):
            self.lines.append(line.decode("utf-8", "replace").rstrip())

    def text(self) -> str:
        return " | ".join(l for l in self.lines if l)[-600:]


def _pcm_cmd(path: Path, sample_rate: int) -> list[str]:
    return [_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", _url(path),
            "-vn", "-sn", "-dn", "-map", "0:a:0", "-f", "s16le", "-acodec", "pcm_s16le",
            "-ac", "1", "-ar", str(sample_rate), "-"]


def quiet_cut(audio: np.ndarray, lo: int, hi: int, sample_rate: int = SAMPLE_RATE) -> int:
    """Index of the quietest ~0.4 s in audio[lo:hi] (20 ms frame RMS, the latest of equals)."""
    frame = max(1, sample_rate // 50)  # 20 ms
    tail = audio[lo:hi]
    n = len(tail) // frame
    if n < 3:
        return hi
    energy = (tail[: n * frame].astype(np.float32).reshape(n, frame) ** 2).mean(axis=1)
    k = min(20, n)
    smooth = np.convolve(energy, np.ones(k, dtype=np.float32) / k, mode="valid")
    best = int(np.argmin(smooth[::-1]))  # the latest of equally quiet spots
    best = len(smooth) - 1 - best
    return lo + (best + k // 2) * frame


def pcm_windows(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE, window: float = 300.0,
                cut_quiet: bool = True, mark_last: bool = False) -> Iterator[Any]:
    """Stream-decode the first audio stream as mono float32 PCM in windows of at most ``window`` s.

    Yields ``(offset_seconds, samples)``; the windows are contiguous and together cover the whole
    decoded audio. With ``cut_quiet`` each window ends at the quietest moment of its last 40 %
    (at most 30 s), so words are not split; only one window plus a 10 s read block is in memory.
    With ``mark_last`` it yields ``(offset, samples, is_last)`` instead, and when the audio ends
    exactly at a cut a last, empty window marks the end. ffmpeg is killed when the generator is
    closed early (use ``contextlib.closing``). Undecodable input raises PermanentError.
    """
    path = Path(path)
    sr = int(sample_rate)
    win = int(float(window) * sr)
    if win < sr:
        raise ValueError(f"window must be >= 1 s, not {window!r}")
    cmd = _pcm_cmd(path, sr)
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        raise TransientError(f"could not start ffmpeg for {path}: {e}") from None
    err = _StderrTail(proc.stderr)
    err.start()
    search = min(int(30 * sr), max(int(win * 0.4), sr)) if cut_quiet else 0
    block = sr * 10 * BYTES_PER_SAMPLE  # read 10 s at a time
    pending = np.zeros(0, dtype=np.int16)
    chunks: list[np.ndarray] = []
    have = 0
    offset_samples = 0
    leftover = b""
    try:
        eof = False
        while not eof:
            data = proc.stdout.read(block)  # type: ignore[union-attr]
            if not data:
                eof = True
            else:
                data = leftover + data
                cut = len(data) - len(data) % BYTES_PER_SAMPLE
                leftover = data[cut:]
                arr = np.frombuffer(data[:cut], dtype=np.int16)
                chunks.append(arr)
                have += len(arr)
            if not eof and have < win + search:
                continue
            if chunks:
                pending = np.concatenate([pending, *chunks])
                chunks = []
            # Cut whole windows off the front, each at a quiet moment near its end; at the end
            # of the stream keep cutting until what is left fits in one window.
            while len(pending) > win and (eof or len(pending) >= win + search):
                end = quiet_cut(pending, win - search, win, sr) if search else win
                end = max(sr, min(end, len(pending)))
                samples = pending[:end].astype(np.float32) / 32768.0
                yield (offset_samples / sr, samples, False) if mark_last else (offset_samples / sr, samples)
                offset_samples += end
                pending = pending[end:].copy()
            have = len(pending)
        proc.stdout.close()  # type: ignore[union-attr]
        rc = proc.wait()
        err.join(timeout=5)
        if rc != 0:
            raise _decode_error(path, err.text(), rc)
        if len(pending) == 0 and offset_samples == 0:
            detail = err.text()
            raise PermanentError(f"{path}: ffmpeg decoded no audio (empty or corrupt file)"
                                 + (f": {detail}" if detail else ""))
        if len(pending):
            samples = pending.astype(np.float32) / 32768.0
            yield (offset_samples / sr, samples, True) if mark_last else (offset_samples / sr, samples)
        elif offset_samples and mark_last:
            # The stream ended exactly at a cut: signal the end with an empty last window.
            yield offset_samples / sr, np.zeros(0, dtype=np.float32), True
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for s in (proc.stdout, proc.stderr):
            try:
                s.close()  # type: ignore[union-attr]
            except Exception:
                pass


# ---- silences and chunking -------------------------------------------------------------------

_SIL_START = re.compile(r"silence_start:\s*(-?[0-9.]+(?:e[-+]?\d+)?)", re.I)
_SIL_END = re.compile(r"silence_end:\s*(-?[0-9.]+(?:e[-+]?\d+)?)", re.I)


def silences(path: str | os.PathLike, *, min_silence: float = 0.4,
             noise_db: float = -35) -> list[tuple[float, float]]:
    """``(start, end)`` of every stretch quieter than ``noise_db`` dBFS for at least ``min_silence`` s.

    One full decode by ffmpeg's ``silencedetect`` (first audio stream, all channels quiet); sorted,
    in seconds from the start of the file. A silence running to the end closes at the end.
    """
    path = Path(path)
    _check_exists(path)
    filt = f"silencedetect=noise={float(noise_db):g}dB:d={float(min_silence):g}"
    cmd = [_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "info", "-i", _url(path),
           "-vn", "-sn", "-dn", "-map", "0:a:0", "-af", filt, "-f", "null", "-"]
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as e:
        raise TransientError(f"could not start ffmpeg for {path}: {e}") from None
    text = out.stderr.decode("utf-8", "replace")
    if out.returncode != 0:
        raise _decode_error(path, _tail(text), out.returncode)
    found: list[tuple[float, float]] = []
    start: float | None = None
    for line in text.splitlines():
        m = _SIL_START.search(line)
        if m:
            start = max(0.0, float(m.group(1)))
            continue
        m = _SIL_END.search(line)
        if m and start is not None:
            found.append((round(start, 3), round(float(m.group(1)), 3)))
            start = None
    if start is not None:  # older ffmpeg builds do not close a silence at the end of the stream
        found.append((round(start, 3), round(max(start, duration(path)), 3)))
    return sorted(found)


def split_points(duration: float, silences: Iterable[tuple[float, float]], *,
                 max_chunk: float = 280.0) -> list[tuple[float, float]]:
    """Chunks ``(start, end)`` of at most ``max_chunk`` s covering ``[0, duration]`` exactly.

    Each cut falls in the middle of the last silence that begins before the limit (clamped to the
    limit when that silence runs past it), so no chunk splits speech when a silence exists;
    without one the chunk is cut hard at the limit. Chunks share their boundaries (no gaps, no
    overlaps); add a chunk's start to the times an engine returns for it.
    """
    total = float(duration)
    max_chunk = float(max_chunk)
    if max_chunk <= 0:
        raise ValueError(f"max_chunk must be > 0, not {max_chunk!r}")
    if total <= 0:
        return []
    quiet = sorted((max(0.0, float(a)), min(total, float(b))) for a, b in silences if float(b) > float(a))
    chunks: list[tuple[float, float]] = []
    start = 0.0
    i = 0  # silences before index i ended at or before ``start``
    while total - start > max_chunk:
        limit = start + max_chunk
        while i < len(quiet) and quiet[i][1] <= start:
            i += 1
        cut = None
        j = i
        while j < len(quiet) and quiet[j][0] < limit:
            a, b = quiet[j]
            c = round(min((a + b) / 2, limit), 3)
            if c > start and (cut is None or c > cut):
                cut = c
            j += 1
        if cut is None or cut <= start:
            cut = limit  # no silence in reach: hard cut
        chunks.append((start, cut))
        start = cut
    chunks.append((start, total))
    return chunks


# ---- cutting and re-encoding -----------------------------------------------------------------


def _encode_failed(path: Path, out_path: Path, detail: str, rc: int) -> Exception:
    if "No space left on device" in detail:
        return FatalError(f"{out_path}: disk full while writing: {detail}")
    if "Unknown encoder" in detail or "Encoder not found" in detail:
        return FatalError(f"this ffmpeg lacks the requested encoder: {detail}")
    return _decode_error(path, detail, rc)


def extract(path: str | os.PathLike, start: float, end: float, out_path: str | os.PathLike, *,
            codec: str = "libopus", bitrate: str = "32k", sample_rate: int = SAMPLE_RATE,
            channels: int = 1, channel: int | None = None) -> Path:
    """Cut ``[start, end)`` seconds of the first audio stream and re-encode it to ``out_path``.

    ``channels``: downmixed (or upmixed) to that many; ``channel``: only that one (from 0), mono.

    Sample-accurate (ffmpeg decodes from the preceding keyframe and trims; for VBR MP3 sources
    without an index the seek itself can be approximate). ``codec`` is ``libopus`` (Ogg Opus) or
    ``libmp3lame`` (MP3); other ffmpeg encoders work when ``out_path``'s extension names a
    container for them. Writes to a temporary name first; tags and video are dropped.
    """
    path, out_path = Path(path), Path(out_path)
    start, end = float(start), float(end)
    if start < 0 or end <= start:
        raise ValueError(f"need 0 <= start < end, not start={start!r} end={end!r}")
    _check_exists(path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    muxer = _CONTAINERS.get(codec, (None, None))[0]
    tmp = out_path.with_name(f".{out_path.stem}.part{out_path.suffix}")
    cmd = [_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
           "-ss", f"{start:.6f}", "-i", _url(path), "-t", f"{end - start:.6f}",
           "-map", "0:a:0", "-vn", "-sn", "-dn", "-map_metadata", "-1",
           *(["-af", f"pan=mono|c0=c{int(channel)}"] if channel is not None else ["-ac", str(int(channels))]),
           "-ar", str(int(sample_rate)), "-c:a", codec, "-b:a", str(bitrate)]
    cmd += (["-f", muxer] if muxer else []) + [_url(tmp)]
    try:
        out = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    except OSError as e:
        raise TransientError(f"could not start ffmpeg for {path}: {e}") from None
    try:
        if out.returncode != 0:
            raise _encode_failed(path, out_path, _tail(out.stderr.decode("utf-8", "replace")), out.returncode)
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise PermanentError(f"{path}: ffmpeg wrote no audio for {start:.3f}-{end:.3f} s")
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def _kbps(bitrate: str) -> float:
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kKmM]?)\s*", str(bitrate))
    if not m:
        raise ValueError(f"bad bitrate {bitrate!r} (expected e.g. '32k')")
    return float(m.group(1)) * {"": 0.001, "k": 1.0, "m": 1000.0}[m.group(2).lower()]


def fit_bytes(path: str | os.PathLike, max_bytes: int, out_dir: str | os.PathLike, *,
              codec: str = "libopus", bitrates: Sequence[str] = DEFAULT_BITRATES,
              sample_rate: int = SAMPLE_RATE, channels: int = 1) -> Path:
    """Re-encode the audio (mono 16 kHz by default) at the highest of ``bitrates`` that fits
    ``max_bytes``; return the new file in ``out_dir`` (``<stem>.<bitrate>.opus`` or ``.mp3``).

    Opus is VBR: its size can be well off ``bitrate x duration`` either way, so every bitrate is
    tried from the highest down, except those whose nominal size is over twice the limit (a long
    file is not encoded many times in vain). Failed tries are deleted. Raises PermanentError
    when even the lowest does not fit (split the audio first).
    """
    path, out_dir = Path(path), Path(out_dir)
    max_bytes = int(max_bytes)
    rates = sorted(bitrates, key=_kbps, reverse=True)
    if not rates:
        raise ValueError("no bitrates to try")
    seconds = duration(path)
    ext = _CONTAINERS.get(codec, (None, path.suffix or ".audio"))[1]
    tried: list[str] = []
    smallest: int | None = None
    for br in rates:
        estimate = _kbps(br) * 1000 / 8 * seconds
        if estimate > 2 * max_bytes and br != rates[-1]:
            continue
        out = out_dir / f"{path.stem}.{br}{ext}"
        if out.resolve() == path.resolve():
            out = out_dir / f"{path.stem}.{br}.fit{ext}"
        if estimate > 2 * max_bytes:  # even the lowest is hopeless: say so without encoding
            smallest = int(estimate)
            tried.append(f"{br} (estimated, not encoded)")
            break
        extract(path, 0.0, seconds + 1.0, out, codec=codec, bitrate=br, sample_rate=sample_rate,
                channels=channels)
        size = out.stat().st_size
        if size <= max_bytes:
            return out
        out.unlink(missing_ok=True)
        tried.append(br)
        smallest = size
    raise PermanentError(f"{path}: {seconds:.1f} s of audio does not fit in {max_bytes} bytes even at "
                         f"{rates[-1]} ({codec}: {smallest} bytes; tried {', '.join(tried)}): "
                         "split it into shorter chunks first")


def uncovered(a: float, b: float, covered: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Parts of [a, b] that no interval in ``covered`` (sorted by start) overlaps: the voiced
    stretches between silences, the wordless stretches between segments."""
    out, t = [], a
    for ca, cb in covered:
        if cb <= t or ca >= b:
            continue
        if ca > t:
            out.append((t, ca))
        t = max(t, cb)
    if t < b:
        out.append((t, b))
    return out
