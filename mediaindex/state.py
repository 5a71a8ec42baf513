"""The state database: files seen, media, cached transcripts, the job queue, the cost ledger.

One SQLite file in the data dir, WAL mode, one connection per thread, every change a
transaction: a ``kill -9`` at any moment leaves a consistent database, and jobs left ``running``
are put back in the queue by ``JobQueue.recover()`` on the next start.
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

from . import jobqueue
from .jobqueue import Job  # noqa: F401  (imported from here too)
from .datalock import writer_alive
from .models import Media, ProbeResult, Transcript
from .safety import redact

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);  -- library: this data dir's id
CREATE TABLE IF NOT EXISTS media (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    duration REAL,
    probe TEXT,                 -- ProbeResult as JSON
    status TEXT NOT NULL DEFAULT 'pending',   -- pending | indexed | removed
    error TEXT,
    engine TEXT,                -- transcript cache key used for the index
    language TEXT,
    cost REAL NOT NULL DEFAULT 0,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,      -- absolute path (or URI for remote storage)
    size INTEGER NOT NULL,
    mtime REAL NOT NULL,
    media_id TEXT REFERENCES media(id),
    status TEXT NOT NULL,       -- queued | running | indexed | failed | ignored (not media)
    error TEXT,
    added REAL NOT NULL,
    updated REAL NOT NULL,
    failure TEXT                -- why it failed: file | transient | engine:<engine@settings> (FAILURE_KINDS)
);
DROP INDEX IF EXISTS files_media;  -- made by an older version: files_media_path has its column first
CREATE INDEX IF NOT EXISTS files_media_path ON files(media_id, path);  -- a media's paths; the library's folders
CREATE INDEX IF NOT EXISTS media_status ON media(status, language);  -- the library's count and filters
CREATE INDEX IF NOT EXISTS media_mtime ON media(mtime);       -- the library's sorts (library.SORTS)
CREATE INDEX IF NOT EXISTS media_duration ON media(duration);
CREATE INDEX IF NOT EXISTS media_cost ON media(cost) WHERE cost > 0;  -- status: the paid files
CREATE INDEX IF NOT EXISTS media_title ON media(LOWER(json_extract(probe, '$.tags.title')));
DROP INDEX IF EXISTS media_video;  -- made by an older version: media_kind has its columns and status
CREATE INDEX IF NOT EXISTS media_kind ON media((COALESCE(json_extract(probe, '$.video_streams'), 0) > 0), language, status);
CREATE INDEX IF NOT EXISTS media_language ON media(language, status);  -- the library's language filter, counted
CREATE INDEX IF NOT EXISTS files_path_media ON files(path, media_id);  -- the library's folder filter, counted
CREATE INDEX IF NOT EXISTS files_status ON files(status);
CREATE TABLE IF NOT EXISTS transcripts (
    media_id TEXT NOT NULL,
    engine_key TEXT NOT NULL,
    data TEXT NOT NULL,         -- Transcript as JSON, raw engine response included
    created REAL NOT NULL,
    model TEXT,                 -- the engine's model, and the route it took (a cloud engine's
    route TEXT,                 -- flash | flash-chunks | filetrans; NULL for local engines)
    PRIMARY KEY (media_id, engine_key)
);
CREATE TABLE IF NOT EXISTS enriched (  -- a transcript after enrich_segments: what the index,
    media_id TEXT NOT NULL,             -- captions and exports show; rebuilt from the raw one
    engine_key TEXT NOT NULL,           -- only when the enrichers change
    enrichers TEXT NOT NULL,            -- "name@version,..." of the enrich_segments plugins
    data TEXT NOT NULL,                 -- Transcript as JSON (without the engine's raw response)
    created REAL NOT NULL,
    PRIMARY KEY (media_id, engine_key)
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL,
    action TEXT NOT NULL,       -- index | remove
    status TEXT NOT NULL,       -- queued | running | superseded (running, a newer job queued)
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_active ON jobs(path) WHERE status IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_next ON jobs(status, next_try);
CREATE INDEX IF NOT EXISTS jobs_superseded ON jobs(path) WHERE status = 'superseded';
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY,
    media_id TEXT NOT NULL,
    engine TEXT NOT NULL,
    seconds REAL NOT NULL,
    cost REAL NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL DEFAULT 'transcript',  -- transcript (one per engine run) | charge (paid on the way)
    details TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    media_id TEXT NOT NULL,
    engine_key TEXT NOT NULL,
    data TEXT NOT NULL,         -- an engine's resumable progress (a task id, finished chunks)
    updated REAL NOT NULL,
    PRIMARY KEY (media_id, engine_key)
);
CREATE TABLE IF NOT EXISTS staged (
    scheme TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (scheme, key)
);
CREATE TABLE IF NOT EXISTS roots (
    path TEXT PRIMARY KEY,
    status TEXT NOT NULL,       -- online | offline
    checked REAL NOT NULL
);
"""


