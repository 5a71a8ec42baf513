"""The durable job queue on its own: superseded jobs, claims, recovery."""
from __future__ import annotations

from mediaindex.state import State


def test_a_follow_up_job_waits_for_the_superseded_one(tmp_path):
    """A file changed while its job runs: the follow-up is queued but not handed to a second
    worker while the old job still runs (the old one would otherwise write its stale result last)."""
    state = State(tmp_path / "state.sqlite3")
    q = state.jobs
    q.enqueue("/m/a.mp3")
    q.enqueue("/m/b.mp3")
    first = q.claim()
    assert first.path == "/m/a.mp3"
    q.enqueue("/m/a.mp3")  # modified while running: the running job is superseded
    second = q.claim()
    assert second.path == "/m/b.mp3"  # other paths go on
    assert q.claim() is None  # a.mp3's follow-up waits
    assert q.next_due_in() is None
    assert q.pending() == 2  # queued follow-up + running b (the superseded job is not counted)
    assert q.fail(first, "boom", transient=False) is True  # superseded: dropped, the follow-up stays
    follow_up = q.claim()
    assert follow_up is not None and follow_up.path == "/m/a.mp3" and follow_up.id != first.id
    q.complete(follow_up)
    q.complete(second)
    assert q.pending() == 0
    state.close()


def test_recover_drops_superseded_and_requeues_running(tmp_path):
    state = State(tmp_path / "state.sqlite3")
    q = state.jobs
    q.enqueue("/m/a.mp3")
    q.claim()
    q.enqueue("/m/a.mp3")  # superseded + a queued follow-up
    q.enqueue("/m/b.mp3")
    q.claim()  # b (a's follow-up is blocked)
    state.close()
    state = State(tmp_path / "state.sqlite3")  # "after a crash"
    assert state.jobs.recover() == 1
    paths = sorted(j.path for j in iter(state.jobs.claim, None))
    assert paths == ["/m/a.mp3", "/m/b.mp3"]
    state.close()


def test_a_job_that_keeps_crashing_the_process_fails_instead_of_looping(tmp_path):
    from mediaindex.state import JobQueue, State

    state = State(tmp_path / "state.sqlite3")
    state.set_file("/m/bad.mp3", size=1, mtime=1, status="queued")
    state.jobs.enqueue("/m/bad.mp3")
    for crash in range(1, JobQueue.MAX_ATTEMPTS + 1):
        job = state.jobs.claim()  # the process dies while running it...
        assert job is not None and job.attempts == crash
        state.jobs.recover()  # ...and restarts
    assert state.jobs.pending() == 0
    rec = state.get_file("/m/bad.mp3")
    assert rec.status == "failed" and "crash" in rec.error


def test_retry_after_from_the_service_sets_the_next_try(tmp_path):
    from mediaindex.state import JobQueue, State

    state = State(tmp_path / "state.sqlite3")
    state.jobs.enqueue("/m/a.mp3")
    job = state.jobs.claim()
    assert state.jobs.fail(job, "429", transient=True, delay=120)
    assert 115 < state.jobs.next_due_in() <= 120
    job2 = state.jobs.claim()
    assert job2 is None  # not due yet
    state.jobs.enqueue("/m/b.mp3")
    job = state.jobs.claim()
    state.jobs.fail(job, "503", transient=True)
    assert state.jobs.next_due_in() <= JobQueue.BACKOFF_BASE + 1  # no hint: exponential backoff


def test_a_database_from_before_routes_gets_them_from_its_transcripts(tmp_path):
    """A state database made before the route and model columns: opening it adds them, filled
    from the stored transcripts (the old name flash-split becomes flash-chunks), and the per-file
    spend lists them."""
    import json
    import sqlite3

    from mediaindex.library import list_media

    path = tmp_path / "state.sqlite3"
    old = sqlite3.connect(path)
    old.executescript("""
        CREATE TABLE media (id TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL, duration REAL,
            probe TEXT, status TEXT NOT NULL DEFAULT 'pending', error TEXT, engine TEXT, language TEXT,
            cost REAL NOT NULL DEFAULT 0, updated REAL NOT NULL);
        CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime REAL NOT NULL, media_id TEXT,
            status TEXT NOT NULL, error TEXT, added REAL NOT NULL, updated REAL NOT NULL);
        CREATE TABLE transcripts (media_id TEXT NOT NULL, engine_key TEXT NOT NULL, data TEXT NOT NULL,
            created REAL NOT NULL, PRIMARY KEY (media_id, engine_key));
        CREATE TABLE ledger (id INTEGER PRIMARY KEY, media_id TEXT NOT NULL, engine TEXT NOT NULL,
            seconds REAL NOT NULL, cost REAL NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL DEFAULT 'transcript',
            details TEXT);
    """)
    transcript = {"engine": "qwen3-asr-flash", "model": "qwen3-asr-flash-2025-09-08", "segments": [],
                  "options": {"route": "flash-split"}, "cost": 0.025}
    old.execute("INSERT INTO media VALUES ('m1', 1, 1, 700, '{}', 'indexed', NULL, 'k', 'en', 0.025, 1)")
    old.execute("INSERT INTO files VALUES ('/m/long.mp3', 1, 1, 'm1', 'indexed', NULL, 1, 1)")
    old.execute("INSERT INTO transcripts VALUES ('m1', 'k', ?, 1)", (json.dumps(transcript),))
    old.execute("INSERT INTO ledger (media_id, engine, seconds, cost, at, kind) VALUES ('m1', 'k', 714, 0.025, 1, 'charge')")
    old.commit()
    old.close()

    state = State(path)
    try:
        [row] = state.summary()["spent_by_file"]
        assert row == {"media_id": "m1", "path": "/m/long.mp3", "engine": "k", "model": "qwen3-asr-flash-2025-09-08",
                       "route": "flash-chunks", "seconds": 714, "cost": 0.025}
        assert list_media(state.conn)["items"][0]["route"] == "flash-chunks"
    finally:
        state.close()
    State(path).close()  # opened again: nothing left to migrate
