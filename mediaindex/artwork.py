"""Cover art: a recording's embedded picture (ID3 ``APIC``, MP4 ``covr``, FLAC pictures, Vorbis
and Opus ``METADATA_BLOCK_PICTURE``) or, for video without one, a frame at 10 % of its length.

Extracted once per media: a media id is a hash of the content, so a changed file is a new media
with its own entry, and the old entry goes when the old media is removed. The pipeline extracts
while it indexes (the file is local then, bucket objects included: a cheap step next to
transcribing); media indexed before this existed get theirs on the first request (one
extraction per id at a time, a per-id lock). A recording without art is remembered too (a
``.none`` marker), so it is never looked at twice.

The cache is ``<data dir>/artwork/<media id>.<jpg|png|gif|webp>``: names come from the media id
(hex, validated), never from a request; pictures larger than ``MAX_BYTES`` are scaled down to
``MAX_SIDE``; the whole folder is kept under ``artwork_cache_mb`` (oldest entries go first, and
are extracted again if asked for).
"""
from __future__ import annotations

import base64
import os
import re
import subprocess
import tempfile
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Callable

from .models import ProbeResult

MAX_SIDE = 480  # pixels: a card or a page header, not a poster
MAX_BYTES = 256 * 1024  # an embedded picture larger than this is scaled down first
CACHE_MB_DEFAULT = 256
FRAME_AT = 0.10  # a video's frame, at this fraction of its duration
FFMPEG_TIMEOUT = 60.0
NONE = ".none"
_ID = re.compile(r"^[0-9a-f]{8,64}$")
# the picture types served, by their first bytes (never by what a tag claims)
_MAGIC = ((b"\xff\xd8\xff", ".jpg"), (b"\x89PNG\r\n\x1a\n", ".png"), (b"GIF87a", ".gif"), (b"GIF89a", ".gif"))
CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".gif": "image/gif", ".webp": "image/webp"}


def picture_type(data: bytes) -> str | None:
    """The extension for these image bytes (``.jpg``, ``.png``, ...), None if not a served type."""
    for magic, ext in _MAGIC:
        if data.startswith(magic):
            return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return None


def embedded_picture(path: str | os.PathLike) -> bytes | None:
    """The front cover (else the first picture) embedded in a media file's tags, or None."""
    import mutagen
    from mutagen.flac import Picture

    try:
        f = mutagen.File(str(path))
    except Exception:  # mutagen raises its own errors, and struct/ValueErrors on damage
        return None
    if f is None:
        return None
    found: list[tuple[int, bytes]] = []  # (picture type: 3 is the front cover, data)
    for pic in getattr(f, "pictures", None) or ():  # FLAC
        found.append((pic.type, pic.data))
    tags = f.tags
    if tags is not None:
        if hasattr(tags, "getall"):  # ID3 (MP3, and AIFF/WAV with an ID3 chunk)
            found += [(getattr(p, "type", 0), p.data) for p in tags.getall("APIC")]
        try:
            covers = tags.get("covr") or ()  # MP4
            blocks = tags.get("metadata_block_picture") or ()  # Vorbis comments (Ogg Vorbis, Opus)
        except (ValueError, TypeError):  # an ID3 frame key that is not a valid name
            covers = blocks = ()
        found += [(3, bytes(c)) for c in covers]
        for b64 in blocks:
            try:
                pic = Picture(base64.b64decode(b64))
            except Exception:
                continue
            found.append((pic.type, pic.data))
    found = [(t, d) for t, d in found if d]
    if not found:
        return None
    found.sort(key=lambda p: p[0] != 3)  # stable: the front cover first, else tag order
    return found[0][1]


