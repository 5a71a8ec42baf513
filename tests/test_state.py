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
