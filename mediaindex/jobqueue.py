"""The job queue: the interface every queue implements, and the one pool of workers that drains it.

Today's queue lives in the state database (``state.JobQueue``, SQLite). A shared queue (Redis:
several machines indexing one library) implements the same :class:`JobQueue`; the pipeline, the
``index`` command and ``watch`` only talk to this interface (see docs/plugins.md, "Job queue").

:class:`WorkerPool` is the only pool of workers: ``Pipeline.run_jobs`` (``index``) runs it until
nothing is due, ``Watcher`` (``watch``) until it is stopped.
"""
from __future__ import annotations

import abc
import threading
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Job:
    id: int
    path: str
    action: str  # index | remove | transcribe:NAME (index with engine NAME: the web UI's re-transcribe)
    attempts: int  # this one included
    error: str | None = None


class JobQueue(abc.ABC):
    """A durable queue of work on paths; at most one job per path is active (queued or running).

    Contract: ``enqueue`` on a path whose job is queued replaces it (the latest event wins); on a
    path whose job is running, it queues a follow-up that is claimed only once the running one
    ends (two workers never process one path at once). A claimed job ends with exactly one of
    ``complete``, ``fail``, ``not_ready`` or ``release``; a process that dies leaves it running,
    and ``recover`` (at the next start, one writer at a time) puts it back.
    """

    MAX_ATTEMPTS = 6

    @abc.abstractmethod
    def enqueue(self, path: str, action: str = "index", delay: float = 0.0) -> None:
        """Queue work for a path (see the class docstring for an active job on the same path)."""

    @abc.abstractmethod
    def claim(self) -> Job | None:
        """Take the next due job (oldest first) and mark it running; None if nothing is due."""

    @abc.abstractmethod
    def complete(self, job: Job) -> None:
        """The job is done: forget it."""

    @abc.abstractmethod
    def fail(self, job: Job, error: str, transient: bool, max_attempts: int | None = None,
             delay: float | None = None) -> bool:
        """A failure: a transient one is retried (after ``delay`` s, or an exponential backoff) while
        attempts are left. True if it will be retried."""

    @abc.abstractmethod
    def not_ready(self, job: Job, delay: float, note: str | None = None) -> None:
        """The work goes on elsewhere (``NotReady``): claimable again in ``delay`` s, no attempt spent."""

    @abc.abstractmethod
    def release(self, job: Job) -> None:
        """Put a running job back unchanged (a clean shutdown, a full disk): no attempt spent."""

    @abc.abstractmethod
    def recover(self) -> int:
        """After a crash: jobs left running go back to the queue. Returns how many."""

    @abc.abstractmethod
    def next_due_in(self) -> float | None:
        """Seconds until a queued job is due (0: now); None when nothing is queued."""

    @abc.abstractmethod
    def counts(self) -> dict[str, int]:
        """{"queued": n, "running": n}."""

    @abc.abstractmethod
    def active_paths(self) -> set[str]:
        """Paths with a job queued or running."""

    def depth(self) -> int:
        """Jobs queued or running (due or not)."""
        counts = self.counts()
        return counts["queued"] + counts["running"]

    def pending(self) -> int:
        return self.depth()

    def is_active(self, path: str) -> bool:
        """A job for path is queued or running."""
        return path in self.active_paths()


