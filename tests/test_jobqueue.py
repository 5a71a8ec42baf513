"""The job-queue interface: the SQLite queue implements it, and a queue written only against it
(here in memory, as a Redis one would be) drives the pipeline's one pool of workers."""
from __future__ import annotations

import threading
import time

from mediaindex.jobqueue import Job, JobQueue
from mediaindex.state import JobQueue as SqliteJobQueue


class MemoryQueue(JobQueue):
    """The smallest queue that keeps the contract (no durability: a test double of a Redis queue)."""

    def __init__(self):
        self.jobs: dict[int, dict] = {}
        self.lock = threading.Lock()
        self.next_id = 0

    def enqueue(self, path, action="index", delay=0.0):
        with self.lock:
            for j in self.jobs.values():
                if j["path"] == path and j["status"] == "queued":
                    j.update(action=action, due=time.time() + delay, attempts=0)
                    return
            self.next_id += 1
            self.jobs[self.next_id] = dict(path=path, action=action, status="queued", attempts=0,
                                           due=time.time() + delay)

    def claim(self):
        with self.lock:
            running = {j["path"] for j in self.jobs.values() if j["status"] == "running"}
            due = [(j["due"], i) for i, j in self.jobs.items()
                   if j["status"] == "queued" and j["due"] <= time.time() and j["path"] not in running]
            if not due:
                return None
            i = min(due)[1]
            j = self.jobs[i]
            j["status"], j["attempts"] = "running", j["attempts"] + 1
            return Job(i, j["path"], j["action"], j["attempts"])

    def complete(self, job):
        with self.lock:
            self.jobs.pop(job.id, None)

    def fail(self, job, error, transient, max_attempts=None, delay=None):
        with self.lock:
            if transient and job.attempts < (max_attempts or self.MAX_ATTEMPTS):
                self.jobs[job.id].update(status="queued", due=time.time() + (delay or 0.0))
                return True
            self.jobs.pop(job.id, None)
            return False

    def not_ready(self, job, delay, note=None):
        with self.lock:
            j = self.jobs[job.id]
            j.update(status="queued", due=time.time() + delay, attempts=j["attempts"] - 1)

    def release(self, job):
        self.not_ready(job, 0.0)

    def recover(self):
        return 0

    def next_due_in(self):
        with self.lock:
            dues = [j["due"] for j in self.jobs.values() if j["status"] == "queued"]
        return max(0.0, min(dues) - time.time()) if dues else None

    def counts(self):
        with self.lock:
            out = {"queued": 0, "running": 0}
            for j in self.jobs.values():
                out[j["status"]] += 1
            return out

    def active_paths(self):
        with self.lock:
            return {j["path"] for j in self.jobs.values()}


def test_the_sqlite_queue_implements_the_interface():
    assert issubclass(SqliteJobQueue, JobQueue) and not SqliteJobQueue.__abstractmethods__
    assert {"enqueue", "claim", "complete", "fail", "not_ready", "release", "recover",
            "next_due_in", "counts", "active_paths"} <= JobQueue.__abstractmethods__


def test_a_queue_written_against_the_interface_drives_the_pipeline(make_pipeline, corpus, manifest_transcriber):
    p = make_pipeline()
    p.state.jobs = queue = MemoryQueue()
    p.enqueue_plan(p.plan([str(corpus / "talks"), str(corpus / "podcasts")]))
    assert queue.depth() == 6
    outcomes = p.run_jobs(workers=2)
    assert sorted(o.status for o in outcomes) == ["indexed"] * 6
    assert queue.depth() == 0 and p.state.summary()["files"]["indexed"] == 6
