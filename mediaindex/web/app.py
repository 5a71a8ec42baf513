"""The JSON API and the single-page UI, as one Starlette app: the routes.

The rooms beside it: ``security.py`` (token, login, Host check, headers: the Guard),
``params.py`` (request parameters and JSON errors), ``files.py`` (which file, types, ranges,
clips), ``throttle.py`` (wrong tokens), ``connections.py`` (timeouts, cap), ``openapi.py``.
Rules they keep together (see DESIGN.md, "Search"):

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
import os
import shutil
import sqlite3
import stat
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlencode

import anyio
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__
from ..backends import FatalError, TransientError, is_local
from ..dberrors import database_error
from ..export import FORMATS, MEDIA_TYPES, clock, render
from ..hits import MOMENTS, grouped_search, search_json, years
from ..models import Media
from ..paths import is_under
from ..plugins import load_plugins
from ..safety import add_secret, redact
from ..textsearch import parse_query
from .files import (CLIP_DEFAULT_AFTER, CLIP_DEFAULT_BEFORE, CLIP_MAX_SIDE, CLIP_TIMEOUT, attachment, cut_clip,
                    file_stem, playable_path, read_file, stream_response)
from .params import (MAX_FAILED_LIMIT, MAX_MOMENTS, STATUS_FAILED_DEFAULT, STATUS_SPENT_FILES, ApiError,
                     error_response, float_param, group_param, int_param, library_params, search_query,
                     valid_media_id)
from .security import (LOOPBACK_HOSTS, Guard, action_body, client_address, cookie_value, login_cookie, login_token,
                       set_cookie)
from .throttle import FILENAME as THROTTLE_FILE, AuthThrottle

STATIC_DIR = Path(__file__).parent / "static"
CLIP_CONCURRENCY = 2
CLIP_WAIT = 30.0  # seconds a clip request waits for a free slot before a 503
FACET_TTL = 10.0  # seconds a facet answer is reused
FACET_TTL_ALL = 30.0  # ... for the empty query (the whole index)
FACET_CACHE_SIZE = 512
SEARCH_THREADS = int(os.environ.get("MEDIAINDEX_WEB_THREADS", "4"))

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
        """The file to serve for this media, or None (see files.playable_path)."""
        return playable_path(media, self._roots())

    def playable_uri(self, media: Media) -> tuple[str, os.stat_result] | None:
        """Media in a bucket: the first URI under an online indexed root whose object is still
        the indexed content (same size), with its size and mtime; None when there is none."""
        roots = [r for r, status in self.state.roots().items() if "://" in r and status == "online"]
        for uri in media.paths:
            if "://" not in uri or not any(is_under(uri, r) for r in roots):
                continue
            try:
                info = self.pipeline.storage_for(uri).stat(uri)
            except Exception:  # no plugin for it, the bucket unreachable: not playable now
                continue
            if info is not None and (not media.size or info.size == media.size):
                t = int(info.mtime)
                return uri, os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, info.size, t, t, t))
        return None

    def _read_remote(self, uri: str, start: int, length: int) -> Iterator[bytes]:
        """A byte range of a bucket object, read from the service as it is sent (proxied: the
        page never sees a bucket URL, and Range works as for files)."""
        with self.pipeline.storage_for(uri).open_range(uri, start, length) as f:
            left = length
            while left > 0:
                block = f.read(min(1 << 16, left))
                if not block:
                    break
                left -= len(block)
                yield block

    def _clip_url(self, uri: str) -> str:
        """A short-lived presigned URL of a bucket object for ffmpeg (it reads only the clip's
        part, by Range requests; valid for a slot's wait and the cut); never sent or shown."""
        try:
            url = self.pipeline.storage_for(uri).public_url(uri, expires=int(CLIP_TIMEOUT) + 60)
        except Exception as e:  # no plugin for it, no credentials
            raise ApiError(503, f"cannot read this media from its bucket now: {redact(str(e))[:300]}") from None
        if not url:
            raise ApiError(404, "clips of this media are not possible: its storage gives no URL to read it by")
        return url

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
        moments = int_param(request, "moments", MOMENTS, 1, MAX_MOMENTS)
        if group_param(request) == "media":
            return JSONResponse(await self.run(grouped_search, self.index, query, moments))
        result = await self.run(self.index.search, query)
        return JSONResponse(search_json(result, query))

    async def facets(self, request: Request) -> Response:
        query = search_query(request)
        # keyed on the parsed query: "robot" (a prefix) and "robot " (the whole word) differ
        terms = tuple((tuple(t.tokens), t.phrase, t.prefix, t.cjk) for t in parse_query(query.q).terms)
        key = (terms, query.language, query.emotion, query.kind, query.path_prefix, query.source, query.event,
               query.date)
        now = time.monotonic()
        cached = self._facet_cache.get(key)
        if cached is not None and now - cached[0] < (FACET_TTL_ALL if not terms else FACET_TTL):
            body = cached[1]
        else:
            counts = await self.run(self.index.facets, query)
            body = {"query": query.q, **counts, "estimated": bool(getattr(counts, "estimated", False))}
            body["year"] = years(body.get("month") or {})
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
            "playable": self.playable_path(media) is not None or self.playable_uri(media) is not None,
            "stream_url": f"{base}/stream", "captions_url": f"{base}/captions.vtt",
            "clip_url": f"{base}/clip", "exports": {fmt: f"{base}/export.{fmt}" for fmt in FORMATS},
            "transcript": None, "segments": [],
            "failed": [{"path": p, "error": (f.error or "").removeprefix(f"{p}: ")} for p in media.paths
                       if (f := self.state.get_file(p)) is not None and f.status == "failed"],
            "artwork_url": None if self.pipeline.artwork.lookup(media.id) is False else f"{base}/artwork",
        }
        if transcript is not None:
            out["transcript"] = {"engine": transcript.engine, "model": transcript.model,
                                 "language": transcript.language, "route": transcript.options.get("route")}
            out["segments"] = [{
                "index": s.index, "start": s.start, "end": s.end, "text": s.text, "language": s.language,
                "emotion": s.emotion, "kind": s.kind, "channel": s.channel, "source": s.source, "events": s.events,
                "words": [{"text": w.text, "start": w.start, "end": w.end, "interpolated": w.interpolated}
                          for w in s.words],
            } for s in transcript.segments]
        return out

    async def library(self, request: Request) -> Response:
        from ..library import list_media

        args = library_params(request)
        return JSONResponse(await self.run(lambda: self._no_art(list_media(self.state.conn, **args))),
                            headers={"cache-control": "no-store"})

    def _no_art(self, page: dict[str, Any]) -> dict[str, Any]:
        """artwork_url is null for recordings known to have none (the page shows a placeholder
        and asks for nothing)."""
        for item in page["items"]:
            if self.pipeline.artwork.lookup(item["id"]) is False:
                item["artwork_url"] = None
        return page

    def _artwork_local(self, media: Media):
        """A local file holding this media's bytes, for a first extraction of its art: the file
        itself, or a bucket object's temporary copy; 404 when it is offline or changed."""
        path = self.playable_path(media)
        if path is not None:
            return nullcontext(path)
        remote = self.playable_uri(media)
        if remote is None:
            raise ApiError(404, f"media {media.id} has no artwork yet and its file is offline")
        return self.pipeline.storage_for(remote[0]).local_copy(remote[0])

    def _artwork(self, media_id: str) -> tuple[bytes, str, str] | None:
        media = self._media(media_id)
        found = self.pipeline.artwork.ensure(media.id, lambda: self._artwork_local(media),
                                             self.state.get_probe(media.id))
        if found is None:
            return None
        path, ctype = found
        return path.read_bytes(), ctype, f'"{media.id}-{path.suffix[1:]}"'

    async def artwork(self, request: Request) -> Response:
        """The cover art (or video frame) of a media, from the artwork cache (artwork.py)."""
        # not self.run: a first extraction may take a moment (ffmpeg, a bucket download)
        art = await anyio.to_thread.run_sync(self._artwork, request.path_params["media_id"])
        if art is None:
            raise ApiError(404, "this recording has no artwork (no embedded cover, not a video)")
        body, ctype, etag = art
        headers = {"etag": etag, "cache-control": "private, max-age=86400"}
        if etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=ctype, headers=headers)

    async def media(self, request: Request) -> Response:
        return JSONResponse(await self.run(self._media_json, request.path_params["media_id"]))

    def _stream_target(self, media_id: str) -> tuple[Media, str, os.stat_result]:
        media = self._media(media_id)
        path = self.playable_path(media)
        if path is None and (remote := self.playable_uri(media)) is not None:
            return media, *remote
        if path is None:
            raise ApiError(404, f"media {media.id}: its file is offline, changed since indexing, or outside "
                                "the indexed folders")
        return media, path, os.stat(path)

    async def stream(self, request: Request) -> Response:
        media, path, st = await self.run(self._stream_target, request.path_params["media_id"])
        return stream_response(request, media, path, st, read_file if is_local(path) else self._read_remote)

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
                        headers={"content-disposition": attachment(f"{file_stem(media)}.{fmt}")})

    async def clip(self, request: Request) -> Response:
        media, path, _ = await self.run(self._stream_target, request.path_params["media_id"])
        limit = media.duration if media.duration and media.duration > 0 else 48 * 3600.0
        t = float_param(request, "t", None, 0.0, limit)
        before = float_param(request, "before", CLIP_DEFAULT_BEFORE, 0.0, CLIP_MAX_SIDE)
        after = float_param(request, "after", CLIP_DEFAULT_AFTER, 0.0, CLIP_MAX_SIDE)
        start = max(0.0, t - before)
        end = min(limit, t + after)
        if end - start < 0.1:
            raise ApiError(400, "the clip would be empty: give before/after (seconds) around t")
        if shutil.which("ffmpeg") is None:
            raise ApiError(503, "clips need ffmpeg on the server's PATH")
        source = path if is_local(path) else await self.run(self._clip_url, path)
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
            out_dir, out_file, ext = await anyio.to_thread.run_sync(cut_clip, media, source, start, end - start, path)
        finally:
            self._clip_slots.release()
        name = f"{file_stem(media)} {clock(start).replace(':', '-')}.{ext}"
        return FileResponse(out_file, media_type="video/mp4" if ext == "mp4" else "audio/mpeg",
                            headers={"content-disposition": attachment(name)},
                            background=BackgroundTask(shutil.rmtree, out_dir, True))

    # -- actions: work queued in the state database's job queue (a running watch claims it) --

    def _queued(self, paths: list[str], what: str) -> JSONResponse:
        from ..datalock import writer_alive

        data_dir = getattr(getattr(self.pipeline, "config", None), "data_dir", None)
        return JSONResponse({"queued": paths, "action": what,
                             "worker": bool(data_dir) and writer_alive(Path(data_dir))}, status_code=202)

    async def retry_media(self, request: Request) -> Response:
        """Index again the failed files of one recording."""
        from ..library import queue_again

        await action_body(request)

        def work():
            media = self._media(request.path_params["media_id"])
            with self.state.tx():
                paths = queue_again(self.state, self.state.requeue_failed(media.paths))
            if not paths:
                raise ApiError(409, f"nothing to retry: no file of media {media.id} failed")
            return paths
        return self._queued(await self.run(work), "retry")

    async def retry_all(self, request: Request) -> Response:
        """Index again every failed file."""
        from ..library import queue_again

        await action_body(request)

        def work():
            with self.state.tx():
                return queue_again(self.state, self.state.requeue_failed())
        return self._queued(await self.run(work), "retry")

    def _engines(self) -> list[dict[str, Any]]:
        """The engines a recording can be transcribed with: each one, and each family (the router
        picks the member); ``paid`` ones cost money."""
        found = getattr(self.pipeline, "transcribers", None) or {}
        out = {n: {"name": n, "family": t.family, "paid": t.limits.paid} for n, t in found.items()}
        for t in found.values():
            if t.family and t.family not in out:
                members = [m for m in found.values() if m.family == t.family]
                out[t.family] = {"name": t.family, "family": t.family, "paid": any(m.limits.paid for m in members)}
        return [out[n] for n in sorted(out)]

    async def transcribers(self, request: Request) -> Response:
        return JSONResponse({"default": getattr(self.pipeline, "transcriber_name", None),
                             "transcribers": self._engines()})

    async def reindex_media(self, request: Request) -> Response:
        """Transcribe a recording again with another engine; its old transcript stays searchable
        until the new one is ready (a failure keeps it)."""
        from ..library import queue_again
        from ..pipeline import TRANSCRIBE

        body = await action_body(request)
        name = body.get("transcriber")
        names = [e["name"] for e in self._engines()]
        if not isinstance(name, str) or name not in names:
            raise ApiError(400, f"transcriber must be one of {', '.join(names) or 'none'}, not {str(name)[:40]!r}")

        def work():
            media = self._media(request.path_params["media_id"])
            with self.state.tx():
                again = self.state.requeue_failed(media.paths, ("indexed", "failed", "queued"))
                paths = queue_again(self.state, again, TRANSCRIBE + name)
            if not paths:
                raise ApiError(409, f"media {media.id} is being indexed now: try again when it is done")
            return paths
        return self._queued(await self.run(work), "reindex")

    def _status(self, failed_limit: int, failed_offset: int) -> dict[str, Any]:
        summary = self.state.summary(failed_limit=failed_limit, failed_offset=failed_offset,
                                     spent_limit=STATUS_SPENT_FILES)
        summary["failed_limit"], summary["failed_offset"] = failed_limit, failed_offset
        summary["jobs"] = self.state.jobs.counts()
        summary["version"] = __version__
        summary["index"] = getattr(self.index, "name", "")
        summary["auth"] = self.token is not None
        remote = getattr(self.pipeline, "remote", None)
        if remote is not None:  # --queue: the workers, what each is doing, queue depth, throughput
            summary["queue"] = remote.status()
        return summary

    async def status(self, request: Request) -> Response:
        limit = int_param(request, "failed_limit", STATUS_FAILED_DEFAULT, 0, MAX_FAILED_LIMIT)
        offset = int_param(request, "failed_offset", 0, 0, 10**9)
        return JSONResponse(await self.run(self._status, limit, offset), headers={"cache-control": "no-store"})

    async def openapi(self, request: Request) -> Response:
        from .openapi import openapi_spec
        return JSONResponse(openapi_spec(__version__))

    async def login(self, request: Request) -> Response:
        token = await login_token(request)
        if self.token is None:
            return Response(status_code=204)
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            self.throttle.failed(client_address(request.scope))
            raise ApiError(401, "wrong token")
        self.throttle.succeeded(client_address(request.scope))
        response = Response(status_code=204)
        set_cookie(response, self.token)
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
        logged_in = login_cookie(dict(request.scope["headers"])) == cookie_value(self.token)
        right = hmac.compare_digest(given.encode(), self.token.encode())
        client = client_address(request.scope)
        if logged_in:
            given = self.token
        elif right:
            self.throttle.succeeded(client)
        else:
            self.throttle.failed(client)
            self.throttle.note_bad_cookie(client, cookie_value(given))  # its cookie is not a second guess
        set_cookie(response, given)
        return response


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


