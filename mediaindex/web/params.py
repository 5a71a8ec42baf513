"""Request parameters: each one read, checked and turned into a value or a 400 with a JSON body
``{"error": "...", "status": N}`` (never a 500)."""
from __future__ import annotations

import math
import os
import re

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..backends import is_local
from ..hits import path_prefix
from ..models import SearchQuery

MEDIA_ID = re.compile(r"[0-9a-f]{8,64}")
KINDS = ("speech", "singing", "music")
SOURCES = ("asr", "lyrics", "subtitle", "sound")
MAX_LIMIT = 100
MAX_OFFSET = 10_000
MAX_QUERY = 500
STATUS_FAILED_DEFAULT = 100  # failed files listed by /api/status unless asked (files.failed counts them all)
MAX_FAILED_LIMIT = 1000
STATUS_SPENT_FILES = 50  # paid files listed by /api/status (most expensive first; spent_files counts them)


class ApiError(Exception):
    """A client error: answered as JSON with this status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
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


def float_param(request: Request, name: str, default: float | None, lo: float, hi: float) -> float:
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


def facet_param(request: Request, name: str) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    if not _FACET_VALUE.fullmatch(raw):
        raise ApiError(400, f"{name} must be a short code (letters, digits, '-', '_'), not {raw[:40]!r}")
    return raw


_DATE = re.compile(r"[0-9]{4}(-(0[1-9]|1[0-2]))?")


def date_param(request: Request) -> str | None:
    """``date``: a year (2024) or a month (2024-03) of recording."""
    date = request.query_params.get("date") or None
    if date is not None and not _DATE.fullmatch(date):
        raise ApiError(400, f"date must be a year (2024) or a month (2024-03), not {date[:40]!r}")
    return date


def search_query(request: Request) -> SearchQuery:
    """The SearchQuery for /api/search and /api/facets, validated."""
    q = request.query_params.get("q", "")
    if len(q) > MAX_QUERY:
        raise ApiError(400, f"q is too long ({len(q)} characters; at most {MAX_QUERY})")
    kind = facet_param(request, "kind")
    if kind is not None and kind not in KINDS:
        raise ApiError(400, f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    source = facet_param(request, "source")
    if source is not None and source not in SOURCES:
        raise ApiError(400, f"source must be one of {', '.join(SOURCES)}, not {source!r}")
    path = request.query_params.get("path") or None
    if path is not None:
        if "\x00" in path or len(path) > 4096 or not (os.path.isabs(path) or not is_local(path)):
            raise ApiError(400, "path must be an absolute folder path or a storage URI (a prefix of the media paths)")
        path = path_prefix(path)
    return SearchQuery(
        q=q,
        date=date_param(request),
        limit=int_param(request, "limit", 20, 0, MAX_LIMIT),
        offset=int_param(request, "offset", 0, 0, MAX_OFFSET),
        language=facet_param(request, "lang"),
        emotion=facet_param(request, "emotion"),
        kind=kind,
        path_prefix=path,
        source=source,
        event=facet_param(request, "event"),
    )


GROUPS = ("none", "media")
MAX_MOMENTS = 50


def group_param(request: Request) -> str:
    """``group`` of /api/search: ``none`` (flat hits, the default) or ``media`` (by recording)."""
    group = request.query_params.get("group") or "none"
    if group not in GROUPS:
        raise ApiError(400, f"group must be one of {', '.join(GROUPS)}, not {group[:40]!r}")
    return group


def library_params(request: Request) -> dict:
    """The arguments of library.list_media for /api/media, validated."""
    from ..library import KINDS as MEDIA_KINDS, SORTS, STATES

    def choice(name: str, allowed) -> str | None:
        value = request.query_params.get(name) or None
        if value is not None and value not in allowed:
            raise ApiError(400, f"{name} must be one of {', '.join(allowed)}, not {value[:40]!r}")
        return value

    path = request.query_params.get("path") or None
    if path is not None and ("\x00" in path or len(path) > 4096 or not (os.path.isabs(path) or not is_local(path))):
        raise ApiError(400, "path must be an absolute folder path or a storage URI")
    return {
        "sort": choice("sort", tuple(SORTS)) or "added",
        "limit": int_param(request, "limit", 50, 1, MAX_LIMIT),
        "offset": int_param(request, "offset", 0, 0, 10**9),
        "folder": path_prefix(path) if path else None,
        "language": facet_param(request, "lang"),
        "kind": choice("kind", MEDIA_KINDS),
        "state": choice("state", STATES),
        "date": date_param(request),
    }


def valid_media_id(media_id: str) -> str:
    if not MEDIA_ID.fullmatch(media_id):
        raise ApiError(404, "no such media (a media id is a hex string)")
    return media_id
