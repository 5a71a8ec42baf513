"""The library listing: every recording with its title, folder, duration and state, sorted,
filtered and paged in SQL (``GET /api/media`` and the web UI's library view)."""
from __future__ import annotations

import json
import os
import sqlite3
from typing import Any

SORTS = {  # name -> SQL order (ties broken by id, so pages never overlap)
    "added": "added DESC", "-added": "added ASC",
    "modified": "m.mtime DESC", "-modified": "m.mtime ASC",
    "title": "title_key ASC", "-title": "title_key DESC",
    "duration": "duration DESC", "-duration": "duration ASC",
}
KINDS = ("audio", "video")
STATES = ("pending", "indexed")

_SELECT = """
SELECT m.id, m.size, m.mtime, m.status, m.error, m.engine, m.language, m.probe,
       (SELECT MIN(path) FROM files f WHERE f.media_id = m.id) AS path,
       (SELECT MIN(added) FROM files f WHERE f.media_id = m.id) AS added,
       json_extract(m.probe, '$.duration') AS duration,
       LOWER(COALESCE(json_extract(m.probe, '$.tags.title'),
                      (SELECT MIN(path) FROM files f WHERE f.media_id = m.id))) AS title_key  -- untagged: by path
FROM media m
"""


def list_media(conn: sqlite3.Connection, *, sort: str = "added", limit: int = 50, offset: int = 0,
               folder: str | None = None, language: str | None = None, kind: str | None = None,
               state: str | None = None) -> dict[str, Any]:
    """A page of recordings (with live files) and how many match in all."""
    where, args = ["m.status != 'removed'"], []
    if folder:
        prefix = folder.rstrip("/") + "/"
        where.append("EXISTS (SELECT 1 FROM files f WHERE f.media_id = m.id AND f.path >= ? AND f.path < ?)")
        args += [prefix, prefix[:-1] + "0"]  # "0" sorts right after "/"
    else:
        where.append("EXISTS (SELECT 1 FROM files f WHERE f.media_id = m.id)")
    if language:
        where.append("m.language = ?")
        args.append(language)
    if kind:
        where.append("(COALESCE(json_extract(m.probe, '$.video_streams'), 0) > 0) = ?")
        args.append(1 if kind == "video" else 0)
    if state:
        where.append("m.status = ?")
        args.append(state)
    cond = " WHERE " + " AND ".join(where)
    total = conn.execute("SELECT COUNT(*) FROM media m" + cond, args).fetchone()[0]
    rows = conn.execute(f"{_SELECT}{cond} ORDER BY {SORTS[sort]}, m.id LIMIT ? OFFSET ?", [*args, limit, offset])
    return {"total": total, "offset": offset, "limit": limit, "sort": sort, "items": [_item(r) for r in rows]}


def _item(row: sqlite3.Row) -> dict[str, Any]:
    probe = json.loads(row["probe"]) if row["probe"] else {}
    path = row["path"]
    tags = probe.get("tags") or {}
    return {
        "id": row["id"], "title": tags.get("title") or os.path.splitext(os.path.basename(path))[0],
        "path": path, "folder": os.path.dirname(path), "duration": probe.get("duration"),
        "has_video": bool(probe.get("video_streams")), "size": row["size"], "mtime": row["mtime"],
        "added": row["added"], "language": row["language"], "engine": row["engine"],
        "status": row["status"], "error": row["error"],
    }