async def _index_down(request: Request, exc: TransientError) -> Response:
    """The index server (e.g. Meilisearch) is down or overloaded: 503, try again shortly."""
    config = request.app.state.web.pipeline.config
    return error_response(503, config.redact(f"the search index is unavailable: {exc}"), {"retry-after": "5"})


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
        Route("/api/media", web.library, methods=["GET"]),
        Route("/api/retry", web.retry_all, methods=["POST"]),
        Route("/api/transcribers", web.transcribers, methods=["GET"]),
        Route(mid, web.media, methods=["GET"]),
        Route(mid + "/retry", web.retry_media, methods=["POST"]),
        Route(mid + "/reindex", web.reindex_media, methods=["POST"]),
        Route(mid + "/stream", web.stream, methods=["GET", "HEAD"]),
        Route(mid + "/captions.vtt", web.captions, methods=["GET"]),
        Route(mid + "/export.{fmt}", web.export, methods=["GET"]),
        Route(mid + "/clip", web.clip, methods=["GET"]),
        Route(mid + "/artwork", web.artwork, methods=["GET"]),
    ]
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    # plugin routes sit behind the same Guard (token, Host check) as the built-in ones, wherever
    # they are: only the built-in page, /static and /api/login are open (is_public)
    load_plugins().hook.register_routes(register=routes.append, config=getattr(pipeline, "config", None))
    app = Starlette(routes=routes, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, FatalError: _unavailable, sqlite3.Error: _unavailable,
        TransientError: _index_down,
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

