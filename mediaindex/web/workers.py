"""Serve with several uvicorn worker processes, connections balanced by the parent.

Several worker processes (``serve --workers N``, by default one per CPU core up to 4): the parent
accepts every connection and hands it (the file descriptor, over a Unix socket) to the worker
with the fewest open connections. Sharing one listening socket instead lets whichever worker
wakes first accept a whole burst of connections (one busy, one idle), and ``SO_REUSEPORT``
spreads them by a hash of the client port (13 to one, 7 to the other happens); keep-alive
connections stay where they land, so only a balanced hand-out uses every core.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import os
import select
import signal
import socket
import struct
import threading
import time

import uvicorn

logger = logging.getLogger("uvicorn.error")

_REPORT = struct.Struct("QQ")  # worker -> parent: (connections received so far, connections open)


class _HandoffServer(uvicorn.Server):
    """A uvicorn server (in a worker process) that listens on nothing: it serves the connections
    the parent passes over ``chan`` and reports how many it has open."""

    def __init__(self, config: uvicorn.Config, chan: socket.socket):
        super().__init__(config)
        self._chan = chan
        self._received = 0
        self._tasks: set = set()
        self._report_task = None

    async def startup(self, sockets=None) -> None:
        await super().startup(sockets=[])
        config = self.config

        def create_protocol(_loop=None):
            return config.http_protocol_class(config=config, server_state=self.server_state,
                                              app_state=self.lifespan.state, _loop=_loop)

        self._create_protocol = create_protocol
        loop = asyncio.get_running_loop()
        self._chan.setblocking(False)
        loop.add_reader(self._chan.fileno(), self._adopt, loop)
        self._report_task = loop.create_task(self._report_loop())

    def _adopt(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            try:
                msg, fds, _, _ = socket.recv_fds(self._chan, 16, 4)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg, fds = b"", []
            if not msg and not fds:  # the parent is gone: finish what is open, then exit
                loop.remove_reader(self._chan.fileno())
                self.should_exit = True
                return
            for fd in fds:
                conn = socket.socket(fileno=fd)
                self._received += 1
                if self.should_exit:
                    conn.close()
                    continue
                task = loop.create_task(loop.connect_accepted_socket(self._create_protocol, conn))
                self._tasks.add(task)
                task.add_done_callback(functools.partial(self._adopted, conn))

    def _adopted(self, conn: socket.socket, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # the client left at once
            conn.close()
        self._report()

    def _report(self) -> None:
        now = (self._received, len(self.server_state.connections))
        if now != getattr(self, "_reported", None):
            try:
                self._chan.send(_REPORT.pack(*now))
                self._reported = now
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.should_exit = True

    async def _report_loop(self) -> None:
        while True:  # connections close without telling us: look every 50 ms
            self._report()
            await asyncio.sleep(0.05)

    async def shutdown(self, sockets=None) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self._chan.fileno())
        except (OSError, ValueError):
            pass
        if self._report_task is not None:
            self._report_task.cancel()
        await super().shutdown(sockets=sockets)


def _handoff_worker(config: uvicorn.Config, sockets: list[socket.socket]) -> None:
    """A worker process's entry point (``sockets`` holds its end of the hand-out channel)."""
    _HandoffServer(config, sockets[0]).run()


class _Worker:
    def __init__(self, config: uvicorn.Config):
        from uvicorn._subprocess import get_subprocess

        self.chan, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = get_subprocess(config, functools.partial(_handoff_worker, config), [child])
        self._child = child
        self.sent = 0  # connections handed to it
        self.received = 0  # ... that it has taken (last report)
        self.open = 0  # ... and still has open (last report)
        self.started = False  # it has reported at least once (its app loaded)
        self.gone = False

    def start(self) -> None:
        self.process.start()
        self._child.close()  # the worker has its own copy
        self.chan.setblocking(False)

    @property
    def load(self) -> int:
        return self.open + self.sent - self.received

    def read_reports(self) -> None:
        while True:
            try:
                msg = self.chan.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                msg = b""
            if len(msg) != _REPORT.size:
                if not msg:
                    self.gone = True
                return
            self.received, self.open = _REPORT.unpack(msg)
            self.started = True

    def close(self) -> None:
        self.gone = True
        try:
            self.chan.close()
        except OSError:
            pass