@dataclass
class FileRecord:
    path: str
    size: int
    mtime: float
    media_id: str | None
    status: str
    error: str | None


class State:
    """Access to the state database. Safe to share between threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []  # every thread's, closed together
        self._conns_lock = threading.Lock()
        self.conn.executescript(SCHEMA)
        self._migrate()
        self.jobs = JobQueue(self)

    def _migrate(self) -> None:
        """Bring a database made by an older version up to SCHEMA (idempotent, one transaction each)."""
        self._migrate_routes()
        self._migrate_failure()

    def _migrate_routes(self) -> None:
        """transcripts.model and .route (per-file engine details)."""
        if "route" in {r[1] for r in self.conn.execute("PRAGMA table_info(transcripts)")}:
            return
        with self.tx() as c:  # checked again inside: another process may have just done it
            if "route" in {r[1] for r in c.execute("PRAGMA table_info(transcripts)")}:
                return
            c.execute("ALTER TABLE transcripts ADD COLUMN model TEXT")
            c.execute("ALTER TABLE transcripts ADD COLUMN route TEXT")
            c.execute("UPDATE transcripts SET model = json_extract(data, '$.model'), "
                      "route = CASE json_extract(data, '$.options.route') WHEN 'flash-split' THEN 'flash-chunks' "
                      "ELSE json_extract(data, '$.options.route') END")  # flash-split: the route's first name

    def _migrate_failure(self) -> None:
        """files.failure (why a file failed: State.stale_failures)."""
        def missing() -> bool:
            return "failure" not in {r[1] for r in self.conn.execute("PRAGMA table_info(files)")}
        if missing():
            with self.tx() as c:
                if missing():  # another process may have added it while this one waited
                    c.execute("ALTER TABLE files ADD COLUMN failure TEXT")

    @property
    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: no lock upgrades, no deadlocks)."""
        conn = self.conn
        if conn.in_transaction:  # nested: join the outer transaction
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            _rollback(conn)
            raise
        try:
            conn.execute("COMMIT")
        except BaseException:  # e.g. disk full: never leave it open for the next tx() to join
            _rollback(conn)
            raise

    def close(self) -> None:
        """Close every thread's connection: the last one to close checkpoints the WAL into the file."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def library_id(self) -> str:
        """This data dir's library id (made once): index documents carry it, so data dirs that
        share an index keep apart what each wrote."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'library'").fetchone()
        if row is None:
            with self.tx() as c:
                c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('library', ?)", (uuid.uuid4().hex,))
            row = self.conn.execute("SELECT value FROM meta WHERE key = 'library'").fetchone()
        return row[0]

    # ---- files -----------------------------------------------------------------------------

    def get_file(self, path: str) -> FileRecord | None:
        row = self.conn.execute("SELECT * FROM files WHERE path = ?", (path,)).fetchone()
        return _file(row) if row else None

    @staticmethod
    def _under_sql(root: str) -> tuple[str, tuple[str, str, str]]:
        """WHERE clause (an index range, no LIKE) for paths at or below root."""
        root = root.rstrip(os.sep) or os.sep
        prefix = root if root.endswith(os.sep) else root + os.sep
        return "path = ? OR (path >= ? AND path < ?)", (root, prefix, prefix[:-1] + chr(ord(os.sep) + 1))

    def files_under(self, root: str) -> Iterator[FileRecord]:
        """Every known file at or below a folder (or exactly that file)."""
        where, params = self._under_sql(root)
        for row in self.conn.execute(f"SELECT * FROM files WHERE {where}", params).fetchall():
            yield _file(row)

    def has_files_under(self, root: str) -> bool:
        where, params = self._under_sql(root)
        return self.conn.execute(f"SELECT 1 FROM files WHERE {where} LIMIT 1", params).fetchone() is not None

    def mark_queued(self, path: str, size: int, mtime: float) -> None:
        """A file waits for work: one upsert that keeps what it pointed to (its media id)."""
        now = time.time()
        with self.tx() as c:
            c.execute("INSERT INTO files (path, size, mtime, status, added, updated) VALUES (?, ?, ?, 'queued', ?, ?) "
                      "ON CONFLICT(path) DO UPDATE SET size=excluded.size, mtime=excluded.mtime, status='queued', "
                      "error=NULL, updated=excluded.updated", (path, size, mtime, now, now))

    def file_signatures(self) -> dict[str, tuple[int, float, str]]:
        """path → (size, mtime, status) for every known file: lets a rescan skip unchanged files."""
        return {r[0]: (r[1], r[2], r[3]) for r in self.conn.execute("SELECT path, size, mtime, status FROM files")}

    def set_file(self, path: str, *, size: int, mtime: float, status: str, media_id: str | None = None,
                 error: str | None = None) -> None:
        now = time.time()
        with self.tx() as c:
            c.execute(
                "INSERT INTO files (path, size, mtime, media_id, status, error, added, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
                "mtime=excluded.mtime, media_id=excluded.media_id, status=excluded.status, "
                "error=excluded.error, updated=excluded.updated",
                (path, size, mtime, media_id, status, redact(error), now, now),
            )

    def requeue_failed(self, under: list[str] | None = None, statuses: tuple[str, ...] = ("failed",)) -> list[str]:
        """Mark the failed files (or those in these statuses; all, or those at or under these
        paths) queued, so that the next scan indexes them again although they did not change;
        returns their paths."""
        marks = ",".join("?" * len(statuses))
        paths = [r[0] for r in self.conn.execute(
            f"SELECT path FROM files WHERE status IN ({marks}) ORDER BY path", statuses)]
        if under is not None:
            paths = [p for p in paths if any(p == u or p.startswith(u.rstrip("/") + "/") for u in under)]
        with self.tx() as c:
            c.executemany(f"UPDATE files SET status = 'queued', updated = ? WHERE path = ? AND status IN ({marks})",
                          [(time.time(), p, *statuses) for p in paths])
        return paths

    def set_file_status(self, path: str, status: str, error: str | None = None) -> None:
        with self.tx() as c:
            c.execute("UPDATE files SET status = ?, error = ?, updated = ? WHERE path = ?",
                      (status, redact(error), time.time(), path))

    def delete_file(self, path: str) -> str | None:
        """Forget a path; returns the media id it pointed to."""
        with self.tx() as c:
            row = c.execute("SELECT media_id FROM files WHERE path = ?", (path,)).fetchone()
            c.execute("DELETE FROM files WHERE path = ?", (path,))
        return row[0] if row else None

    def paths_of(self, media_id: str) -> list[str]:
        """Live paths of a media, primary (first added) first."""
        return [r[0] for r in self.conn.execute(
            "SELECT path FROM files WHERE media_id = ? ORDER BY added, path", (media_id,))]

    # ---- media -----------------------------------------------------------------------------

    def upsert_media(self, media_id: str, *, size: int, mtime: float, probe: ProbeResult) -> None:
        with self.tx() as c:
            c.execute(
                "INSERT INTO media (id, size, mtime, duration, probe, status, updated) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?) ON CONFLICT(id) DO UPDATE SET size=excluded.size, "
                "mtime=excluded.mtime, duration=excluded.duration, probe=excluded.probe, updated=excluded.updated",
                (media_id, size, mtime, probe.duration, json.dumps(asdict(probe)), time.time()),
            )

    def set_media_status(self, media_id: str, status: str, *, error: str | None = None,
                         engine: str | None = None, language: str | None = None) -> None:
        with self.tx() as c:
            c.execute(
                "UPDATE media SET status = ?, error = ?, engine = COALESCE(?, engine), "
                "language = COALESCE(?, language), updated = ? WHERE id = ?",
                (status, redact(error), engine, language, time.time(), media_id),
            )

    def get_probe(self, media_id: str) -> ProbeResult | None:
        row = self.conn.execute("SELECT probe FROM media WHERE id = ?", (media_id,)).fetchone()
        return ProbeResult(**json.loads(row[0])) if row and row[0] else None

    def get_media(self, media_id: str) -> Media | None:
        """The media with its live paths, or None when unknown or no longer on disk."""
        row = self.conn.execute("SELECT * FROM media WHERE id = ?", (media_id,)).fetchone()
        if not row:
            return None
        paths = self.paths_of(media_id)
        if not paths:
            return None
        probe = ProbeResult(**json.loads(row["probe"])) if row["probe"] else None
        return Media(
            id=row["id"], path=paths[0], paths=paths, size=row["size"], mtime=row["mtime"],
            duration=probe.duration if probe else None, container=probe.container if probe else None,
            has_video=probe.has_video if probe else False, channels=probe.channels if probe else None,
            tags=probe.tags if probe else {}, status=row["status"], error=row["error"], engine=row["engine"],
            language=row["language"], cost=row["cost"],
        )

    def media_for_path(self, path: str) -> Media | None:
        rec = self.get_file(path)
        return self.get_media(rec.media_id) if rec and rec.media_id else None

    def all_media_ids(self, status: str | None = None) -> list[str]:
        if status:
            return [r[0] for r in self.conn.execute("SELECT id FROM media WHERE status = ?", (status,))]
        return [r[0] for r in self.conn.execute("SELECT id FROM media")]

    # ---- transcripts -----------------------------------------------------------------------

    def get_transcript(self, media_id: str, engine_key: str | None = None) -> Transcript | None:
        """The cached transcript for this engine (as the engine returned it), or (engine_key=None)
        the one the index uses, enriched when it was (what captions, exports and the API show)."""
        if engine_key is None:
            row = self.conn.execute(
                "SELECT e.data FROM enriched e JOIN media m ON m.id = e.media_id "
                "WHERE e.media_id = ? AND e.engine_key = m.engine", (media_id,)).fetchone()
            if row is None:
                row = self.conn.execute(
                "SELECT t.data FROM transcripts t JOIN media m ON m.id = t.media_id "
                "WHERE t.media_id = ? AND t.engine_key = m.engine", (media_id,)).fetchone()
            if row is None:
                row = self.conn.execute("SELECT data FROM transcripts WHERE media_id = ? ORDER BY created DESC",
                                        (media_id,)).fetchone()
        else:
            row = self.conn.execute("SELECT data FROM transcripts WHERE media_id = ? AND engine_key = ?",
                                    (media_id, engine_key)).fetchone()
        return Transcript.from_dict(json.loads(row[0])) if row else None

    def save_transcript(self, media_id: str, engine_key: str, transcript: Transcript, seconds: float) -> None:
        """Store a new transcript, book what is left of its cost, drop its checkpoint: one transaction.

        What the engine booked on the way (``charge``, in this attempt or earlier ones since the
        last transcript of this engine) is part of ``transcript.cost``: only the rest is booked.
        """
        now = time.time()
        with self.tx() as c:
            last = c.execute("SELECT COALESCE(MAX(id), 0) FROM ledger WHERE media_id = ? AND engine = ? "
                             "AND kind = 'transcript'", (media_id, engine_key)).fetchone()[0]
            charged = c.execute("SELECT COALESCE(SUM(cost), 0) FROM ledger WHERE media_id = ? AND engine = ? "
                                "AND kind = 'charge' AND id > ?", (media_id, engine_key, last)).fetchone()[0]
            rest = max(0.0, transcript.cost - charged)
            c.execute("INSERT OR REPLACE INTO transcripts (media_id, engine_key, data, created, model, route) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (media_id, engine_key, json.dumps(transcript.to_dict(),
                      ensure_ascii=False), now, transcript.model, (transcript.options or {}).get("route")))
            c.execute("INSERT INTO ledger (media_id, engine, seconds, cost, at, kind) VALUES (?, ?, ?, ?, ?, 'transcript')",
                      (media_id, engine_key, seconds, rest, now))
            c.execute("UPDATE media SET cost = cost + ? WHERE id = ?", (rest, media_id))
            c.execute("DELETE FROM checkpoints WHERE media_id = ? AND engine_key = ?", (media_id, engine_key))
            c.execute("DELETE FROM enriched WHERE media_id = ? AND engine_key = ?", (media_id, engine_key))

    def get_enriched(self, media_id: str, engine_key: str, enrichers: str) -> Transcript | None:
        """The stored enrichment of this engine's transcript, when these enrichers made it."""
        row = self.conn.execute("SELECT data FROM enriched WHERE media_id = ? AND engine_key = ? AND enrichers = ?",
                                (media_id, engine_key, enrichers)).fetchone()
        return Transcript.from_dict(json.loads(row[0])) if row else None

    def save_enriched(self, media_id: str, engine_key: str, enrichers: str, transcript: Transcript) -> None:
        """Keep an enriched transcript (its raw engine response stays with the original only)."""
        data = {**transcript.to_dict(), "raw": None}
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO enriched (media_id, engine_key, enrichers, data, created) "
                      "VALUES (?, ?, ?, ?, ?)",
                      (media_id, engine_key, enrichers, json.dumps(data, ensure_ascii=False), time.time()))

    def charge(self, media_id: str, engine_key: str, seconds: float, cost: float,
               details: dict[str, Any] | None = None) -> None:
        """Book money spent before a transcript exists (a paid chunk, a submitted task): a failure
        or a crash later never hides it, so the spending cap stays true."""
        with self.tx() as c:
            c.execute("INSERT INTO ledger (media_id, engine, seconds, cost, at, kind, details) "
                      "VALUES (?, ?, ?, ?, ?, 'charge', ?)",
                      (media_id, engine_key, seconds, cost, time.time(), json.dumps(details or {})))
            c.execute("UPDATE media SET cost = cost + ? WHERE id = ?", (cost, media_id))

    def get_checkpoint(self, media_id: str, engine_key: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT data FROM checkpoints WHERE media_id = ? AND engine_key = ?",
                                (media_id, engine_key)).fetchone()
        return json.loads(row[0]) if row else None

    def set_checkpoint(self, media_id: str, engine_key: str, data: dict[str, Any]) -> None:
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO checkpoints (media_id, engine_key, data, updated) VALUES (?, ?, ?, ?)",
                      (media_id, engine_key, json.dumps(data), time.time()))

    # ---- staging uploads (a cloud engine's copy of a file; deleted after the call) ----------

    def add_staged(self, scheme: str, key: str, owner: str) -> None:
        """Record an upload before it starts: a crash mid-call leaves a row to clean up."""
        with self.tx() as c:
            c.execute("INSERT OR REPLACE INTO staged (scheme, key, owner, created) VALUES (?, ?, ?, ?)",
                      (scheme, key, owner, time.time()))

    def remove_staged(self, scheme: str, key: str) -> None:
        with self.tx() as c:
            c.execute("DELETE FROM staged WHERE scheme = ? AND key = ?", (scheme, key))

    def staged(self, exclude_owner: str | None = None) -> list[tuple[str, str]]:
        """Recorded uploads (scheme, key), but those of ``exclude_owner`` (a live process)."""
        return [(r[0], r[1]) for r in self.conn.execute(
            "SELECT scheme, key FROM staged WHERE owner != ? ORDER BY created", (exclude_owner or "",))]

    def transcription_count(self, media_id: str | None = None) -> int:
        """How many times an engine produced a transcript (ledger entries): caching tests read this."""
        if media_id:
            return self.conn.execute("SELECT COUNT(*) FROM ledger WHERE kind = 'transcript' AND media_id = ?",
                                     (media_id,)).fetchone()[0]
        return self.conn.execute("SELECT COUNT(*) FROM ledger WHERE kind = 'transcript'").fetchone()[0]

    def total_cost(self) -> float:
        return self.conn.execute("SELECT COALESCE(SUM(cost), 0) FROM ledger").fetchone()[0]

    # ---- one file's steps: what happened, one transaction each ----------------------------

    def claimed(self, path: str, media_id: str, *, size: int, mtime: float, probe: ProbeResult) -> Media:
        """A worker took ``path``, whose content is ``media_id``: the media is known (with its
        probe), the file is running. Returns the media with its live paths."""
        with self.tx():
            self.upsert_media(media_id, size=size, mtime=mtime, probe=probe)
            self.set_file(path, size=size, mtime=mtime, status="running", media_id=media_id)
            media = self.get_media(media_id)
        assert media is not None
        return media

    def transcribed(self, media_id: str, engine_key: str, transcript: Transcript, seconds: float) -> None:
        """An engine produced a transcript: stored, its cost booked, its checkpoint dropped."""
        self.save_transcript(media_id, engine_key, transcript, seconds)

    def indexed(self, path: str, media_id: str, *, size: int, mtime: float, engine: str | None = None,
                language: str | None = None, error: str | None = None) -> None:
        """``path`` is searchable as ``media_id``; ``engine``: its documents were (re)written from
        that engine's transcript (None: only its facets changed, a move or a copy); ``error``: a
        problem an enricher reported (a malformed sidecar) that did not stop indexing."""
        with self.tx():
            if engine is not None:
                self.set_media_status(media_id, "indexed", error=error, engine=engine, language=language)
            self.set_file(path, size=size, mtime=mtime, status="indexed", media_id=media_id)

    def failed(self, path: str, error: str, *, retry: bool, kind: str = "file") -> None:
        """Processing ``path`` failed: it waits for a retry (queued) or is failed, with the reason
        and its kind (see ``stale_failures``)."""
        with self.tx() as c:
            self.set_file_status(path, "queued" if retry else "failed", error)
            c.execute("UPDATE files SET failure = ? WHERE path = ?", (None if retry else kind, path))

    def stale_failures(self, engine: str) -> list[str]:
        """Failed files whose cause may be gone, queued again for the next scan: those failed for
        a transient cause (out of attempts), and those an engine refused when the engine or its
        settings (``engine``, ``name@settings``) are no longer the same. A file that failed for
        its own reason (``file``: corrupt, no audio) waits until it changes or ``retry``."""
        now = time.time()
        with self.tx() as c:
            paths = [r[0] for r in c.execute(
                "SELECT path FROM files WHERE status = 'failed' AND (failure = 'transient' "
                "OR (failure LIKE 'engine:%' AND failure != ?)) ORDER BY path", ("engine:" + engine,))]
            c.executemany("UPDATE files SET status = 'queued', updated = ? WHERE path = ?", [(now, p) for p in paths])
        return paths

    # ---- roots -----------------------------------------------------------------------------

    def set_root(self, path: str, status: str) -> None:
        with self.tx() as c:
            c.execute("INSERT INTO roots (path, status, checked) VALUES (?, ?, ?) ON CONFLICT(path) DO UPDATE "
                      "SET status=excluded.status, checked=excluded.checked", (path, status, time.time()))

    def roots(self) -> dict[str, str]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT path, status FROM roots")}

    # ---- summary ---------------------------------------------------------------------------

    def spent_by_engine(self) -> dict[str, dict[str, float]]:
        """Paid engines' spend: media, billed seconds and cost per engine (its cache key)."""
        return {engine: {"media": n, "seconds": round(sec, 3), "cost": round(cost, 6)}
                for engine, n, sec, cost in self.conn.execute(
                    "SELECT engine, COUNT(DISTINCT media_id), SUM(CASE WHEN kind = 'charge' OR cost > 0 THEN seconds "
                    "ELSE 0 END), SUM(cost) FROM ledger "
                    "GROUP BY engine HAVING SUM(cost) > 0 ORDER BY engine")}

    def spent_by_file(self, limit: int | None = None, offset: int = 0) -> list[dict[str, Any]]:
        """Each file a paid engine was paid for (most expensive first): its engine (cache key) and
        model, the route it took, its billed seconds and cost. A file that failed after a paid
        chunk shows the engine and route of its last charge."""
        rows = self.conn.execute(
            "SELECT m.id, (SELECT MIN(path) FROM files f WHERE f.media_id = m.id) AS path, m.cost, "
            "COALESCE(t.engine_key, (SELECT engine FROM ledger l WHERE l.media_id = m.id AND l.cost > 0 "
            "ORDER BY l.id DESC LIMIT 1)) AS engine, t.model, COALESCE(t.route, (SELECT json_extract(l.details, "
            "'$.route') FROM ledger l WHERE l.media_id = m.id AND l.kind = 'charge' ORDER BY l.id DESC LIMIT 1)) AS route, "
            "(SELECT SUM(CASE WHEN kind = 'charge' OR cost > 0 THEN seconds ELSE 0 END) FROM ledger l "
            "WHERE l.media_id = m.id) AS seconds "
            "FROM media m LEFT JOIN transcripts t ON t.media_id = m.id AND t.engine_key = m.engine "
            "WHERE m.cost > 0 ORDER BY m.cost DESC, m.id LIMIT ? OFFSET ?",
            (-1 if limit is None else limit, offset))
        return [{"media_id": r["id"], "path": r["path"], "engine": r["engine"], "model": r["model"],
                 "route": r["route"], "seconds": round(r["seconds"] or 0.0, 3), "cost": round(r["cost"], 6)}
                for r in rows]

    def summary(self, failed_limit: int | None = None, failed_offset: int = 0,
                spent_limit: int | None = None) -> dict[str, Any]:
        """Counts by state, the failed files (every one, or a page of them by path) and the paid
        ones (every one, or the ``spent_limit`` most expensive), for ``mediaindex status`` and the web UI."""
        counts = {s: 0 for s in ("queued", "running", "indexed", "failed", "ignored")}
        for status, n in self.conn.execute("SELECT status, COUNT(*) FROM files GROUP BY status"):
            counts[status] = n
        counts["total"] = sum(counts.values())
        counts["interrupted"] = 0
        if counts["running"] and not writer_alive(self.path.parent):  # its writer was killed (kill -9)
            counts["interrupted"], counts["running"] = counts["running"], 0
        failed = [{"path": r[0], "error": redact((r[1] or "").removeprefix(f"{r[0]}: "))} for r in self.conn.execute(
            "SELECT path, error FROM files WHERE status = 'failed' ORDER BY path LIMIT ? OFFSET ?",
            (-1 if failed_limit is None else failed_limit, failed_offset))]
        retrying = self.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status = 'queued' AND attempts > 0").fetchone()[0]
        return {
            "files": counts,
            "failed": failed,
            "retrying": retrying,
            "media": self.conn.execute("SELECT COUNT(*) FROM media WHERE status = 'indexed'").fetchone()[0],
            "hours_indexed": round(self.conn.execute(
                "SELECT COALESCE(SUM(duration), 0) FROM media WHERE status = 'indexed'").fetchone()[0] / 3600, 3),
            "spent": round(self.total_cost(), 4),
            "spent_by_engine": self.spent_by_engine(),
            "spent_by_file": self.spent_by_file(spent_limit),
            "spent_files": self.conn.execute("SELECT COUNT(*) FROM media WHERE cost > 0").fetchone()[0],
            "roots": [{"path": p, "status": s} for p, s in sorted(self.roots().items())],
        }


