"""Serving media files by id: which file (under an indexed root, unchanged), its type, byte
ranges, downloads' names, and clips cut with ffmpeg."""
from __future__ import annotations

import mimetypes
import os
import re
import shutil
import stat
import subprocess
import tempfile
from typing import Callable, Iterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..models import Media
from ..paths import is_under
from .params import ApiError, error_response

CHUNK = 256 * 1024
CLIP_MAX_SIDE = 60.0  # seconds before / after the hit
CLIP_DEFAULT_BEFORE = 5.0
CLIP_DEFAULT_AFTER = 10.0
CLIP_TIMEOUT = 120.0

# Containers Python's mimetypes does not know (or guesses badly for media players).
EXTRA_TYPES = {
    ".m4a": "audio/mp4", ".m4b": "audio/mp4", ".aac": "audio/aac", ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg", ".flac": "audio/flac",
    ".wav": "audio/wav", ".weba": "audio/webm", ".wma": "audio/x-ms-wma", ".aiff": "audio/aiff",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".avi": "video/x-msvideo", ".ts": "video/mp2t", ".ogv": "video/ogg",
}



def under_any(path: str, roots: list[str]) -> bool:
    return any(is_under(path, r) for r in roots)


def content_type(path: str, has_video: bool) -> str:
    """An audio/ or video/ type for the player; anything else (a media file named .xhtml or
    .svg, which the scanner probes too) is sent as opaque bytes, never as a document the
    browser would run as a page of this origin."""
    ext = os.path.splitext(path)[1].lower()
    ctype = EXTRA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    if not ctype.startswith(("audio/", "video/")):
        return "application/octet-stream"
    if not has_video and ctype.startswith("video/") and ext in (".webm", ".mp4", ".ogv", ".mkv"):
        ctype = {"video/webm": "audio/webm", "video/mp4": "audio/mp4", "video/ogg": "audio/ogg"}.get(ctype, ctype)
    return ctype