class Supervisor:
    """Starts the workers, hands each accepted connection to the least busy one (a thread),
    replaces a worker that dies, and stops them all on SIGINT/SIGTERM."""

    def __init__(self, config: uvicorn.Config, sock: socket.socket, workers: int):
        self.config = config
        self.sock = sock
        self.n = workers
        self.workers: list[_Worker] = []
        self.lock = threading.Lock()
        self.should_exit = threading.Event()
        self.failed: str | None = None
        self._next = 0

    def run(self) -> None:
        old = {sig: signal.signal(sig, lambda *_: self.should_exit.set())
               for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        logger.info("Started parent process [%d], %d workers", os.getpid(), self.n)
        try:
            for _ in range(self.n):
                self._spawn()
            self.sock.setblocking(False)
            dispatcher = threading.Thread(target=self._dispatch, name="mediaindex-dispatch", daemon=True)
            dispatcher.start()
            while not self.should_exit.wait(0.5):
                self._keep_alive()
            dispatcher.join(5)
        finally:
            self._stop_all()
            for sig, handler in old.items():
                signal.signal(sig, handler)
        if self.failed:
            raise RuntimeError(self.failed)

    def _spawn(self, idx: int | None = None) -> None:
        w = _Worker(self.config)
        w.start()
        with self.lock:
            if idx is None:
                self.workers.append(w)
            else:
                self.workers[idx].close()
                self.workers[idx] = w

    def _keep_alive(self) -> None:
        for idx, w in enumerate(list(self.workers)):
            if w.process.is_alive():
                continue
            w.process.join()
            if not w.started:
                # it died before serving: the app cannot load (bad index, ...), and would not on
                # every restart either
                self.failed = f"a server worker could not start (exit code {w.process.exitcode})"
                self.should_exit.set()
                return
            logger.warning("Worker process [%s] died (exit code %s); starting another",
                           w.process.pid, w.process.exitcode)
            self._spawn(idx)

    def _dispatch(self) -> None:
        while not self.should_exit.is_set():
            with self.lock:
                workers = [w for w in self.workers if not w.gone]
            try:
                readable, _, _ = select.select([self.sock, *(w.chan for w in workers)], [], [], 0.5)
            except (OSError, ValueError):  # a channel was closed meanwhile
                continue
            for w in workers:
                if w.chan in readable:
                    w.read_reports()
            if self.sock not in readable:
                continue
            while True:  # every waiting connection, each to the least busy worker at that moment
                try:
                    conn, _ = self.sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    break
                except OSError as e:  # out of file descriptors, ...: retry in a moment
                    logger.warning("accept failed: %s", e)
                    time.sleep(0.1)
                    break
                try:
                    self._hand(conn, workers)
                finally:
                    conn.close()  # the worker has its own copy

    def _hand(self, conn: socket.socket, workers: list[_Worker]) -> None:
        self._next += 1
        n = len(workers)
        # least open connections first; ties go round-robin
        order = sorted(range(n), key=lambda i: (workers[i].load, (i - self._next) % max(n, 1)))
        for attempt in range(2):
            for i in order:
                w = workers[i]
                if w.gone:
                    continue
                try:
                    socket.send_fds(w.chan, [b"c"], [conn.fileno()])
                    w.sent += 1
                    return
                except (BlockingIOError, InterruptedError):
                    continue  # its queue is full: the next one
                except OSError:  # it died: the monitor replaces it
                    w.gone = True
            if attempt == 0:
                select.select([], [w.chan for w in workers if not w.gone], [], 5.0)
        logger.warning("no worker took a connection; closed it")

    def _stop_all(self) -> None:
        self.should_exit.set()
        with self.lock:
            workers = list(self.workers)
        for w in workers:
            if w.process.is_alive():
                try:
                    os.kill(w.process.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.monotonic() + 10
        for w in workers:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.close()