class WorkerPool:
    """``workers`` threads that claim jobs and run them, until stopped or (``drain``) until no job
    is due within ``wait_for_retries`` seconds and none is running.

    ``run(job)`` does the work and records its outcome in the queue itself. ``skip(job)``: True to
    complete a job without running it. ``after(job, outcome)`` sees each outcome.
    ``on_error(job, e)`` (job None: the claim failed) says whether to stop the pool; by default
    every error stops it, and ``join`` raises the first one.
    """

    def __init__(self, queue: JobQueue, run: Callable[[Job], Any], *, workers: int = 1, drain: bool = False,
                 wait_for_retries: float = 0.0, stop: threading.Event | None = None,
                 skip: Callable[[Job], bool] | None = None, after: Callable[[Job, Any], None] | None = None,
                 on_error: Callable[[Job | None, BaseException], bool] | None = None,
                 name: str = "mediaindex-worker"):
        self.queue = queue
        self._run = run
        self.workers = max(1, int(workers))
        self.drain = drain
        self.wait_for_retries = wait_for_retries
        self.stopping = threading.Event()
        self._external_stop = stop
        self._skip = skip
        self._after = after
        self._on_error = on_error
        self.name = name
        self.outcomes: list[Any] = []
        self.error: BaseException | None = None
        self.threads: list[threading.Thread] = []
        self._running: dict[int, Job] = {}
        self._cond = threading.Condition()
        self._gen = 0
        self._claiming = 0  # workers between a claim and its entry in _running
        self._drained = False

    def start(self) -> "WorkerPool":
        for i in range(self.workers):
            t = threading.Thread(target=self._worker, name=f"{self.name}-{i}", daemon=True)
            self.threads.append(t)
            t.start()
        return self

    def run(self) -> list[Any]:
        """Start, wait for the end, raise the error that stopped it (if any); the outcomes."""
        self.start()
        try:
            self.join()
        except BaseException:  # Ctrl-C: no new claims (a job left running is recovered next start)
            self.stop()
            raise
        if self.error is not None:
            raise self.error
        return self.outcomes

    def join(self, timeout: float | None = None) -> None:
        for t in self.threads:
            while t.is_alive():  # in slices: Ctrl-C reaches the main thread
                t.join(0.5 if timeout is None else timeout)
                if timeout is not None:
                    break

    def wake(self) -> None:
        """New work may be due: idle workers look again."""
        with self._cond:
            self._gen += 1
            self._cond.notify_all()

    def stop(self) -> None:
        """No new claims; running jobs finish (the caller may release them: ``running()``)."""
        self.stopping.set()
        self.wake()

    def running(self) -> list[Job]:
        with self._cond:
            return list(self._running.values())

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def _done(self) -> bool:
        return self.stopping.is_set() or self._drained or bool(self._external_stop and self._external_stop.is_set())

    def _fail(self, job: Job | None, e: BaseException) -> None:
        stop = True if self._on_error is None else self._on_error(job, e)
        if stop:
            with self._cond:
                if self.error is None and self._on_error is None:
                    self.error = e
            self.stop()

    def _worker(self) -> None:
        while not self._done():
            with self._cond:
                gen = self._gen
                self._claiming += 1
            job = None
            try:
                job = self.queue.claim()
            except Exception as e:  # e.g. the database stayed locked beyond its timeout
                self._fail(None, e)
                if not self._done():
                    self.stopping.wait(1.0)
                continue
            finally:
                with self._cond:
                    self._claiming -= 1
                    if job is not None:
                        self._running[job.id] = job
            if job is None:
                self._idle(gen)
                continue
            try:
                if self._skip is not None and self._skip(job):
                    self.queue.complete(job)
                    continue
                outcome = self._run(job)
                with self._cond:
                    self.outcomes.append(outcome)
                if self._after is not None:
                    self._after(job, outcome)
            except BaseException as e:
                self._fail(job, e)
            finally:
                with self._cond:
                    self._running.pop(job.id, None)
                    self._gen += 1
                    self._cond.notify_all()  # a drain may be over; a follow-up job may be claimable

    def _idle(self, gen: int) -> None:
        """Nothing due: wait for a wake-up or the next due job; a drain ends when nothing runs."""
        try:
            due = self.queue.next_due_in()
        except Exception as e:
            self._fail(None, e)
            due = 1.0
        with self._cond:
            if self.drain and not self._running and not self._claiming and (
                    due is None or due > self.wait_for_retries):
                self._drained = True
                self._cond.notify_all()
                return
            if self._gen == gen and not self._done():
                self._cond.wait(1.0 if due is None else min(1.0, due + 0.01))