def _rollback(conn: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (it may on a full disk or an I/O
    error): the error that caused it is the one to report, never "no transaction is active"."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass


def _file(row: sqlite3.Row) -> FileRecord:
    return FileRecord(path=row["path"], size=row["size"], mtime=row["mtime"], media_id=row["media_id"],
                      status=row["status"], error=row["error"])


# a queued job (alias q) may run: no older job on its path is still running (superseded)
_NOT_BLOCKED = ("NOT EXISTS (SELECT 1 FROM jobs r WHERE r.path = q.path AND r.status = 'superseded')")


class JobQueue(jobqueue.JobQueue):
    """The job queue in the state database (the interface: ``jobqueue.JobQueue``)."""

    MAX_ATTEMPTS = 6
    BACKOFF_BASE = 5.0  # seconds: 5, 10, 20, 40, 80 ...
    BACKOFF_MAX = 3600.0

    def __init__(self, state: State):
        self.state = state

    def enqueue(self, path: str, action: str = "index", delay: float = 0.0) -> None:
        """Queue work for a path; an already queued job for it is replaced (the latest event wins)."""
        now = time.time()
        with self.state.tx() as c:
            row = c.execute("SELECT id, status FROM jobs WHERE path = ? AND status IN ('queued', 'running')",
                            (path,)).fetchone()
            if row and row["status"] == "queued":
                c.execute("UPDATE jobs SET action = ?, next_try = ?, attempts = 0, error = NULL, updated = ? "
                          "WHERE id = ?", (action, now + delay, now, row["id"]))
                return
            if row:  # running: queue a follow-up once it finishes (the partial index allows one active)
                c.execute("UPDATE jobs SET status = 'superseded', updated = ? WHERE id = ?", (now, row["id"]))
            c.execute("INSERT INTO jobs (path, action, status, next_try, created, updated) "
                      "VALUES (?, ?, 'queued', ?, ?, ?)", (path, action, now + delay, now, now))

    def claim(self) -> Job | None:
        """Take the next due job (oldest first) and mark it running; None if nothing is due.

        A job whose path still has a superseded job running waits for it: two workers never
        process the same path at once (the older one would write its stale result last)."""
        now = time.time()
        with self.state.tx() as c:
            row = c.execute("SELECT id, path, action, attempts FROM jobs q WHERE status = 'queued' AND next_try <= ? "
                            f"AND {_NOT_BLOCKED} ORDER BY next_try, id LIMIT 1", (now,)).fetchone()
            if row is None:
                return None
            c.execute("UPDATE jobs SET status = 'running', attempts = attempts + 1, updated = ? WHERE id = ?",
                      (now, row["id"]))
        return Job(id=row["id"], path=row["path"], action=row["action"], attempts=row["attempts"] + 1)

    def complete(self, job: Job) -> None:
        with self.state.tx() as c:
            c.execute("DELETE FROM jobs WHERE id = ?", (job.id,))

    def fail(self, job: Job, error: str, transient: bool, max_attempts: int | None = None,
             delay: float | None = None) -> bool:
        """Record a failure; transient ones are retried with exponential backoff (or after
        ``delay`` seconds when the service said when). True if retried."""
        now = time.time()
        with self.state.tx() as c:
            status = c.execute("SELECT status FROM jobs WHERE id = ?", (job.id,)).fetchone()
            if status and status[0] == "superseded":  # a newer event already queued fresh work
                c.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
                return True
            if transient and job.attempts < (max_attempts or self.MAX_ATTEMPTS):
                if delay is None:
                    delay = self.BACKOFF_BASE * 2 ** (job.attempts - 1)
                delay = min(self.BACKOFF_MAX, max(0.0, delay))
                c.execute("UPDATE jobs SET status = 'queued', next_try = ?, error = ?, updated = ? WHERE id = ?",
                          (now + delay, redact(error), now, job.id))
                return True
            c.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
        return False

    def not_ready(self, job: Job, delay: float, note: str | None = None) -> None:
        """The work goes on elsewhere (``NotReady``): ask again in ``delay`` s. No attempt is spent
        and no worker waits: a 12-hour cloud task is polled for 12 hours."""
        now = time.time()
        delay = min(self.BACKOFF_MAX, max(0.0, delay))
        with self.state.tx() as c:
            c.execute("UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), next_try = ?, error = ?, "
                      "updated = ? WHERE id = ? AND status = 'running'", (now + delay, redact(note), now, job.id))
            c.execute("DELETE FROM jobs WHERE id = ? AND status = 'superseded'", (job.id,))  # newer work queued

    def release(self, job: Job) -> None:
        """Put a running job back (clean shutdown): it runs again on the next start."""
        with self.state.tx() as c:
            c.execute("UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), updated = ? "
                      "WHERE id = ? AND status = 'running'", (time.time(), job.id))
            c.execute("DELETE FROM jobs WHERE id = ? AND status = 'superseded'", (job.id,))

    def recover(self) -> int:
        """After a crash: jobs left running go back to the queue. Returns how many.

        A job that was running at MAX_ATTEMPTS crashes has probably crashed the process itself
        (a native crash in an engine): it fails instead of taking every restart down with it.
        """
        now = time.time()
        message = (f"processing stopped {self.MAX_ATTEMPTS} times while this file was being worked on "
                   "(did it crash mediaindex?); fix the cause, then touch the file to retry")
        with self.state.tx() as c:
            c.execute("DELETE FROM jobs WHERE status = 'superseded'")
            for (path,) in c.execute("SELECT path FROM jobs WHERE status = 'running' AND attempts >= ?",
                                     (self.MAX_ATTEMPTS,)).fetchall():
                c.execute("UPDATE files SET status = 'failed', error = ?, updated = ? WHERE path = ?",
                          (message, now, path))
            c.execute("DELETE FROM jobs WHERE status = 'running' AND attempts >= ?", (self.MAX_ATTEMPTS,))
            n = c.execute("UPDATE jobs SET status = 'queued', next_try = ?, updated = ? WHERE status = 'running'",
                          (now, now)).rowcount
        return n

    def counts(self) -> dict[str, int]:
        out = {"queued": 0, "running": 0}
        for status, n in self.state.conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            if status in out:
                out[status] = n
        return out

    def depth(self) -> int:
        """Jobs queued or running (due or not)."""
        return self.state.conn.execute(
            "SELECT COUNT(*) FROM jobs WHERE status IN ('queued', 'running')").fetchone()[0]

    pending = depth

    def active_paths(self) -> set[str]:
        return {r[0] for r in self.state.conn.execute("SELECT path FROM jobs WHERE status IN ('queued', 'running')")}

    def is_active(self, path: str) -> bool:
        return self.state.conn.execute("SELECT 1 FROM jobs WHERE path = ? AND status IN ('queued', 'running')",
                                       (path,)).fetchone() is not None

    def next_due_in(self) -> float | None:
        """Seconds until the next claimable queued job is due (0 if one is due now), None if none
        is queued (or every queued one waits for a superseded job on its path to finish)."""
        row = self.state.conn.execute(
            f"SELECT MIN(next_try) FROM jobs q WHERE status = 'queued' AND {_NOT_BLOCKED}").fetchone()
        return None if row[0] is None else max(0.0, row[0] - time.time())