def _ffmpeg(args: list[str], data: bytes | None = None) -> bytes | None:
    """ffmpeg's JPEG on stdout (scaled to fit MAX_SIDE), or None when it made none."""
    scale = f"scale='min({MAX_SIDE},iw)':'min({MAX_SIDE},ih)':force_original_aspect_ratio=decrease"
    cmd = ["ffmpeg", "-v", "error", "-nostdin", *args, "-frames:v", "1", "-vf", scale,
           "-f", "image2pipe", "-c:v", "mjpeg", "-q:v", "4", "pipe:1"]
    try:
        out = subprocess.run(cmd, input=data, capture_output=True, timeout=FFMPEG_TIMEOUT,
                             stdin=None if data is not None else subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 and out.stdout.startswith(b"\xff\xd8") else None


def video_frame(path: str | os.PathLike, duration: float | None) -> bytes | None:
    """A JPEG frame at FRAME_AT of the video (its first frame when the length is unknown)."""
    at = max(0.0, (duration or 0.0) * FRAME_AT)
    frame = _ffmpeg(["-ss", f"{at:.3f}", "-i", str(path), "-map", "0:V:0"])
    return frame if frame is not None or at == 0 else _ffmpeg(["-i", str(path), "-map", "0:V:0"])


def extract(path: str | os.PathLike, probe: ProbeResult | None) -> tuple[bytes, str] | None:
    """(image bytes, extension) for a local media file, or None when it has no art."""
    data = embedded_picture(path)
    if data is not None:
        ext = picture_type(data)
        if ext is None or len(data) > MAX_BYTES:  # an odd type, or a poster: a small JPEG of it
            data, ext = _ffmpeg(["-i", "pipe:0"], data), ".jpg"
        if data is not None:
            return data, ext
    if probe is not None and probe.has_video:
        frame = video_frame(path, probe.duration)
        if frame is not None:
            return frame, ".jpg"
    return None


class ArtworkCache:
    """The artwork folder of one data dir: look up, extract once, delete, keep it bounded."""

    def __init__(self, folder: str | os.PathLike, max_bytes: int = CACHE_MB_DEFAULT << 20):
        self.folder = Path(folder)
        self.max_bytes = max_bytes
        self.extractions = 0  # how many times a file was read for its art (tests and the bench read it)
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._size: int | None = None  # bytes in the folder, counted once, then kept up to date

    def _entry(self, media_id: str, suffix: str) -> Path:
        if not _ID.match(media_id):  # a media id is hex: nothing else ever names a file here
            raise ValueError(f"not a media id: {media_id[:80]!r}")
        return self.folder / f"{media_id}{suffix}"

    def lookup(self, media_id: str) -> tuple[Path, str] | bool | None:
        """(file, content type) when cached; False when known to have none; None when unknown."""
        for ext, ctype in CONTENT_TYPES.items():
            path = self._entry(media_id, ext)
            if path.is_file():
                return path, ctype
        return False if self._entry(media_id, NONE).exists() else None

    def _lock(self, media_id: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(media_id, threading.Lock())

    def ensure(self, media_id: str, local: Callable[[], AbstractContextManager],
               probe: ProbeResult | None) -> tuple[Path, str] | None:
        """The cached art of a media, extracted first (once: concurrent callers wait for the one
        extracting) from the file ``local()`` yields when it is not known yet."""
        found = self.lookup(media_id)
        if found is not None:
            return found or None
        with self._lock(media_id):
            found = self.lookup(media_id)  # made while this caller waited
            if found is not None:
                return found or None
            with local() as path:
                with self._guard:
                    self.extractions += 1
                art = extract(path, probe)
            self._store(media_id, art)
            return self.lookup(media_id) or None

    def _store(self, media_id: str, art: tuple[bytes, str] | None) -> None:
        """Write an entry atomically (a reader never sees half a picture)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        data, suffix = art if art is not None else (b"", NONE)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self._entry(media_id, suffix))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._grew(len(data))

    def delete(self, media_id: str) -> None:
        """Forget a media's art (the media was removed)."""
        for suffix in (*CONTENT_TYPES, NONE):
            try:
                self._entry(media_id, suffix).unlink()
            except FileNotFoundError:
                pass

    def _grew(self, n: int) -> None:
        with self._guard:
            if self._size is None:
                self._size = sum(e.stat().st_size for e in os.scandir(self.folder) if e.is_file())
            else:
                self._size += n
            over = self._size > self.max_bytes
        if over:
            self.prune()

    def prune(self) -> None:
        """Delete the oldest entries until the folder is under 90 % of its bound."""
        entries = []
        for e in os.scandir(self.folder):
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, e.path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes * 0.9:
                break
            Path(path).unlink(missing_ok=True)
            total -= size
        with self._guard:
            self._size = total
