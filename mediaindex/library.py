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
FOLDER_SCAN_FROM = 5000  # files in a folder filter from which counting reads the whole files_media_path index
STATES = ("pending", "indexed")

_SELECT = """
SELECT m.rowid AS rid, m.id, m.size, m.mtime, m.status, m.error, m.engine, m.language, m.probe,
       (SELECT MIN(path) FROM files f WHERE f.media_id = m.id) AS path,
       (SELECT MIN(added) FROM files f WHERE f.media_id = m.id) AS added,
       m.duration AS duration, m.cost,
       (SELECT CASE WHEN substr(error, 1, length(path) + 2) = path || ': ' THEN substr(error, length(path) + 3)
               ELSE error END FROM files f WHERE f.media_id = m.id AND f.status = 'failed' LIMIT 1) AS failed,
       (SELECT t.route FROM transcripts t WHERE t.media_id = m.id AND t.engine_key = m.engine) AS route
FROM media m
"""
KIND = "(COALESCE(json_extract(m.probe, '$.video_streams'), 0) > 0)"  # the media_kind index's expression


def list_media(conn: sqlite3.Connection, *, sort: str = "added", limit: int = 50, offset: int = 0,
               folder: str | None = None, language: str | None = None, kind: str | None = None,
               state: str | None = None, date: str | None = None) -> dict[str, Any]:
    """A page of recordings (with live files) and how many match in all. ``date``: recorded in this
    year or month (``Media.month``: the date tag, else the file's month; computed per row).

    The count first, from indexes only (state.SCHEMA). Then the page's rowids, by the cheaper of
    two ways: walk the sort's index and test each row until the page is full (when many rows
    match: about (offset + limit) * all / total rows read), or read the matching rows from the
    filters' indexes and sort them (when few do: total rows). Then the columns of those rows only.
    """
    terms = []  # (condition, the same with its index disabled by a unary +, arguments)
    span = None
    if folder:
        prefix = folder.rstrip("/") + "/"
        span = [prefix, prefix[:-1] + "0"]  # "0" sorts right after "/"
        if not _outside(conn, span):  # every file is in it (a root): nothing to filter
            span = None
    if span:
        terms.append(("m.id IN (SELECT media_id FROM files WHERE path >= ? AND path < ?)",
                      "EXISTS (SELECT 1 FROM files f WHERE f.media_id = m.id AND f.path >= ? AND f.path < ?)", span))
    if language:
        terms.append(("m.language = ?", "+m.language = ?", [language]))
    if kind:
        terms.append((f"{KIND} = ?", f"+{KIND} = ?", [1 if kind == "video" else 0]))
    if state:
        terms.append(("m.status = ?", "+m.status = ?", [state]))
    if date:  # no index: each row's month is computed (so the count reads the rows)
        conn.create_function("recorded_month", 3, _month_of, deterministic=True)
        month = ("recorded_month(json_extract(m.probe, '$.tags.date'), json_extract(m.probe, '$.tags.year'), "
                 "m.mtime) BETWEEN ? AND ?")
        terms.append((month, month, [date, date + "~"]))
    args = [a for _, _, more in terms for a in more]
    live = _count(conn)
    if not terms:
        total = live
    elif len(terms) == 1 and state:
        total = _count(conn, state)
    elif len(terms) == 1 and span:
        total = _count_folder(conn, span)
    else:
        total = conn.execute("SELECT COUNT(*) FROM media m" + _where(terms, 0), args).fetchone()[0]
    walk = (offset + limit) * live / max(total, 1) < total  # the sort's index finds the page sooner
    sql = f"SELECT m.rowid FROM media m{_where(terms, 1 if walk else 0)} ORDER BY {SORTS[sort]} LIMIT ? OFFSET ?"
    rids = [r[0] for r in conn.execute(sql, [*args, limit, offset])]
    rows = {r["rid"]: r for r in conn.execute(f"{_SELECT} WHERE m.rowid IN ({','.join('?' * len(rids))})", rids)}
    # a media whose files are all gone is marked removed by the next scan; until then it has no path
    return {"total": total, "offset": offset, "limit": limit, "sort": sort,
            "items": [_item(rows[r]) for r in rids if r in rows and rows[r]["path"] is not None]}


def _outside(conn: sqlite3.Connection, span: list[str]) -> bool:
    """Whether some file lies outside this path range (two index seeks)."""
    return conn.execute("SELECT EXISTS (SELECT 1 FROM files WHERE path < ?) OR EXISTS (SELECT 1 FROM files "
                        "WHERE path >= ?)", span).fetchone()[0] == 1


def _count_folder(conn: sqlite3.Connection, span: list[str]) -> int:
    """The media of the files in a path range, less removed ones, from indexes only: a small
    range is read in path order (its media ids sorted apart), a large one from the index in
    media id order (all files, but no sort: a few ms for 100,000)."""
    files = conn.execute("SELECT COUNT(*) FROM files WHERE path >= ? AND path < ?", span).fetchone()[0]
    index = "INDEXED BY files_media_path" if files > FOLDER_SCAN_FROM else ""
    return conn.execute(f"SELECT (SELECT COUNT(DISTINCT media_id) FROM files {index} WHERE path >= ? AND path < ?) "
                        "- (SELECT COUNT(*) FROM media m WHERE m.status = 'removed' AND m.id IN "
                        "(SELECT media_id FROM files WHERE path >= ? AND path < ?))", span * 2).fetchone()[0]


def _where(terms: list, which: int) -> str:
    return " WHERE " + " AND ".join(["m.status != 'removed'", *(t[which] for t in terms)])


def _count(conn: sqlite3.Connection, state: str | None = None) -> int:
    """Recordings not removed, or in one state, reading no row: SQLite counts a whole table
    from its pages; the few in other states (removed, pending) are counted by index and taken
    away. A library is mostly indexed: pending ones are counted directly."""
    if state == "pending":
        return conn.execute("SELECT COUNT(*) FROM media WHERE status = 'pending'").fetchone()[0]
    others = ("removed", "pending") if state else ("removed",)
    marks = ",".join("?" * len(others))
    return (conn.execute("SELECT COUNT(*) FROM media").fetchone()[0]
            - conn.execute(f"SELECT COUNT(*) FROM media WHERE status IN ({marks})", others).fetchone()[0])


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
