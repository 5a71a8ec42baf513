"""The JSON API and the single-page UI, as one Starlette app.

Rules this module keeps (see DESIGN.md, "Search"):

- The UI uses only the API. Pages (``/`` and deep links ``/m/<id>?t=…``) are the same static
  ``index.html``; the JavaScript routes.
- Media are served **by id only**: ``id`` (hex, validated before any lookup) → the state
  database's live paths → the first one that lies under an indexed root and exists. A path never
  comes from the request.
- Bad parameters give a 4xx with a JSON body ``{"error": "...", "status": N}``, never a 500.
- With a token, every route needs it but the page, its static files and ``/api/login``
  (``Authorization: Bearer``, ``?token=`` — for media element URLs — or the HttpOnly cookie the
  UI gets from ``POST /api/login`` or a page opened with ``?token=``); wrong tokens are
  throttled per address (``throttle.py``). Without a token only loopback ``Host`` headers are
  answered, so a web page elsewhere cannot read the API through DNS rebinding.
- Every response carries a Content-Security-Policy without inline scripts, ``nosniff``,
  ``no-referrer`` and ``frame-ancestors 'none'``.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import math
import mimetypes
import os
import re
import shutil
import sqlite3
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qs, quote, urlencode

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request, cookie_parser
from starlette.responses import (FileResponse, JSONResponse, RedirectResponse, Response,
                                 StreamingResponse)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..backends import FatalError, is_local
from ..dberrors import database_error
from ..export import FORMATS, MEDIA_TYPES, clock, render
from ..hits import path_prefix, safe_snippet, search_json  # noqa: F401 (safe_snippet re-exported)
from ..models import Media, SearchQuery
from ..plugins import load_plugins
from ..safety import add_secret
from ..paths import is_under
from ..textsearch import parse_query
from .throttle import FILENAME as THROTTLE_FILE, AuthThrottle

STATIC_DIR = Path(__file__).parent / "static"
COOKIE = "mediaindex_token"
MEDIA_ID = re.compile(r"[0-9a-f]{8,64}")
KINDS = ("speech", "singing", "music")
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_QUERY = 500
STATUS_FAILED_DEFAULT = 100  # failed files listed by /api/status unless asked (files.failed counts them all)
MAX_FAILED_LIMIT = 1000
CLIP_MAX_SIDE = 60.0  # seconds before / after the hit
CLIP_DEFAULT_BEFORE = 5.0
CLIP_DEFAULT_AFTER = 10.0
CLIP_TIMEOUT = 120.0
CLIP_CONCURRENCY = 2
CLIP_WAIT = 30.0  # seconds a clip request waits for a free slot before a 503
CHUNK = 256 * 1024
FACET_TTL = 10.0  # seconds a facet answer is reused
FACET_TTL_ALL = 30.0  # ... for the empty query (the whole index)
FACET_CACHE_SIZE = 512
SEARCH_THREADS = int(os.environ.get("MEDIAINDEX_WEB_THREADS", "4"))
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "media-src 'self'; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]

# Containers Python's mimetypes does not know (or guesses badly for media players).
_EXTRA_TYPES = {
    ".m4a": "audio/mp4", ".m4b": "audio/mp4", ".aac": "audio/aac", ".mp3": "audio/mpeg",
    ".ogg": "audio/ogg", ".oga": "audio/ogg", ".opus": "audio/ogg", ".flac": "audio/flac",
    ".wav": "audio/wav", ".weba": "audio/webm", ".wma": "audio/x-ms-wma", ".aiff": "audio/aiff",
    ".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime", ".mkv": "video/x-matroska",
    ".webm": "video/webm", ".avi": "video/x-msvideo", ".ts": "video/mp2t", ".ogv": "video/ogg",
}


class ApiError(Exception):
    """A client error: answered as JSON with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


# ---- parameters ----------------------------------------------------------------------------


def _int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number between {lo} and {hi}, not {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _float_param(request: Request, name: str, default: float | None, lo: float, hi: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ApiError(400, f"{name} is required (seconds)")
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name} must be a number of seconds, not {raw[:40]!r}") from None
    if not math.isfinite(value):
        raise ApiError(400, f"{name} must be a finite number of seconds")
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo:g} and {hi:g} seconds, not {value:g}")
    return value


_FACET_VALUE = re.compile(r"[\w.\-]{1,40}")


