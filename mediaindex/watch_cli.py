"""``mediaindex watch``: the Watcher with live progress, the web UI and a clean shutdown.

Live progress goes on one status line when stderr is a terminal (plain event lines otherwise);
the web UI is served unless ``--no-serve``; Ctrl-C / SIGTERM lets running jobs finish within a
grace period, then releases them back to the queue (a second Ctrl-C releases them at once).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from typing import Callable

import click

from .errors import EXIT_FAILED, EXIT_INTERRUPTED, FatalError, UsageError, cli_errors, click_error, exit_status
from .pipeline import Pipeline
from .datalock import DataDirBusy, lock_data_dir
from .safety import printable, terminal_safe
from .watch import Watcher
from .web.server import DEFAULT_HOST, DEFAULT_PORT, UnsafeBindError, check_bind, start_server

def _short(path: str, width: int) -> str:
    name = terminal_safe(os.path.basename(path))
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class WatchProgress:
    """The pipeline's Reporter plus the watcher's log, for a terminal or a log file.

    On a TTY: one status line rewritten in place (queued / running / done / failed, the file
    being transcribed with its %, an ETA); events (a file indexed or failed, offline roots,
    scans) are printed above it. Otherwise: one plain line per event, nothing rewritten.
    "failed" counts the files failed now: one that failed, then was indexed, no longer counts.
    """

    def __init__(self, watcher_ref: Callable[[], Watcher | None], stream=None, tty: bool | None = None,
                 interval: float = 0.5):
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.watcher_ref = watcher_ref
        self.interval = interval
        self.lock = threading.RLock()
        self.current: dict[str, tuple[float, float | None]] = {}  # path -> (pct, started)
        self.started_at: dict[str, float] = {}
        self.done = 0
        self.failed_paths: set[str] = set()
        self.retrying = 0
        self.removed = 0
        self.avg_job: float | None = None  # moving average of seconds per job (ETA)
        self._line_shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # Reporter
    def started(self, path, duration):
        with self.lock:
            self.current[path] = (0.0, duration)
            self.started_at.setdefault(path, time.monotonic())
        if not self.tty:
            self._emit(f"transcribing: {path}" + (f" ({_duration(duration)})" if duration else ""))

    def progress(self, path, done, total):
        with self.lock:
            pct = 100.0 * done / total if total else 0.0
            self.current[path] = (min(100.0, pct), total)
            self.started_at.setdefault(path, time.monotonic())

    def finished(self, path, status, error):
        with self.lock:
            self.current.pop(path, None)
            t0 = self.started_at.pop(path, None)
            if t0 is not None and status == "indexed":
                took = time.monotonic() - t0
                self.avg_job = took if self.avg_job is None else 0.8 * self.avg_job + 0.2 * took
            if status != "failed":
                self.failed_paths.discard(path)
            if status == "indexed":
                self.done += 1
            elif status == "failed":
                self.failed_paths.add(path)
            elif status == "retry":
                self.retrying += 1
            elif status == "removed":
                self.removed += 1
        if error and error.startswith(f"{path}: "):
            error = error[len(path) + 2:]  # most pipeline errors already name the file
        if status == "failed":
            self.event(f"failed: {path}: {error}", important=True)
        elif status == "retry":
            self.event(f"will retry: {path}: {error}", important=True)
        else:
            self.event(f"{status}: {path}")

    # log lines
    def event(self, message: str, important: bool = False) -> None:
        if self.tty:
            if important or not message.startswith(("queued:", "ignored:")):
                self._emit(message)
        else:
            if not message.startswith("queued:"):
                self._emit(message)

    def log(self, message: str) -> None:
        self.event(message)

    def _emit(self, message: str) -> None:
        with self.lock:
            if self.tty and self._line_shown:
                self.stream.write("\r\x1b[K")
            self.stream.write(time.strftime("%H:%M:%S ") + printable(message) + "\n")  # every line goes here
            self.stream.flush()
            if self.tty and self._line_shown:
                self._draw()

    # the status line
    def status_line(self) -> str:
        w = self.watcher_ref()
        queued = running = 0
        if w is not None:
            try:
                counts = w.state.jobs.counts()
                queued, running = counts["queued"], counts["running"]
            except Exception:
                pass
        with self.lock:
            parts = [f"{queued} queued", f"{running} running", f"{self.done} done", f"{len(self.failed_paths)} failed"]
            if self.current:
                path, (pct, _) = next(iter(self.current.items()))
                more = f" +{len(self.current) - 1}" if len(self.current) > 1 else ""
                parts.append(f"{_short(path, 40)} {pct:3.0f}%{more}")
            if (queued or running) and self.avg_job and w is not None:
                parts.append(f"ETA {_duration(self.avg_job * (queued + running) / w.workers)}")
            elif not queued and not running:
                parts.append("idle, watching")
            if w is not None and w.offline:
                parts.append(f"{len(w.offline)} offline")
        return " · ".join(parts)

    def _draw(self) -> None:
        width = shutil.get_terminal_size((100, 20)).columns
        line = self.status_line()[: max(10, width - 1)]
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._line_shown = True

    def start(self) -> None:
        if not self.tty:
            return

        def loop():
            while not self._stop.wait(self.interval):
                with self.lock:
                    self._draw()

        self._thread = threading.Thread(target=loop, name="mediaindex-progress", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(2)
        with self.lock:
            if self.tty and self._line_shown:
                self._draw()
                self.stream.write("\n")
                self.stream.flush()
                self._line_shown = False


# ---- the CLI command -----------------------------------------------------------------------


def _start_server(pipeline, host, port, token, echo):
    """The web UI in a thread; a notice, not a stop, when it cannot start (e.g. the port is taken)."""
    try:
        handle = start_server(pipeline, host, port, token=token)
    except (OSError, RuntimeError) as e:
        echo(f"web UI not started: {e} (indexing goes on; --no-serve skips the UI)")
        return None
    echo(f"web UI: {handle.url}")
    return handle


def _lock_data_dir(pipeline):
    """One writer per data dir (see datalock.py)."""
    try:
        return lock_data_dir(pipeline.config.data_dir, "watch")
    except DataDirBusy as e:
        pipeline.close()
        raise click_error(e) from None


def _check_bind(host, token):
    """Refuse a network-reachable address without a token before anything starts."""
    try:
        check_bind(host, token)
    except UnsafeBindError as e:
        raise click_error(e) from None


@click.command("watch")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="MEDIAINDEX_DATA_DIR",
              help="Where state and the index live (default ~/.local/share/mediaindex; env MEDIAINDEX_DATA_DIR).")
@click.option("--poll", type=click.FloatRange(0.1), default=None, metavar="SECONDS",
              help="Poll for changes every SECONDS instead of kernel events (network shares, NFS/SMB); "
                   "roots in a storage plugin (s3://...) are always polled (every 30 s by default).")
@click.option("--stable", type=click.FloatRange(0), default=3.0, show_default=True, metavar="SECONDS",
              help="A file is processed once its size and mtime have not changed for this long.")
@click.option("--rescan", type=click.FloatRange(0), default=600.0, show_default=True, metavar="SECONDS",
              help="Full rescan interval, a safety net for missed events (0: never).")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True, help="Files processed at once.")
@click.option("--transcriber", help="Speech engine (default: local; see `mediaindex plugins`).")
@click.option("--index", "index_name", help="Index backend (default: sqlite).")
@click.option("--serve/--no-serve", default=True, show_default=True, help="Serve the web UI while watching.")
@click.option("--host", default=DEFAULT_HOST, show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True)
@click.option("--token", envvar="MEDIAINDEX_TOKEN", default=None,
              help="Require this token on every web API call (env MEDIAINDEX_TOKEN); needed beyond loopback "
                   "(then at least 16 characters). Prefer --token-file: the command line shows in `ps`.")
@click.option("--token-file", type=click.Path(dir_okay=False), envvar="MEDIAINDEX_TOKEN_FILE",
              help="Read the token from this file (env MEDIAINDEX_TOKEN_FILE).")
@click.option("--grace", type=click.FloatRange(0), default=10.0, show_default=True, metavar="SECONDS",
              help="On Ctrl-C/SIGTERM, how long running jobs may finish before they are put back in the queue.")
@click.option("--queue", envvar="MEDIAINDEX_QUEUE", metavar="URL", default=None,
              help="Coordinate: hand the work on files to `mediaindex worker`s through this Redis "
                   "(redis://host:6379/0; a password or rediss:// beyond loopback; env MEDIAINDEX_QUEUE); "
                   "--workers then counts the jobs handed out at once (default 32).")
def watch_command(paths, data_dir, poll, stable, rescan, workers, transcriber, index_name, serve, host, port, token,
                  token_file, grace, queue=None):
    """Keep PATHS indexed: index what is new, then follow every change until stopped.

    New, changed, moved and deleted files are handled as they happen (once a file has stopped
    changing for --stable seconds). A missing root (unmounted drive) is shown as offline and
    keeps its entries. Ctrl-C or SIGTERM stops cleanly; a second Ctrl-C stops at once (running
    jobs go back to the queue). `mediaindex status` shows progress from another terminal.
    """
    from .config import Config

    from .web.cli import resolve_token

    token = resolve_token(token, token_file) if serve else None
    if serve:
        _check_bind(host, token)
    with cli_errors(setup=True):  # a bad config, an unknown index, a damaged state database, a full disk
        pipeline = Pipeline(Config.load(data_dir), transcriber=transcriber, index=index_name)
    lock = _lock_data_dir(pipeline)
    try:
        pipeline.check_transcriber()
        if queue:  # the work goes to `mediaindex worker`s; --workers: jobs handed out at once
            pipeline.use_queue(queue)
            workers = workers if click.get_current_context().get_parameter_source("workers").name != "DEFAULT" else 32
    except UsageError as e:
        pipeline.close()
        lock.close()
        raise click_error(e) from None

    holder: dict[str, Watcher] = {}
    progress = WatchProgress(lambda: holder.get("w"))
    watcher = Watcher(pipeline, paths, stable=stable, poll=poll, rescan=rescan, workers=workers,
                      reporter=progress, log=progress.log)
    holder["w"] = watcher

    stop_requested = threading.Event()
    force = threading.Event()

    def on_signal(signum, frame):
        watcher.request_stop()
        if stop_requested.is_set():
            force.set()
        stop_requested.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    server = None
    exit_code = 0
    try:
        mode = f"polling every {poll:g} s" if poll else "following changes"
        progress.log(f"watching {', '.join(watcher.roots)} ({mode}; stable after {stable:g} s; "
                     f"{workers} worker(s); data in {pipeline.config.data_dir})")
        try:
            watcher.start()
        except FatalError as e:  # a full disk, a damaged state database: said once, no traceback
            watcher.fatal = e
            progress.log(f"stopping: {e}")
        if serve and not watcher.fatal:
            server = _start_server(pipeline, host, port, token, progress.log)
        progress.start()
        while not stop_requested.wait(0.5):
            if watcher.fatal:
                exit_code = 1
                break
        running = watcher.running_jobs
        if running and not force.is_set():
            progress.log(f"stopping: letting {running} running job(s) finish (up to {grace:g} s; "
                         "Ctrl-C again to stop now)")
        else:
            progress.log("stopping")
        released = watcher.stop(grace=grace, force=force)
        if released:
            progress.log(f"{released} job(s) put back in the queue; they resume on the next start")
        if force.is_set() and released:
            exit_code = EXIT_INTERRUPTED
    finally:
        progress.stop()
        if server is not None:
            try:
                server.stop()
            except Exception as e:
                click.echo(printable(f"web UI did not stop cleanly: {e}"), err=True)
        for s, h in old.items():
            signal.signal(s, h)
        if watcher.all_threads_done():
            pipeline.close()
    if watcher.fatal is not None and exit_code in (0, EXIT_FAILED):  # usage: 2, a fatal error or a bug: 1
        exit_code = (exit_status(watcher.fatal) or (EXIT_FAILED, ""))[0]
    sys.stdout.flush()
    sys.stderr.flush()
    if not watcher.all_threads_done():
        os._exit(exit_code)  # a worker is stuck in an engine call; its job is back in the queue
    sys.exit(exit_code)
