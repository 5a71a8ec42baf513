"""The library listing: every recording with its title, folder, duration and state, sorted,
filtered and paged in SQL (``GET /api/media`` and the web UI's library view)."""
from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

from .models import recorded_month

# the title tag (an index on it); recordings without one, titled by their file name, come
# first in file order (rowid) when sorting by title
TITLE_KEY = "LOWER(json_extract(m.probe, '$.tags.title'))"
SORTS = {  # name -> SQL order; each one walks an index (state.SCHEMA), ties broken by it too
    "added": "m.rowid DESC", "-added": "m.rowid ASC",  # a media row is added once, when first seen
    "modified": "m.mtime DESC, m.rowid DESC", "-modified": "m.mtime ASC, m.rowid ASC",
    "title": f"{TITLE_KEY} ASC, m.rowid ASC", "-title": f"{TITLE_KEY} DESC, m.rowid DESC",
    "duration": "m.duration DESC, m.rowid DESC", "-duration": "m.duration ASC, m.rowid ASC",
}
KINDS = ("audio", "video")
STATES = ("pending", "indexed")

_SELECT = """
SELECT m.id, m.size, m.mtime, m.status, m.error, m.engine, m.language, m.probe,
       (SELECT MIN(path) FROM files f WHERE f.media_id = m.id) AS path,
       (SELECT MIN(added) FROM files f WHERE f.media_id = m.id) AS added,
       m.duration AS duration, m.cost,
       (SELECT CASE WHEN substr(error, 1, length(path) + 2) = path || ': ' THEN substr(error, length(path) + 3)
               ELSE error END FROM files f WHERE f.media_id = m.id AND f.status = 'failed' LIMIT 1) AS failed,
       (SELECT t.route FROM transcripts t WHERE t.media_id = m.id AND t.engine_key = m.engine) AS route
FROM media m
"""


def list_media(conn: sqlite3.Connection, *, sort: str = "added", limit: int = 50, offset: int = 0,
               folder: str | None = None, language: str | None = None, kind: str | None = None,
               state: str | None = None, date: str | None = None) -> dict[str, Any]:
    """A page of recordings (with live files) and how many match in all. ``date``: recorded in this
    year or month (``Media.month``: the date tag, else the file's month; computed per row)."""
    where, args = ["m.status != 'removed'"], []
    if folder:
        prefix = folder.rstrip("/") + "/"
        where.append("m.id IN (SELECT media_id FROM files WHERE path >= ? AND path < ?)")
        args += [prefix, prefix[:-1] + "0"]  # "0" sorts right after "/"
    if language:
        where.append("m.language = ?")
        args.append(language)
    if kind:
        where.append("(COALESCE(json_extract(m.probe, '$.video_streams'), 0) > 0) = ?")
        args.append(1 if kind == "video" else 0)
    if state:
        where.append("m.status = ?")
        args.append(state)
    if date:
        conn.create_function("recorded_month", 3, _month_of, deterministic=True)
        where.append("recorded_month(json_extract(m.probe, '$.tags.date'), json_extract(m.probe, '$.tags.year'),"
                     " m.mtime) BETWEEN ? AND ?")
        args += [date, date + "~"]
    cond = " WHERE " + " AND ".join(where)
    total = conn.execute("SELECT COUNT(*) FROM media m" + cond, args).fetchone()[0]
    rows = conn.execute(f"{_SELECT}{cond} ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?", [*args, limit, offset])
    # a media whose files are all gone is marked removed by the next scan; until then it has no path
    return {"total": total, "offset": offset, "limit": limit, "sort": sort,
            "items": [_item(r) for r in rows if r["path"] is not None]}


def _month_of(date: str | None, year: str | None, mtime: float | None) -> str | None:
    return recorded_month({"date": date or "", "year": year or ""}, mtime)


def _item(row: sqlite3.Row) -> dict[str, Any]:
    probe = json.loads(row["probe"]) if row["probe"] else {}
    path = row["path"]
    tags = probe.get("tags") or {}
    return {
        "id": row["id"], "title": tags.get("title") or os.path.splitext(os.path.basename(path))[0],
        "path": path, "folder": os.path.dirname(path), "duration": probe.get("duration"),
        "has_video": bool(probe.get("video_streams")), "size": row["size"], "mtime": row["mtime"],
        "added": row["added"], "language": row["language"], "engine": row["engine"],
        "status": row["status"], "error": row["error"], "month": recorded_month(tags, row["mtime"]),
        "failed": row["failed"],  # why its file failed (retry it), else None
        "route": row["route"], "cost": row["cost"],
        "artwork_url": f"/api/media/{row['id']}/artwork",
    }


def queue_again(state, paths: list[str], action: str = "index") -> list[str]:
    """Queue these files for work in the state database's job queue: a running ``watch`` (any
    process) claims them within a second; else the next ``index`` or ``watch`` does."""
    with state.tx():
        for path in paths:
            state.set_file_status(path, "queued")
            state.jobs.enqueue(path, action)
    return paths
