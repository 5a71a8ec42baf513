"""Watch mode: keep folders indexed, never lose a file.

``Watcher`` combines four sources of truth so that no change is missed and no half-written file
is ever transcribed:

- an **initial scan** (``Pipeline.plan``: unchanged files are skipped by size + mtime, so a
  restart over 100k files costs one ``stat`` each) after putting back jobs a crash left running;
- **watchdog events** (inotify/FSEvents/..., or ``PollingObserver`` with ``poll=`` for network
  shares where kernel events do not exist);
- a **periodic rescan** as a safety net (watchers miss events: queue overflows, remounts);
- a **root check** every few seconds: a missing root (or a mount point that is suddenly empty)
  is *offline*: its entries stay in the index and nothing under it is removed; when it comes
  back it is rescanned.

Every changed path goes through the **stability tracker** first: it is handled only once its
size and mtime have not changed for ``stable`` seconds (a copy or a download in progress is
never transcribed half-written; a delete waits the same, which also absorbs "atomic save"
patterns of delete + rename). Then it becomes a job in the durable queue of the state database
(``JobQueue``): transient failures are retried with exponential backoff, a ``kill -9`` loses
nothing (jobs left running are recovered on the next start, files left ``queued`` are found by
the initial scan). The pipeline's pool of worker threads (``jobqueue.WorkerPool``) drains it.

The pieces are small classes: ``RootMonitor`` (online/offline), ``StabilityTracker`` and
``ObserverAdapter`` (watchdog); ``Watcher`` ties them together on its scheduler thread.

Moves keep identity: the pipeline identifies media by content hash, so a renamed, moved or
copied file is never transcribed again; only its path facets change in the index.

``mediaindex watch`` is the CLI on top (``watch_cli.py``).
"""
from __future__ import annotations

import heapq
import os
import sqlite3
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


from .backends import is_local, normalize_location
from .dberrors import database_error
from .errors import FatalError, UsageError
from .jobqueue import Job, WorkerPool
from .pipeline import NullReporter, Pipeline, Reporter
from .scan import (DONE_STATUSES, IGNORE_FILE, FileStat, ScanPlan, _storable, distinct_roots, excluded_in,
                   is_candidate_name, is_ignored, is_under, offline_reason, walk)

# watchdog event types that say nothing about content changes
_IGNORED_EVENTS = frozenset({"opened", "closed_no_write"})


def _sig(st: os.stat_result | OSError | None) -> tuple[int, float] | None:
    return (st.st_size, st.st_mtime) if isinstance(st, os.stat_result) else None


def _stat_file(path: str) -> os.stat_result | OSError | None:
    """The stat of a regular file; None when missing (or not a regular file); the error when it
    cannot be read (a symlink loop, a name too long, no permission, an I/O error). Never raises:
    one odd path must not stop the others."""
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        return e
    return st if stat.S_ISREG(st.st_mode) else None


@dataclass
class _Pending:
    sig: tuple[int, float] | None  # (size, mtime) at the last change, None when missing
    due: float  # monotonic time when it may be handled, if nothing changes before


