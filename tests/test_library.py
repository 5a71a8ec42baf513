"""The library listing (library.list_media) against the plain SQL it stands for, on a real state
database: every sort with every filter, both ways of finding a page (walking the sort's index,
or reading the matches and sorting them) and every way of counting."""
from __future__ import annotations

import itertools
import json
import random

import pytest

from mediaindex import library
from mediaindex.state import State


@pytest.fixture(scope="module")
def conn(tmp_path_factory):
    """3,000 media in /lib/a (2,000), /lib/b (880) and /lib/c/d (120); some removed, some pending,
    a few in two folders; three languages (one rare), one in seven a video, half titled."""
    state = State(tmp_path_factory.mktemp("library") / "state.sqlite3")
    c, rnd = state.conn, random.Random(7)
    c.execute("BEGIN")
    for i in range(3000):
        folder = "/lib/a" if i < 2000 else "/lib/b" if i < 2880 else "/lib/c/d"
        status = "removed" if i % 20 == 3 else "pending" if i % 10 == 1 else "indexed"
        probe = {"duration": rnd.uniform(1, 100), "video_streams": int(i % 7 == 0),
                 "tags": {"title": f"T{rnd.random():.5f}"} if i % 2 else {}}
        c.execute("INSERT INTO media (id, size, mtime, duration, probe, status, language, updated) "
                  "VALUES (?, 1, ?, ?, ?, ?, ?, 0)", (f"{i:020x}", rnd.uniform(0, 1e6), probe["duration"],
                                                      json.dumps(probe), status,
                                                      "ja" if i % 150 == 0 else "zh" if i % 3 else "en"))
        if status != "removed":
            c.execute("INSERT INTO files (path, size, mtime, media_id, status, added, updated) "
                      "VALUES (?, 1, 0, ?, 'indexed', ?, 0)", (f"{folder}/{i}.mp3", f"{i:020x}", i))
        if i % 100 == 5:  # a copy elsewhere
            c.execute("INSERT INTO files (path, size, mtime, media_id, status, added, updated) "
                      "VALUES (?, 1, 0, ?, 'indexed', ?, 0)", (f"/lib/b/copy{i}.mp3", f"{i:020x}", i + 0.5))
    c.execute("INSERT INTO files (path, size, mtime, status, added, updated) VALUES ('/lib/a/q.mp3', 1, 0, "
              "'queued', 0, 0)")  # not processed yet: no media
    c.execute("COMMIT")
    yield c
    state.close()


def _reference(conn, sort, limit, offset, folder, language, kind, state):
    """The listing in plain SQL (what list_media was before it was made fast)."""
    where, args = ["m.status != 'removed'"], []
    if folder:
        prefix = folder.rstrip("/") + "/"
        where.append("m.id IN (SELECT media_id FROM files WHERE path >= ? AND path < ?)")
        args += [prefix, prefix[:-1] + "0"]
    if language:
        where.append("m.language = ?")
        args.append(language)
    if kind:
        where.append(f"{library.KIND} = ?")
        args.append(1 if kind == "video" else 0)
    if state:
        where.append("m.status = ?")
        args.append(state)
    cond = " WHERE " + " AND ".join(where)
    total = conn.execute("SELECT COUNT(*) FROM media m" + cond, args).fetchone()[0]
    ids = [r[0] for r in conn.execute(f"SELECT m.id FROM media m{cond} ORDER BY {library.SORTS[sort]} "
                                      "LIMIT ? OFFSET ?", [*args, limit, offset])]
    return total, ids


FILTERS = list(itertools.product([None, "/lib/a", "/lib/c", "/lib/b/", "/lib", "/nowhere"], [None, "zh", "ja"],
                                 [None, "video", "audio"], [None, "pending", "indexed"]))


@pytest.mark.parametrize("scan_from", [library.FOLDER_SCAN_FROM, 100])
@pytest.mark.parametrize("sort", list(library.SORTS))
def test_every_sort_and_filter_gives_what_plain_sql_gives(conn, sort, scan_from, monkeypatch):
    monkeypatch.setattr(library, "FOLDER_SCAN_FROM", scan_from)  # 100: big folders are counted the other way
    for (folder, language, kind, state), offset in itertools.product(FILTERS, (0, 40)):
        kw = dict(folder=folder, language=language, kind=kind, state=state)
        page = library.list_media(conn, sort=sort, limit=25, offset=offset, **kw)
        total, ids = _reference(conn, sort, 25, offset, **kw)
        assert page["total"] == total, (sort, kw)
        assert [i["id"] for i in page["items"]] == ids, (sort, offset, kw)
