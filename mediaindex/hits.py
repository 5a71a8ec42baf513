"""Search answers as JSON, and the ``path`` filter: one shape for ``search --json`` and
``/api/search`` (documented in README.md and web/openapi.py)."""
from __future__ import annotations

import html
import os
import re
from dataclasses import replace
from typing import Any

from .backends import is_local, normalize_location
from .export import clock
from .models import SearchHit, SearchQuery, SearchResult

_MARK = re.compile(r"(</?mark>)")
_MARKUP = re.compile(r"[<>&]")


def safe_snippet(snippet: str) -> str:
    """Keep only text and <mark>: whatever an index backend returned, nothing else survives."""
    out = []
    for part in _MARK.split(snippet or ""):
        if part in ("<mark>", "</mark>") or not _MARKUP.search(part):
            out.append(part)
        else:
            out.append(html.escape(html.unescape(part), quote=False))
    return "".join(out)


def path_prefix(location: str) -> str:
    """The index's ``path_prefix`` for a path or URI: a folder means "under it" (a trailing
    separator), not "any name starting with it"; a local file stays itself."""
    location = normalize_location(location)
    if not is_local(location):
        return location.rstrip("/") + "/"
    return location if os.path.isfile(location) else location.rstrip(os.sep) + os.sep


def hit_json(h: SearchHit) -> dict[str, Any]:
    """One hit: where (path, title, folder), when (the matched words' time, a jump a
    second before it, start, end), what (text, safe snippet, facets) and a page link."""
    t = round(float(h.time), 3)
    jump = round(max(0.0, t - 1.0), 3)
    return {
        "media_id": h.media_id, "path": h.path, "title": h.title or os.path.splitext(os.path.basename(h.path))[0],
        "folder": os.path.dirname(h.path), "time": t, "jump": jump, "clock": clock(t),
        "start": round(float(h.start), 3), "end": round(float(h.end), 3), "segment_index": h.segment_index,
        "text": h.text, "snippet": safe_snippet(h.snippet), "language": h.language, "emotion": h.emotion,
        "kind": h.kind, "score": h.score, "matched_words": h.matched_words, "match": h.match,
        "forgiven": h.forgiven, "source": h.source, "events": h.events, "link": f"/m/{h.media_id}?t={jump}",
    }


def search_json(result: SearchResult, query: SearchQuery) -> dict[str, Any]:
    """A whole answer: the hits and how many there are (``total_exact`` false: an estimate)."""
    return {"query": result.query, "total": result.total, "total_exact": result.total_exact,
            "partial": result.partial, "stopped_early": result.stopped_early, "did_you_mean": result.did_you_mean,
            "forgiven": result.forgiven, "limit": query.limit, "offset": query.offset,
            "hits": [hit_json(h) for h in result.hits]}


MOMENTS = 10  # moments listed per recording in a grouped answer (more: search that recording)


def grouped_search(index, query: SearchQuery, moments: int = MOMENTS) -> dict[str, Any]:
    """Hits grouped by recording: ``limit``/``offset`` page over recordings (best first, the
    index's ``one_per_media``), each with its best hit and its first ``moments`` hits in time
    order. The answer is the flat one (``hits``: the best hit of each recording, ``total``:
    recordings) plus ``groups``; every hit has the flat shape (``hit_json``)."""
    page = index.search(replace(query, one_per_media=True, facets=False))
    out = search_json(page, query)
    groups = []
    for best in page.hits:
        found = index.search(replace(query, media_id=best.media_id, limit=moments, offset=0, one_per_media=False,
                                     facets=False))
        hits = found.hits or [best]
        hits.sort(key=lambda h: (h.time, h.segment_index))
        groups.append({"media_id": best.media_id, "title": hit_json(best)["title"], "path": best.path,
                       "folder": os.path.dirname(best.path), "best": hit_json(best),
                       "moments": [hit_json(h) for h in hits], "moments_total": max(found.total, len(hits)),
                       "moments_exact": found.total_exact})
    out["group"] = "media"
    out["groups"] = groups
    return out


def years(months: dict[str, int]) -> dict[str, int]:
    """The ``year`` facet from the ``month`` one (``YYYY-MM``, or ``YYYY`` when only the year is known)."""
    out: dict[str, int] = {}
    for month, n in months.items():
        out[month[:4]] = out.get(month[:4], 0) + n
    return out