class StabilityTracker:
    """A changed path is handed on only once its size and mtime have not changed for ``stable`` s.

    Filled by the scheduler thread; read by the workers (``tracks``) and ``is_idle``.
    """

    def __init__(self, stable: float):
        self.stable = stable
        self._pending: dict[str, _Pending] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = 0
        self._lock = threading.Lock()

    def touch(self, path: str, sig: tuple[int, float] | None) -> None:
        """path changed (its signature now ``sig``): due ``stable`` s from now."""
        due = time.monotonic() + self.stable
        with self._lock:
            self._pending[path] = _Pending(sig, due)
            self._push(due, path)

    def _push(self, due: float, path: str) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, path))

    def tracks(self, path: str) -> bool:
        with self._lock:
            return path in self._pending

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._pending)

    def next_due_in(self) -> float | None:
        with self._lock:
            return max(0.0, self._heap[0][0] - time.monotonic()) if self._heap else None

    def due(self) -> list[str]:
        """The paths whose delay is over (a later change has pushed the others back)."""
        now = time.monotonic()
        ready = []
        with self._lock:
            while self._heap and self._heap[0][0] <= now:
                due, _, path = heapq.heappop(self._heap)
                entry = self._pending.get(path)
                if entry is not None and entry.due == due:
                    ready.append(path)
        return ready

    def settled(self, path: str, sig: tuple[int, float] | None) -> bool:
        """True when path is still tracked and ``sig`` is the one it had: stable. A changed one
        waits another full period."""
        with self._lock:
            entry = self._pending.get(path)
            if entry is None:
                return False
            if sig != entry.sig:
                entry.sig = sig
                entry.due = time.monotonic() + self.stable
                self._push(entry.due, path)
                return False
            return True

    def done(self, path: str, sig: tuple[int, float] | None) -> None:
        """path was handled as ``sig``: stop tracking it, unless it changed again meanwhile."""
        with self._lock:
            entry = self._pending.get(path)
            if entry is not None and entry.sig == sig and entry.due <= time.monotonic():
                del self._pending[path]


class RootMonitor:
    """Which roots are online. A missing root, a mount point seen here that is no longer mounted,
    or (when scanning) an empty root where files are known is offline: its files stay in the
    index and nothing under it is removed (the rule ``index`` uses too: ``offline_reason``)."""

    def __init__(self, roots: list[str], state, log: Callable[[str], None], storage_for: Callable):
        self.roots = roots
        self.state = state
        self.log = log
        self.storage_for = storage_for
        self.offline: set[str] = set()
        self._mounts: set[str] = set()  # roots seen as mount points (unmounted = offline)

    def root_of(self, path: str) -> str | None:
        for root in self.roots:
            if is_under(path, root):
                return root
        return None

    def is_online(self, root: str, scanning: bool = False) -> bool:
        if not is_local(root):
            storage = self.storage_for(root)
            return storage.offline_reason(root, lambda: self.state.has_files_under(root)) is None
        if os.path.ismount(root):
            self._mounts.add(root)
        return offline_reason(root, lambda: self.state.has_files_under(root), was_mount=root in self._mounts,
                              check_empty=scanning) is None

    def set_offline(self, root: str) -> None:
        if root not in self.offline:
            self.offline.add(root)
            self.state.set_root(root, "offline")
            self.log(f"offline: {root} (missing or unmounted; its files stay in the index)")

    def set_online(self, root: str) -> bool:
        """Mark root online; True if it was offline (it needs a rescan)."""
        if root not in self.offline:
            return False
        self.offline.discard(root)
        self.state.set_root(root, "online")
        return True

    def check(self) -> tuple[list[str], list[str]]:
        """Look at every root: (back online, gone offline) since the last look."""
        back, gone = [], []
        for root in self.roots:
            if not is_local(root):
                continue  # a bucket is checked by its poll: a request, not a stat every 2 s
            # coming back needs the stricter test (not an empty folder where files were)
            online = self.is_online(root, scanning=root in self.offline)
            if online and root in self.offline:
                back.append(root)
            elif not online and root not in self.offline:
                gone.append(root)
        return back, gone