def attachment(filename: str) -> str:
    """A Content-Disposition value: an ASCII fallback plus the UTF-8 name (RFC 6266)."""
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]+', "_", filename).strip() or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def file_stem(media: Media) -> str:
    stem = re.sub(r'[\x00-\x1f/\\:*?"<>|]+', "_", media.title).strip(" ._") or media.id
    return stem[:100]


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One (first, last) byte range to serve, None to serve the whole file, or Unsatisfiable.

    RFC 9110: a Range header that is not ``bytes=`` or not well formed is ignored (200 with the
    whole file); one whose ranges all start past the end gets 416. Several ranges are answered
    with the whole file (allowed, and no player asks for several).
    """
    if not header:
        return None
    header = header.strip()
    if not header.lower().startswith("bytes="):
        return None
    specs = [s.strip() for s in header[6:].split(",")]
    ranges: list[tuple[int, int]] = []
    for spec in specs:
        m = re.fullmatch(r"(\d*)-(\d*)", spec)
        if not m or (not m.group(1) and not m.group(2)):
            return None  # malformed: ignore the header
        first, last = m.group(1), m.group(2)
        if first:
            a = int(first)
            b = int(last) if last else size - 1
            if last and b < a:
                return None  # invalid: ignore the header
            if a >= size:
                continue  # unsatisfiable
            ranges.append((a, min(b, size - 1)))
        else:
            n = int(last)
            if n == 0 or size == 0:
                continue
            ranges.append((max(0, size - n), size - 1))
    if not ranges:
        raise Unsatisfiable()
    if len(ranges) > 1:
        return None
    return ranges[0]


def read_file(path: str, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                break
            left -= len(block)
            yield block


def playable_path(media: Media, roots: list[str]) -> str | None:
    """The first live path of the media that lies under an indexed root, is a file and is
    still the indexed content (same size).

    Under a root means both the recorded path and the file it resolves to: a symbolic link
    inside a root that points elsewhere (or a file swapped for one after indexing) is not
    served, so no request can read a file outside the indexed folders. A file whose size
    changed since indexing is no longer what the id names (its transcript and times are
    stale): it is not served until it is indexed again.
    """
    real_roots = [os.path.realpath(r) for r in roots]
    for p in media.paths:
        if "://" in p:
            continue  # remote storage: not served by this UI
        norm = os.path.normpath(p)
        if not under_any(norm, roots):
            continue
        real = os.path.realpath(norm)
        if not (under_any(real, real_roots) or under_any(real, roots)):
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and (not media.size or st.st_size == media.size):
            return real
    return None


def stream_response(request: Request, media: Media, path: str, st: os.stat_result,
                    read: Callable[[str, int, int], Iterator[bytes]] = read_file) -> Response:
    """The file, or the byte range asked for (206, 416), with an ETag (304, If-Range).
    ``read(path, start, length)`` yields the bytes (``read_file`` for a local file)."""
    size = st.st_size
    etag = f'"{media.id}-{size:x}-{int(st.st_mtime):x}"'
    headers = {
        "accept-ranges": "bytes", "etag": etag, "cache-control": "private, max-age=3600",
        "content-type": content_type(path, media.has_video),
    }
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={k: v for k, v in headers.items() if k != "content-type"})
    rng_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        rng_header = None  # the client's copy is stale: send the whole file
    try:
        rng = parse_range(rng_header, size)
    except Unsatisfiable:
        return error_response(416, f"range not satisfiable: the file has {size} bytes",
                              {"content-range": f"bytes */{size}", "accept-ranges": "bytes"})
    if rng is None:
        status, start, length = 200, 0, size
    else:
        status, start, length = 206, rng[0], rng[1] - rng[0] + 1
        headers["content-range"] = f"bytes {rng[0]}-{rng[1]}/{size}"
    headers["content-length"] = str(length)
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers=headers)
    return StreamingResponse(read(path, start, length), status_code=status, headers=headers)


_URL = re.compile(r"^https?://", re.I)
_URL_ANYWHERE = re.compile(r"\bhttps?://\S+", re.I)


def cut_clip(media: Media, path: str, start: float, duration: float, name: str | None = None) -> tuple[str, str, str]:
    """Cut ``duration`` seconds from ``start`` with ffmpeg (MP4 with video, else MP3) into a new
    temporary folder: (that folder, the clip, its extension). The caller deletes the folder.

    ``path`` may be an http(s) URL (a presigned one for bucket media): ffmpeg seeks in it with
    Range requests, so only the clip's part is read. ``name`` stands for it in messages."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ApiError(503, "clips need ffmpeg on the server's PATH")
    out_dir = tempfile.mkdtemp(prefix="mediaindex-clip-")
    try:
        ext = "mp4" if media.has_video else "mp3"
        out = os.path.join(out_dir, f"clip.{ext}")
        remote = ["-protocol_whitelist", "http,https,tcp,tls"] if _URL.match(path) else []
        cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", *remote, "-ss", f"{start:.3f}", "-i", path,
               "-t", f"{duration:.3f}", "-map_metadata", "-1"]
        if ext == "mp4":
            cmd += ["-map", "0:v:0?", "-map", "0:a:0?", "-c:v", "libx264", "-preset", "veryfast", "-crf", "26",
                    "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", "-f", "mp4"]
        else:
            cmd += ["-vn", "-map", "0:a:0", "-c:a", "libmp3lame", "-q:a", "4", "-f", "mp3"]
        cmd.append(out)
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=CLIP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ApiError(504, "cutting the clip took too long") from None
        if proc.returncode != 0 or not os.path.exists(out) or os.path.getsize(out) == 0:
            msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            if name is not None:  # a presigned URL is a credential for a while: never shown
                msg = [_URL_ANYWHERE.sub(name, msg[0].replace(path, name))]
            raise ApiError(500, f"ffmpeg could not cut this media: {msg[0][:300]}")
        return out_dir, out, ext
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)
        raise