def _facet_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not _FACET_VALUE.fullmatch(raw):
        raise ApiError(400, f"{name} must be a short code (letters, digits, '-', '_'), not {raw[:40]!r}")
    return raw


def search_query(request: Request) -> SearchQuery:
    """The SearchQuery for /api/search and /api/facets, validated."""
    q = request.query_params.get("q", "")
    if len(q) > MAX_QUERY:
        raise ApiError(400, f"q is too long ({len(q)} characters; at most {MAX_QUERY})")
    kind = _facet_param(request, "kind")
    if kind is not None and kind not in KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    path = request.query_params.get("path") or None
    if path is not None:
        if "\x00" in path or len(path) > 4096 or not (os.path.isabs(path) or not is_local(path)):
            raise ApiError(400, "path must be an absolute folder path or a storage URI (a prefix of the media paths)")
        path = path_prefix(path)
    return SearchQuery(
        q=q,
        limit=_int_param(request, "limit", 20, 0, MAX_LIMIT),
        offset=_int_param(request, "offset", 0, 0, MAX_OFFSET),
        language=_facet_param(request, "lang"),
        emotion=_facet_param(request, "emotion"),
        kind=kind,
        path_prefix=path,
    )


def valid_media_id(media_id: str) -> str:
    if not MEDIA_ID.fullmatch(media_id):
        raise ApiError(404, "no such media (a media id is a hex string)")
    return media_id


def _under(path: str, roots: list[str]) -> bool:
    return any(is_under(path, r) for r in roots)


def _content_type(path: str, has_video: bool) -> str:
    """An audio/ or video/ type for the player; anything else (a media file named .xhtml or
    .svg, which the scanner probes too) is sent as opaque bytes, never as a document the
    browser would run as a page of this origin."""
    ext = os.path.splitext(path)[1].lower()
    ctype = _EXTRA_TYPES.get(ext) or mimetypes.guess_type(path)[0] or "application/octet-stream"
    if not ctype.startswith(("audio/", "video/")):
        return "application/octet-stream"
    if not has_video and ctype.startswith("video/") and ext in (".webm", ".mp4", ".ogv", ".mkv"):
        ctype = {"video/webm": "audio/webm", "video/mp4": "audio/mp4", "video/ogg": "audio/ogg"}.get(ctype, ctype)
    return ctype


def _attachment(filename: str) -> str:
    """A Content-Disposition value: an ASCII fallback plus the UTF-8 name (RFC 6266)."""
    ascii_name = re.sub(r'[^A-Za-z0-9._ -]+', "_", filename).strip() or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _file_stem(media: Media) -> str:
    stem = re.sub(r'[\x00-\x1f/\\:*?"<>|]+', "_", media.title).strip(" ._") or media.id
    return stem[:100]


# ---- byte ranges ---------------------------------------------------------------------------


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