class ObserverAdapter:
    """watchdog's observer (kernel events, or polling every ``poll`` s): one watch per online root;
    every event becomes a ``(kind, src, dest, is_dir)`` tuple handed to ``on_event`` (on the
    observer thread: keep it short)."""

    def __init__(self, poll: float | None, on_event: Callable[[tuple[str, str, str, bool]], None],
                 excluded: Callable[[str], bool], log: Callable[[str], None], rescan_interval: float | None):
        self.poll = poll
        self.on_event = on_event
        self.excluded = excluded
        self.log = log
        self.rescan_interval = rescan_interval
        self._observer = None
        self._watches: dict[str, object] = {}

    def start(self) -> None:
        if self.poll:
            from watchdog.observers.polling import PollingObserver

            self._observer = PollingObserver(timeout=self.poll)
        else:
            from watchdog.observers import Observer

            self._observer = Observer()

    def run(self) -> None:
        """Start delivering events (after the first roots are scheduled)."""
        if self._observer is not None:
            self._observer.start()

    def schedule(self, root: str) -> None:
        if root in self._watches or self._observer is None or not is_local(root):
            return
        from watchdog.events import FileSystemEventHandler

        adapter = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event):  # runs on the observer thread: just hand it over
                if event.event_type in _IGNORED_EVENTS:
                    return
                src = os.fsdecode(event.src_path)
                dest = os.fsdecode(event.dest_path) if event.dest_path else ""
                if adapter.excluded(src) and (not dest or adapter.excluded(dest)):
                    return  # the data dir's own writes
                adapter.on_event((event.event_type, src, dest, event.is_directory))

        folder, recursive = (root, True) if os.path.isdir(root) else (os.path.dirname(root), False)
        try:
            self._watches[root] = self._observer.schedule(Handler(), folder, recursive=recursive)
        except OSError as e:  # e.g. inotify watch limit: the periodic rescan still covers it
            self.log(f"cannot watch {root} for changes ({e}); relying on rescans every "
                     f"{self.rescan_interval or 0:.0f} s")

    def unschedule(self, root: str) -> None:
        watch = self._watches.pop(root, None)
        if watch is not None and self._observer is not None:
            try:
                self._observer.unschedule(watch)
            except Exception:
                pass

    def stop(self) -> None:
        obs, self._observer = self._observer, None
        if obs is not None:
            try:
                obs.stop()
                obs.join(5)
            except Exception:
                pass


class Watcher:
    """Keep ``roots`` indexed through ``pipeline`` until ``stop()``.

    Composed of a :class:`RootMonitor` (online/offline), a :class:`StabilityTracker`, an
    :class:`ObserverAdapter` (watchdog) and the pipeline's :class:`WorkerPool`; the scheduler
    thread here ties them together: events → tracker → stable paths → jobs.

    ``stable``: seconds a file's size and mtime must stay unchanged before it is processed.
    ``poll``: use watchdog's PollingObserver with this interval (network shares); None = native.
    ``rescan``: seconds between safety-net rescans (0 or None: never).
    ``workers``: files processed at once. ``reporter`` receives the pipeline's progress;
    ``log`` receives one line per notable event.
    """

    def __init__(self, pipeline: Pipeline, roots: Iterable[str], *, stable: float = 3.0,
                 poll: float | None = None, rescan: float | None = 600.0, workers: int = 1,
                 reporter: Reporter | None = None, log: Callable[[str], None] | None = None,
                 root_check: float = 2.0, max_attempts: int | None = None):
        self.pipeline = pipeline
        self.state = pipeline.state
        roots = [normalize_location(str(r)).rstrip(os.sep) or os.sep if is_local(str(r)) else normalize_location(str(r))
                 for r in roots]
        self.roots: list[str] = sorted(distinct_roots(roots))
        # the data dir is never watched: its own writes would be queued forever
        self.excluded: list[str] = sorted({p for r in self.roots if is_local(r)
                                           for p in excluded_in(r, [str(pipeline.config.data_dir)])})
        # roots in a storage other than local disk have no events: their listing is polled
        self.remote_roots = [r for r in self.roots if not is_local(r)]
        for root in self.remote_roots:
            pipeline.storage_for(root)  # an unknown scheme is a usage error, before any work
        self.remote_poll = float(poll or 30.0)
        self.stable = max(0.0, float(stable))
        self.poll = poll
        self.rescan_interval = rescan or None
        self.workers = max(1, int(workers))
        self.reporter = reporter or NullReporter()
        self.log = log or (lambda msg: None)
        self.root_check = root_check
        self.max_attempts = max_attempts

        self.monitor = RootMonitor(self.roots, self.state, self.log, pipeline.storage_for)
        self.offline = self.monitor.offline  # the same set
        self.tracker = StabilityTracker(self.stable)
        self.observer = ObserverAdapter(poll, self._on_event, self._excluded, self.log, self.rescan_interval)
        self.scan_done = threading.Event()
        self.last_scan: dict[str, float] = {}  # stats of the last scan (for the bench and the log)
        self.fatal: BaseException | None = None

        self._inbox: deque = deque()  # raw watchdog events, handled by the scheduler thread
        self._kick = threading.Event()  # wakes the scheduler
        self._stopping = threading.Event()
        self._stop_requested = False
        self._stopped = threading.Event()
        self._rescan_requested: set[str] = set()
        self.pool = WorkerPool(self.state.jobs, self._run_job, workers=self.workers, stop=self._stopping,
                               skip=self._skip_unsettled, after=self._after_job, on_error=self._worker_error)
        self._threads: list[threading.Thread] = []
        self._busy = 0  # scheduler is in the middle of handling something
        self._last_activity = time.monotonic()

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> "Watcher":
        """Recover interrupted jobs, start the observer, the scheduler and the workers.

        Returns at once; the initial scan runs on the scheduler thread (``scan_done`` is set
        when it has been planned and queued).
        """
        for path in self.excluded:
            self.log(f"warning: {path} is the data dir (or inside it): never scanned; better keep it "
                     "outside the watched folders")
        try:
            recovered = self.state.jobs.recover()
            if recovered:
                self.log(f"resuming {recovered} job(s) interrupted last time")
            repaired = self.pipeline.repair_index()
            if repaired:
                self.log(f"{repaired}; rebuilding it from the cached transcripts")
            rebuilt, dropped = self.pipeline.reconcile()
            self.pipeline.clean_staging()  # uploads a crash left behind
            stale = self.pipeline.requeue_stale_failures()  # the initial scan queues them
            if stale:
                self.log(f"trying again {len(stale)} failed file(s) whose cause may be gone")
        except sqlite3.Error as e:  # a full disk, a damaged state database: a clear FatalError
            fatal = self._database_error(e)
            if fatal is None:
                raise
            raise fatal from e
        if rebuilt or dropped:
            self.log(f"index repaired: {rebuilt} media rebuilt from cached transcripts, {dropped} stale dropped")
        self._start_observer()
        sched = threading.Thread(target=self._scheduler, name="mediaindex-watch", daemon=True)
        self._threads.append(sched)
        sched.start()
        self.pool.start()
        self._threads.extend(self.pool.threads)
        return self

    def stop(self, grace: float = 10.0, force: threading.Event | None = None) -> int:
        """Stop watching; let running jobs finish for up to ``grace`` seconds (or until ``force``
        is set), then release the ones still running back to the queue. Returns how many were
        released. Safe to call twice."""
        self._stop_requested = True
        self._stopping.set()
        self._kick.set()
        self.pool.stop()
        self._stop_observer()
        deadline = time.monotonic() + max(0.0, grace)
        for t in self._threads:
            while t.is_alive() and time.monotonic() < deadline and not (force and force.is_set()):
                t.join(0.1)
        released = 0
        for job in self.pool.running():
            try:
                self.state.jobs.release(job)
                self.state.set_file_status(job.path, "queued")
                released += 1
            except Exception as e:  # never let shutdown fail; recover() handles it next start
                self.log(f"could not release {job.path}: {e}")
        self._stopped.set()
        return released

    @property
    def running_jobs(self) -> int:
        return len(self.pool.running())

    def all_threads_done(self) -> bool:
        return not any(t.is_alive() for t in self._threads)

    def request_rescan(self, roots: Iterable[str] | None = None) -> None:
        """Ask for a rescan of some roots (default: all) on the scheduler thread."""
        self._rescan_requested.update(roots or self.roots)
        self._kick.set()

    # ---- waiting (tests, bench) ------------------------------------------------------------

    def is_idle(self, include_retries: bool = False) -> bool:
        """Nothing pending: scan done, no unhandled event, nothing unstable, no job due/running."""
        if not self.scan_done.is_set() or self._inbox or self._busy or self._rescan_requested:
            return False
        if self.tracker:
            return False
        if self.running_jobs:
            return False
        jobs = self.state.jobs
        if include_retries:
            return jobs.depth() == 0
        due = jobs.next_due_in()
        return (due is None or due > 0.0) and jobs.counts()["running"] == 0

    def wait_idle(self, timeout: float = 30.0, quiet: float = 0.3, include_retries: bool = False) -> bool:
        """Wait until idle for ``quiet`` seconds in a row (events may lag behind the disk)."""
        deadline = time.monotonic() + timeout
        since = None
        while time.monotonic() < deadline:
            if self.fatal:
                raise RuntimeError(f"watcher stopped: {self.fatal}") from self.fatal
            if self.is_idle(include_retries) and time.monotonic() - self._last_activity >= quiet:
                since = since or time.monotonic()
                if time.monotonic() - since >= quiet:
                    return True
            else:
                since = None
            time.sleep(0.05)
        return False

    # ---- observer --------------------------------------------------------------------------

    def _start_observer(self) -> None:
        self.observer.start()
        for root in self.roots:
            if self._root_online(root):
                self.observer.schedule(root)
            else:
                self._set_offline(root)
        self.observer.run()

    def _on_event(self, event: tuple[str, str, str, bool]) -> None:
        self._inbox.append(event)
        self._last_activity = time.monotonic()
        self._kick.set()

    def _stop_observer(self) -> None:
        self.observer.stop()

    # ---- roots -----------------------------------------------------------------------------

    def root_of(self, path: str) -> str | None:
        return self.monitor.root_of(path)

    def _root_online(self, root: str, scanning: bool = False) -> bool:
        return self.monitor.is_online(root, scanning)

    def _set_offline(self, root: str) -> None:
        self.monitor.set_offline(root)
        self.observer.unschedule(root)

    def _check_roots(self) -> None:
        back, gone = self.monitor.check()
        for root in back:
            self.monitor.set_online(root)
            self.log(f"online: {root} (back; rescanning)")
            self.observer.schedule(root)
            self._rescan_requested.add(root)
        for root in gone:
            self._set_offline(root)

    # ---- the scheduler thread --------------------------------------------------------------

    def _scheduler(self) -> None:
        try:
            self._busy += 1
            try:
                self._scan(self.roots, initial=True)
            except Exception as e:  # e.g. the database stayed locked: try again on the next tick
                if self._database_error(e):
                    raise  # a full disk, a damaged state: stop (below)
                self._report_error("initial scan", e)
                self._rescan_requested.update(self.roots)
            finally:
                self._busy -= 1
                self.scan_done.set()
            next_rescan = time.monotonic() + self.rescan_interval if self.rescan_interval else None
            next_root_check = time.monotonic() + self.root_check
            next_poll = time.monotonic() + self.remote_poll
            while not self._stopping.is_set():
                due = self.tracker.next_due_in()
                timeout = 0.5 if due is None else min(0.5, due)
                if not self._inbox:
                    self._kick.wait(timeout)
                self._kick.clear()
                if self._stopping.is_set():
                    break
                self._busy += 1
                try:
                    self._drain_inbox()
                    self._handle_due()
                    now = time.monotonic()
                    if now >= next_root_check:
                        self._check_roots()
                        next_root_check = now + self.root_check
                    if self.remote_roots and now >= next_poll:
                        self._rescan_requested.update(self.remote_roots)
                        next_poll = now + self.remote_poll
                    if next_rescan is not None and now >= next_rescan:
                        self._rescan_requested.update(self.roots)
                        next_rescan = now + self.rescan_interval
                    if self._rescan_requested:
                        roots, self._rescan_requested = sorted(self._rescan_requested), set()
                        try:
                            self._scan(roots)
                        except Exception:
                            self._rescan_requested.update(roots)  # not lost: retried next tick
                            raise
                except Exception as e:  # one bad moment (locked database, odd file) must not end
                    if self._database_error(e):
                        raise  # a full disk, a damaged state: stop (below)
                    self._report_error("watcher", e)  # the watch: report it and go on
                    self._stopping.wait(1.0)
                finally:
                    self._busy -= 1
        except BaseException as e:  # a bug here must not leave a silent, half-working watcher
            fatal = self._database_error(e)
            if fatal is not None:
                self._stop_fatal(fatal)
                return
            self.fatal = e
            self.log(self.pipeline.config.redact(f"watcher error: {type(e).__name__}: {e}"))
            self.pipeline.print_traceback()
            self._stopping.set()

    def _database_error(self, e: BaseException) -> FatalError | None:
        """A full disk, a damaged or read-only state database (see dberrors); None otherwise."""
        return None if isinstance(e, FatalError) else database_error(e, self.state.path)

    def _stop_fatal(self, e: FatalError) -> None:
        self.fatal = e
        self.log(f"stopping: {e}")
        self._stopping.set()
        self._kick.set()
        self.pool.wake()

    def _report_error(self, where: str, e: Exception) -> None:
        self.log(self.pipeline.config.redact(f"{where} error (continuing): {type(e).__name__}: {e}"))
        self.pipeline.print_traceback()

    def _touch(self, path: str, sig: tuple[int, float] | None = None, *, stat: bool = True) -> None:
        """A path changed (or may have): handle it once it has been stable for ``stable`` s."""
        if stat:
            sig = _sig(self._stat_file(path))
        self.tracker.touch(path, sig)
        self._last_activity = time.monotonic()

    def _stat_file(self, path: str) -> os.stat_result | OSError | None:
        """Like ``_stat_file``, through the path's storage backend for a URI."""
        if is_local(path):
            return _stat_file(path)
        try:
            info = self.pipeline.storage_for(path).stat(path)
        except OSError as e:
            return e
        if info is None:
            return None
        return os.stat_result((stat.S_IFREG | 0o644, 0, 0, 1, 0, 0, info.size, info.mtime, info.mtime, info.mtime))

    def _excluded(self, path: str) -> bool:
        return any(is_under(path, x) for x in self.excluded)

    def _wanted(self, path: str) -> bool:
        """Worth watching: inside a root, not hidden (relative to the root), not a temporary,
        not a known non-media type (unknown types are probed: the pipeline ignores non-media),
        not in the data dir."""
        root = self.root_of(path)
        if root is None or not _storable(path) or self._excluded(path):  # not UTF-8: the scan reports it
            return False
        rel = os.path.relpath(path, os.path.dirname(root) if path == root else root)
        parts = Path(rel).parts
        return (not any(p.startswith(".") for p in parts[:-1]) and is_candidate_name(parts[-1])
                and not is_ignored(path))

    def _known_under(self, folder: str) -> list[str]:
        if not _storable(folder):  # nothing under a name that is not UTF-8 was ever stored
            return []
        return [rec.path for rec in self.state.files_under(folder)]

    def _drain_inbox(self) -> None:
        rules_changed: set[str] = set()
        while self._inbox:
            kind, src, dest, is_dir = self._inbox.popleft()
            if not is_dir and IGNORE_FILE in (os.path.basename(src), os.path.basename(dest)):
                rules_changed.update(os.path.dirname(p) for p in (src, dest) if p)
                continue
            if is_dir:
                if kind == "modified" or kind == "attrib":
                    continue
                if kind in ("deleted", "moved"):
                    if src in self.roots:  # the root itself went away: the root check decides
                        self._check_roots()
                        continue
                    for path in self._known_under(src):
                        self._touch(path)
                if kind in ("created", "moved"):
                    target = dest if kind == "moved" else src
                    if self.root_of(target):
                        for f in walk(target):
                            if self._wanted(f.path):
                                self._touch(f.path, (f.size, f.mtime), stat=False)
                continue
            if kind == "moved":
                if self._wanted(src) or (_storable(src) and self.state.get_file(src)):
                    self._touch(src)
                if self._wanted(dest):
                    self._touch(dest)
            elif self._wanted(src) or (kind == "deleted" and _storable(src) and self.state.get_file(src)):
                self._touch(src)
        for folder in rules_changed:
            self._rules_changed(folder)

    def _rules_changed(self, folder: str) -> None:
        """A .mediaindexignore in ``folder`` was written, created, moved or deleted: every file
        below is looked at again (those it now leaves out are removed, the others indexed)."""
        if self.root_of(folder) is None or not _storable(folder):
            return
        self.log(f"{os.path.join(folder, IGNORE_FILE)} changed: looking at the files below it again")
        for path in self._known_under(folder):
            self._touch(path)
        for f in walk(folder):
            if self._wanted(f.path):
                self._touch(f.path, (f.size, f.mtime), stat=False)

    def _handle_due(self) -> None:
        ready = self.tracker.due()
        if not ready:
            return
        changed: list[FileStat] = []
        deleted: list[str] = []
        try:
            self._settle(ready, changed, deleted)
            self._enqueue(changed, deleted)
        except Exception:
            # never drop a change on an error: everything not yet queued is tracked again
            for path in ready:
                self._touch(path)
            raise

    def _settle(self, ready: list[str], changed: list[FileStat], deleted: list[str]) -> None:
        for path in ready:
            st = self._stat_file(path)
            sig = _sig(st)
            if not self.tracker.settled(path, sig):  # still changing: it waits another full period
                continue
            self._reconcile(path, st, changed, deleted)
            self.tracker.done(path, sig)

    def _reconcile(self, path: str, st: os.stat_result | OSError | None, changed: list[FileStat],
                   deleted: list[str]) -> None:
        """A stable path: queue what it needs (index, remove, or nothing)."""
        root = self.root_of(path)
        if root is None:
            return
        if isinstance(st, OSError):  # unreadable is not gone: what is known stays, nothing is queued
            self.log(f"skipped: {path}: cannot read: {st.strerror or st}")
            return
        if st is None:
            if root in self.offline or not self._root_online(root):
                self._set_offline(root)  # never purge because a mount is gone
                return
            if self.state.get_file(path) is not None:
                deleted.append(path)
            return
        if not self._wanted(path):
            if is_local(path) and is_ignored(path) and self.state.get_file(path) is not None:
                deleted.append(path)  # a .mediaindexignore now leaves it out: its remove job removes it
            return
        rec = self.state.get_file(path)
        if rec and rec.size == st.st_size and rec.mtime == st.st_mtime and (
                rec.status in DONE_STATUSES or self.state.jobs.is_active(path)):
            return  # nothing new (e.g. an event for a file already handled by the scan)
        changed.append(FileStat(path, st.st_size, st.st_mtime))

    def _enqueue(self, changed: list[FileStat], deleted: list[str]) -> None:
        if not changed and not deleted:
            return
        # index new paths before removing old ones: a moved media never leaves the index.
        # Batches of 500 per transaction: a first scan of 100k files is not 300k commits, and
        # a file's status and its job are written together.
        batch = 500
        for i in range(0, len(changed), batch):
            with self.state.tx():
                self.pipeline.enqueue_plan(ScanPlan(changed=changed[i:i + batch]))
            self._wake_workers()
        for i in range(0, len(deleted), batch):
            with self.state.tx():
                self.pipeline.enqueue_plan(ScanPlan(deleted=deleted[i:i + batch]))
        for f in changed:
            self.log(f"queued: {f.path}")
        self._wake_workers()

    def _wake_workers(self) -> None:
        self.pool.wake()

    def _scan(self, roots: list[str], initial: bool = False) -> None:
        t0 = time.perf_counter()
        online = []
        for root in roots:
            if self._root_online(root, scanning=True):
                if self.monitor.set_online(root):
                    self.observer.schedule(root)
                online.append(root)
            else:
                self._set_offline(root)
        plan = self.pipeline.plan(online) if online else ScanPlan()
        t_plan = time.perf_counter() - t0
        active = self.state.jobs.active_paths()
        wall = time.time()
        immediate: list[FileStat] = []
        for f in plan.changed:
            if not self._wanted(f.path):
                continue
            if self.tracker.tracks(f.path):
                continue
            if f.path in active:
                rec = self.state.get_file(f.path)
                if rec and rec.size == f.size and rec.mtime == f.mtime:
                    continue  # already queued (or retrying with backoff): leave it be
            if wall - f.mtime >= self.stable:
                immediate.append(f)  # untouched for longer than the stability delay
            else:
                self._touch(f.path, (f.size, f.mtime), stat=False)  # maybe still being written
        deleted = [p for p in plan.deleted if p not in active]
        deleted = [p for p in deleted if not self.tracker.tracks(p)]
        self._enqueue(immediate, deleted)
        for path, reason in plan.unreadable:
            self.log(f"skipped: {path}: {reason}")
        elapsed = time.perf_counter() - t0
        self.last_scan = {"seconds": elapsed, "plan_seconds": t_plan, "changed": len(plan.changed),
                          "unchanged": plan.unchanged, "deleted": len(plan.deleted)}
        if initial or plan.changed or plan.deleted:
            what = "scan" if initial else "rescan"
            self.log(f"{what}: {len(plan.changed)} new or changed, {plan.unchanged} unchanged, "
                     f"{len(plan.deleted)} gone ({elapsed:.1f} s)")

    # ---- workers ---------------------------------------------------------------------------

    def _run_job(self, job: Job):
        self._last_activity = time.monotonic()
        try:
            return self.pipeline.run_job(job, self.reporter, self.max_attempts)
        finally:
            self._last_activity = time.monotonic()

    def _skip_unsettled(self, job: Job) -> bool:
        """Changed again since it was queued: the tracker queues it once it is stable."""
        return job.action == "index" and self.tracker.tracks(job.path)

    def _after_job(self, job: Job, outcome) -> None:
        if outcome.status in ("failed", "retry") and job.action == "index":
            self._distrust_failure_on_stop(job)

    def _worker_error(self, job: Job | None, e: BaseException) -> bool:
        """An error the pipeline did not record: True stops the pool (and the watch)."""
        if job is None:  # the queue itself failed (e.g. the database stayed locked beyond its timeout)
            fatal = self._database_error(e)
            if fatal is not None:
                self._stop_fatal(fatal)
                return True
            self.log(f"queue error: {e}")
            return False
        if isinstance(e, (UsageError, FatalError)):  # unknown engine, full disk, broken model: nothing
            self.fatal = e                              # will work, stop (run_job put the job back)
            self.log(f"stopping: {e}")
            self._stopping.set()
            self._kick.set()
            return True
        if not isinstance(e, Exception):
            return True
        self.log(f"worker error on {job.path}: {type(e).__name__}: {e}")  # a last resort: run_job
        try:                                                                # records failures itself
            self.state.jobs.fail(job, f"{type(e).__name__}: {e}", transient=True, max_attempts=self.max_attempts)
        except Exception:
            pass
        return False

    def request_stop(self) -> None:
        """Note that a stop is coming (safe to call from a signal handler): failures from now on
        may be caused by the stop itself and are not trusted."""
        self._stop_requested = True

    def _distrust_failure_on_stop(self, job: Job) -> None:
        """Ctrl-C in a terminal also kills our ffmpeg/ffprobe children (same process group): a
        file failing at that moment is not broken. Put it back in the queue, as if released."""
        if not self._stop_requested:
            self._stopping.wait(0.05)  # the signal handler may run a moment after the child died
        if not (self._stop_requested or self._stopping.is_set()):
            return
        try:
            with self.state.tx():
                self.state.jobs.enqueue(job.path, "index")
                self.state.set_file_status(job.path, "queued")
            self.log(f"interrupted: {job.path} (back in the queue)")
        except Exception as e:
            self.log(f"could not re-queue {job.path}: {e}")


# ---- terminal progress ---------------------------------------------------------------------