def _read_file(path: str, start: int, length: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        f.seek(start)
        left = length
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                break
            left -= len(block)
            yield block


# ---- the app -------------------------------------------------------------------------------


def _throttle_path(pipeline) -> Path | None:
    data_dir = getattr(getattr(pipeline, "config", None), "data_dir", None)
    return Path(data_dir) / THROTTLE_FILE if data_dir else None


class WebApp:
    """The endpoints, bound to one pipeline (its state database and index)."""

    def __init__(self, pipeline, token: str | None = None):
        self.pipeline = pipeline
        self.token = token
        # shared with the Guard (wrong tokens at login and in page links count too) and, through a
        # file in the data dir, with the other worker processes of this server
        self.throttle = AuthThrottle(_throttle_path(pipeline) if token else None)
        self._clip_slots: anyio.CapacityLimiter | None = None  # made inside the event loop
        # Facet counts are exact and cost a scan of every matching document (about a second for
        # the empty query over 700k segments): answers are reused for a few seconds.
        self._facet_cache: dict[tuple, tuple[float, dict]] = {}
        self._limiter: anyio.CapacityLimiter | None = None  # made inside the event loop

    @property
    def state(self):
        return self.pipeline.state

    @property
    def index(self):
        return self.pipeline.index

    # -- helpers --

    def _media(self, media_id: str) -> Media:
        media = self.state.get_media(valid_media_id(media_id))
        if media is None:
            raise ApiError(404, f"no media with id {media_id} (unknown, or none of its files is left)")
        return media

    def _roots(self) -> list[str]:
        return [os.path.normpath(r) for r in self.state.roots()]

    def playable_path(self, media: Media) -> str | None:
        """The first live path of the media that lies under an indexed root, is a file and is
        still the indexed content (same size).

        Under a root means both the recorded path and the file it resolves to: a symbolic link
        inside a root that points elsewhere (or a file swapped for one after indexing) is not
        served, so no request can read a file outside the indexed folders. A file whose size
        changed since indexing is no longer what the id names (its transcript and times are
        stale): it is not served until it is indexed again.
        """
        roots = self._roots()
        real_roots = [os.path.realpath(r) for r in roots]
        for p in media.paths:
            if "://" in p:
                continue  # remote storage: not served by this UI
            norm = os.path.normpath(p)
            if not _under(norm, roots):
                continue
            real = os.path.realpath(norm)
            if not (_under(real, real_roots) or _under(real, roots)):
                continue
            try:
                st = os.stat(real)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and (not media.size or st.st_size == media.size):
                return real
        return None

    def _transcript(self, media: Media):
        transcript = self.state.get_transcript(media.id)
        if transcript is None:
            raise ApiError(404, f"media {media.id} has no transcript yet (status: {media.status})")
        return transcript

    async def run(self, fn, *args):
        """Run blocking work (SQLite, files) in a worker thread, at most SEARCH_THREADS at once.

        Searches are partly Python (holding the GIL): with many at once in many threads they
        slow each other down (GIL convoy); a short FIFO queue in front keeps the tail latency low.
        """
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(SEARCH_THREADS)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    # -- endpoints --

    async def search(self, request: Request) -> Response:
        query = search_query(request)
        result = await self.run(self.index.search, query)
        return JSONResponse(search_json(result, query))

    async def facets(self, request: Request) -> Response:
        query = search_query(request)
        # keyed on the parsed query: "robot" (a prefix) and "robot " (the whole word) differ
        terms = tuple((tuple(t.tokens), t.phrase, t.prefix, t.cjk) for t in parse_query(query.q).terms)
        key = (terms, query.language, query.emotion, query.kind, query.path_prefix)
        now = time.monotonic()
        cached = self._facet_cache.get(key)
        if cached is not None and now - cached[0] < (FACET_TTL_ALL if not terms else FACET_TTL):
            body = cached[1]
        else:
            counts = await self.run(self.index.facets, query)
            body = {"query": query.q, "language": counts.language, "emotion": counts.emotion,
                    "kind": counts.kind, "folder": counts.folder}
            if len(self._facet_cache) >= FACET_CACHE_SIZE:
                self._facet_cache.clear()
            self._facet_cache[key] = (now, body)
        return JSONResponse(body, headers={"cache-control": "private, max-age=5"})

    def _media_json(self, media_id: str) -> dict[str, Any]:
        media = self._media(media_id)
        transcript = self.state.get_transcript(media.id)
        base = f"/api/media/{media.id}"
        out: dict[str, Any] = {
            "id": media.id, "title": media.title, "path": media.path, "paths": media.paths,
            "folder": media.folder, "size": media.size, "mtime": media.mtime, "duration": media.duration,
            "container": media.container, "has_video": media.has_video, "channels": media.channels,
            "tags": media.tags, "status": media.status, "error": media.error, "engine": media.engine,
            "language": media.language, "cost": media.cost,
            "playable": self.playable_path(media) is not None,
            "stream_url": f"{base}/stream", "captions_url": f"{base}/captions.vtt",
            "clip_url": f"{base}/clip", "exports": {fmt: f"{base}/export.{fmt}" for fmt in FORMATS},
            "transcript": None, "segments": [],
        }
        if transcript is not None:
            out["transcript"] = {"engine": transcript.engine, "model": transcript.model,
                                 "language": transcript.language}
            out["segments"] = [{
                "index": s.index, "start": s.start, "end": s.end, "text": s.text, "language": s.language,
                "emotion": s.emotion, "kind": s.kind, "channel": s.channel, "source": s.source,
                "words": [{"text": w.text, "start": w.start, "end": w.end, "interpolated": w.interpolated}
                          for w in s.words],
            } for s in transcript.segments]
        return out

    async def media(self, request: Request) -> Response:
        return JSONResponse(await self.run(self._media_json, request.path_params["media_id"]))

    def _stream_target(self, media_id: str) -> tuple[Media, str, os.stat_result]:
        media = self._media(media_id)
        path = self.playable_path(media)
        if path is None:
            raise ApiError(404, f"media {media.id}: its file is offline, changed since indexing, or outside "
                                "the indexed folders")
        return media, path, os.stat(path)

    async def stream(self, request: Request) -> Response:
        media, path, st = await self.run(self._stream_target, request.path_params["media_id"])
        size = st.st_size
        etag = f'"{media.id}-{size:x}-{int(st.st_mtime):x}"'
        headers = {
            "accept-ranges": "bytes", "etag": etag, "cache-control": "private, max-age=3600",
            "content-type": _content_type(path, media.has_video),
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
        return StreamingResponse(_read_file(path, start, length), status_code=status, headers=headers)

    async def captions(self, request: Request) -> Response:
        def work():
            media = self._media(request.path_params["media_id"])
            return render("vtt", media, self._transcript(media))
        body = await self.run(work)
        return Response(body, media_type="text/vtt; charset=utf-8", headers={"cache-control": "no-cache"})

    async def export(self, request: Request) -> Response:
        fmt = request.path_params["fmt"]
        if fmt not in FORMATS:
            raise ApiError(404, f"unknown export format {fmt[:20]!r}; choose from {', '.join(FORMATS)}")

        def work():
            media = self._media(request.path_params["media_id"])
            return media, render(fmt, media, self._transcript(media))
        media, body = await self.run(work)
        ctype = MEDIA_TYPES[fmt] + ("; charset=utf-8" if fmt != "json" else "")
        return Response(body, media_type=ctype,
                        headers={"content-disposition": _attachment(f"{_file_stem(media)}.{fmt}")})

    async def clip(self, request: Request) -> Response:
        media, path, _ = await self.run(self._stream_target, request.path_params["media_id"])
        limit = media.duration if media.duration and media.duration > 0 else 48 * 3600.0
        t = _float_param(request, "t", None, 0.0, limit)
        before = _float_param(request, "before", CLIP_DEFAULT_BEFORE, 0.0, CLIP_MAX_SIDE)
        after = _float_param(request, "after", CLIP_DEFAULT_AFTER, 0.0, CLIP_MAX_SIDE)
        start = max(0.0, t - before)
        end = min(limit, t + after)
        if end - start < 0.1:
            raise ApiError(400, "the clip would be empty: give before/after (seconds) around t")
        if shutil.which("ffmpeg") is None:
            raise ApiError(503, "clips need ffmpeg on the server's PATH")
        # Wait for a slot here, in the event loop: waiting in worker threads would use up the
        # thread pool that streams media, and a burst of clip requests would stall every player.
        if self._clip_slots is None:
            self._clip_slots = anyio.CapacityLimiter(CLIP_CONCURRENCY)
        got_slot = False
        with anyio.move_on_after(CLIP_WAIT):
            await self._clip_slots.acquire()
            got_slot = True
        if not got_slot:
            raise ApiError(503, "too many clips being cut at once; try again in a moment", {"retry-after": "5"})
        try:
            # not self.run: a cut may take seconds and must not hold up searches
            out_dir, out_file, ext = await anyio.to_thread.run_sync(self._cut, media, path, start, end - start)
        finally:
            self._clip_slots.release()
        name = f"{_file_stem(media)} {clock(start).replace(':', '-')}.{ext}"
        return FileResponse(out_file, media_type="video/mp4" if ext == "mp4" else "audio/mpeg",
                            headers={"content-disposition": _attachment(name)},
                            background=BackgroundTask(shutil.rmtree, out_dir, True))

    def _cut(self, media: Media, path: str, start: float, duration: float) -> tuple[str, str, str]:
        ffmpeg = shutil.which("ffmpeg")
        if ffmpeg is None:
            raise ApiError(503, "clips need ffmpeg on the server's PATH")
        out_dir = tempfile.mkdtemp(prefix="mediaindex-clip-")
        try:
            ext = "mp4" if media.has_video else "mp3"
            out = os.path.join(out_dir, f"clip.{ext}")
            cmd = [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-ss", f"{start:.3f}", "-i", path,
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
                raise ApiError(500, f"ffmpeg could not cut this media: {msg[0][:300]}")
            return out_dir, out, ext
        except BaseException:
            shutil.rmtree(out_dir, ignore_errors=True)
            raise

    def _status(self, failed_limit: int, failed_offset: int) -> dict[str, Any]:
        summary = self.state.summary(failed_limit=failed_limit, failed_offset=failed_offset)
        summary["failed_limit"], summary["failed_offset"] = failed_limit, failed_offset
        summary["jobs"] = self.state.jobs.counts()
        summary["version"] = __version__
        summary["index"] = getattr(self.index, "name", "")
        summary["auth"] = self.token is not None
        return summary

    async def status(self, request: Request) -> Response:
        limit = _int_param(request, "failed_limit", STATUS_FAILED_DEFAULT, 0, MAX_FAILED_LIMIT)
        offset = _int_param(request, "failed_offset", 0, 0, 10**9)
        return JSONResponse(await self.run(self._status, limit, offset), headers={"cache-control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        from .openapi import openapi_spec
        return JSONResponse(openapi_spec(__version__))

    async def login(self, request: Request) -> Response:
        token = await _login_token(request)
        if self.token is None:
            return Response(status_code=204)
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            self.throttle.failed(_client(request.scope))
            raise ApiError(401, "wrong token")
        self.throttle.succeeded(_client(request.scope))
        response = Response(status_code=204)
        _set_cookie(response, self.token)
        return response

    async def page(self, request: Request) -> Response:
        if self.token is not None and "token" in request.query_params:
            return self._page_login(request)
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8",
                            headers={"cache-control": "no-cache"})

    def _page_login(self, request: Request) -> Response:
        """A link with ?token=: remember it in a cookie and drop it from the address bar.

        The answer is the same whether the token is right or not (a redirect that sets the
        cookie derived from the token given; a cookie anyone could derive), so a page link is no
        faster oracle than /api/login; a wrong one counts as a wrong token like there. A visitor
        already logged in keeps their cookie.
        """
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        url = request.url.path + (f"?{urlencode(params)}" if params else "")
        response = RedirectResponse(url, status_code=303)
        given = request.query_params["token"]
        logged_in = _login_cookie(dict(request.scope["headers"])) == cookie_value(self.token)
        right = hmac.compare_digest(given.encode(), self.token.encode())
        client = _client(request.scope)
        if logged_in:
            given = self.token
        elif right:
            self.throttle.succeeded(client)
        else:
            self.throttle.failed(client)
            self.throttle.note_bad_cookie(client, cookie_value(given))  # its cookie is not a second guess
        _set_cookie(response, given)
        return response


LOGIN_BODY_MAX = 4096
LOGIN_BODY_TIMEOUT = 10.0  # seconds: anyone may call /api/login; a slow body must not hold a connection


async def _login_token(request: Request) -> str:
    """The token sent to /api/login: JSON ``{"token": ...}`` or a form field ``token=...``."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in ("application/json", "application/x-www-form-urlencoded"):
        raise ApiError(415, "send {\"token\": \"...\"} as JSON or token=... as a form "
                            "(application/x-www-form-urlencoded)")
    body = b""
    with anyio.move_on_after(LOGIN_BODY_TIMEOUT) as scope:
        async for chunk in request.stream():
            body += chunk
            if len(body) > LOGIN_BODY_MAX:
                raise ApiError(413, f"the login body is too large (at most {LOGIN_BODY_MAX} bytes)")
    if scope.cancelled_caught:
        raise ApiError(408, "the login body did not arrive in time")
    token = None
    if ctype == "application/json":
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, "send {\"token\": \"...\"} as JSON") from None
        token = data.get("token") if isinstance(data, dict) else None
    else:
        token = (parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True).get("token") or [None])[0]
    if not isinstance(token, str) or not token:
        raise ApiError(400, "token is required")
    return token


def cookie_value(token: str) -> str:
    """What the login cookie holds: a key derived from the token (hex), not the token itself, so
    any token (spaces, quotes, non-ASCII) makes a valid cookie, and the cookie jar never holds
    the token that the API and media URLs accept."""
    return hmac.new(token.encode(), b"mediaindex web login cookie", "sha256").hexdigest()


def _set_cookie(response: Response, token: str) -> None:
    response.set_cookie(COOKIE, cookie_value(token), httponly=True, samesite="strict", path="/",
                        max_age=30 * 24 * 3600)


def is_loopback(host: str) -> bool:
    """localhost, or any loopback address (127.0.0.2 and the like: the server may be bound to
    any of them). An address, unlike other names, cannot be re-pointed by DNS."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# A Host header: a name or an IPv4 address, or an IPv6 address in brackets; an optional port.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-]*)(?::[0-9]{1,5})?")


def host_name(header: str) -> str | None:
    """The name in a Host header, lower case, or None when it is not a well-formed Host."""
    m = _HOST.fullmatch(header)
    return m.group(1).lower() if m else None


def _client(scope) -> str:
    return (scope.get("client") or ("?", 0))[0]


def is_public(path: str) -> bool:
    """Answered without the token: the page (it holds no data, and it is where one logs in),
    its static files, and the login call itself."""
    return path == "/" or path == "/api/login" or path.startswith("/static/") or bool(_PAGE.fullmatch(path))


_PAGE = re.compile(r"/m/[^/]+")


def _login_cookie(headers: dict[bytes, bytes]) -> str | None:
    cookie = headers.get(b"cookie", b"")
    if COOKIE.encode() not in cookie:
        return None
    # Starlette's lenient parser: cookies that other apps on this host name set (they are
    # shared across ports) may be malformed; http.cookies stops at the first one.
    return cookie_parser(cookie.decode("latin-1")).get(COOKIE)


class Guard:
    """Pure ASGI middleware: security headers on every response; the token (on every route but
    the page, its static files and the login) or, without a token, a loopback Host."""

    def __init__(self, app, token: str | None, allowed_hosts: set[str] | None, throttle: AuthThrottle | None = None):
        self.app = app
        self.token = token.encode() if token else None
        self.cookie = cookie_value(token).encode() if token else None
        self.allowed_hosts = allowed_hosts
        self.throttle = throttle or AuthThrottle()

    def _credentials(self, scope) -> tuple[list[bytes], str | None]:
        """(tokens from the Authorization header and ?token=, the login cookie's value)."""
        headers = dict(scope.get("headers") or [])
        candidates = []
        auth = headers.get(b"authorization", b"")
        if auth[:7].lower() == b"bearer ":
            candidates.append(auth[7:].strip())
        qs = scope.get("query_string", b"")
        if b"token=" in qs:
            candidates += [v.encode() for v in parse_qs(qs.decode("latin-1")).get("token", [])]
        return candidates, _login_cookie(headers)

    def _check(self, scope) -> tuple[int, int | None]:
        """(200: let it through, 401: no or a wrong credential, 429: blocked; Retry-After)."""
        candidates, cookie = self._credentials(scope)
        if not candidates and cookie is None:
            return 401, None  # nothing presented: not a guess
        client = _client(scope)
        level = self.throttle.level(client)
        wait = self.throttle.retry_after(client, level)
        if wait is not None:  # before any comparison: a 429 says nothing about the token
            return 429, wait
        if any(hmac.compare_digest(c, self.token) for c in candidates) or (
                cookie is not None and hmac.compare_digest(cookie.encode("latin-1", "replace"), self.cookie)):
            if level > 0:
                self.throttle.succeeded(client)
            return 200, None
        if candidates:
            self.throttle.failed(client)
        else:
            self.throttle.failed_cookie(client, cookie)
        return 401, None

    def _host_ok(self, scope) -> bool:
        if self.allowed_hosts is None:
            return True
        host = host_name(dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1"))
        return host is not None and (host in self.allowed_hosts or is_loopback(host))

    def _blocked(self, scope) -> int | None:
        """Retry-After for a public route that carries a token (login, a page link), else None."""
        path = scope.get("path", "")
        if path == "/api/login" or b"token=" in scope.get("query_string", b""):
            return self.throttle.retry_after(_client(scope))
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message = dict(message)
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in SECURITY_HEADERS if k not in names]
            await send(message)

        if not self._host_ok(scope):
            resp = error_response(421, "this server only answers requests to a loopback host name "
                                       "(127.0.0.1, localhost, ::1); start it with --token to serve other names")
            return await resp(scope, receive, send_with_headers)
        if self.token is not None:
            if is_public(scope.get("path", "")):
                status, wait = (429, w) if (w := self._blocked(scope)) is not None else (200, None)
            else:
                status, wait = self._check(scope)
            if status == 429:
                resp = error_response(429, f"too many wrong tokens from this address; try again in {wait} s",
                                      {"retry-after": str(wait)})
                return await resp(scope, receive, send_with_headers)
            if status == 401:
                resp = error_response(401, "this server needs a token: send 'Authorization: Bearer <token>', "
                                           "add ?token=<token>, or log in from the web page",
                                      {"www-authenticate": 'Bearer realm="mediaindex"'})
                return await resp(scope, receive, send_with_headers)
        await self.app(scope, receive, send_with_headers)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.headers)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    path = request.url.path
    if path == "/api" or path.startswith("/api/") or exc.status_code != 404:
        message = exc.detail if exc.status_code != 404 else "no such endpoint or media"
        return error_response(exc.status_code, str(message), getattr(exc, "headers", None))
    return Response("Not found\n", status_code=404, media_type="text/plain; charset=utf-8")


async def _server_error(request: Request, exc: Exception) -> Response:
    return error_response(500, f"internal error: {type(exc).__name__}")


async def _unavailable(request: Request, exc: Exception) -> Response:
    """A damaged index (the next `index` or `watch` rebuilds it), a damaged state database, a full
    disk: 503 with what to do, not a 500."""
    config = request.app.state.web.pipeline.config
    fatal = exc if isinstance(exc, FatalError) else database_error(exc, config.state_path)
    if fatal is None:
        return await _server_error(request, exc)
    return error_response(503, config.redact(str(fatal)))


def create_app(pipeline, token: str | None = None):
    """The ASGI app for this pipeline.

    ``token``: when set, every ``/api`` call needs it. When not set, only requests whose Host is
    a loopback name or address are answered (no DNS rebinding).
    """
    add_secret(token)  # never in a log line (``?token=`` in an access log) or a stored error
    web = WebApp(pipeline, token)
    mid = "/api/media/{media_id}"
    routes = [
        Route("/", web.page, methods=["GET"]),
        Route("/m/{media_id}", web.page, methods=["GET"]),
        Route("/api/search", web.search, methods=["GET"]),
        Route("/api/facets", web.facets, methods=["GET"]),
        Route("/api/status", web.status, methods=["GET"]),
        Route("/api/openapi.json", web.openapi, methods=["GET"]),
        Route("/api/login", web.login, methods=["POST"]),
        Route(mid, web.media, methods=["GET"]),
        Route(mid + "/stream", web.stream, methods=["GET", "HEAD"]),
        Route(mid + "/captions.vtt", web.captions, methods=["GET"]),
        Route(mid + "/export.{fmt}", web.export, methods=["GET"]),
        Route(mid + "/clip", web.clip, methods=["GET"]),
    ]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    # plugin routes sit behind the same Guard (token, Host check) as the built-in ones, wherever
    # they are: only the built-in page, /static and /api/login are open (is_public)
    load_plugins().hook.register_routes(register=routes.append, config=getattr(pipeline, "config", None))
    app = Starlette(routes=routes, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, FatalError: _unavailable, sqlite3.Error: _unavailable,
        Exception: _server_error})
    app.state.web = web
    hosts = None if token else LOOPBACK_HOSTS
    return Guard(app, token, hosts, web.throttle)


def app_from_env():
    """The uvicorn factory for ``serve --workers N``: each worker process opens its own pipeline.

    ``run_server`` passes the data dir, index and token to its workers in the environment.
    """
    from ..config import Config
    from ..pipeline import Pipeline

    pipeline = Pipeline(Config.load(os.environ.get("MEDIAINDEX_WEB_DATA_DIR") or None),
                        index=os.environ.get("MEDIAINDEX_WEB_INDEX") or None)
    return create_app(pipeline, os.environ.get("MEDIAINDEX_WEB_TOKEN") or None)


def api_routes() -> list[tuple[str, list[str]]]:
    """(path, methods) of every API route: the OpenAPI test checks each is described."""
    out = []

    class _P:  # a stand-in pipeline: routes do not touch it while being listed
        state = index = None
    guard = create_app(_P(), token="x")
    for r in guard.app.routes:
        if isinstance(r, Route) and r.path.startswith("/api/"):
            out.append((r.path, sorted(m for m in (r.methods or ()) if m != "HEAD")))
    return out

