"""Run the web app with uvicorn: in a background thread (``watch``) or blocking (``serve``).

The listening socket is bound here, before uvicorn starts, so "address in use" or "not allowed"
is raised in the caller with a clear message (and ``port=0`` picks a free port).

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
import ipaddress
import logging
import os
import select
import signal
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from .app import create_app

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8844
MAX_DEFAULT_WORKERS = 4

logger = logging.getLogger("uvicorn.error")


def cpu_count() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    """Server processes for ``serve`` when not given: one per core, at most MAX_DEFAULT_WORKERS.

    One process serves at most about 1.3 cores (Python holds the GIL for part of every search),
    so a machine with 2 cores or more answers more searches, faster, with several.
    """
    return max(1, min(cpu_count(), MAX_DEFAULT_WORKERS))


class UnsafeBindError(ValueError):
    """Refused: a non-loopback address without a token would expose the library to the network."""


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    if not is_loopback(host) and not token:
        raise UnsafeBindError(
            f"refusing to listen on {host}: that address is reachable from other machines and anyone there "
            "could search and play your media. Give a token (--token or MEDIAINDEX_TOKEN) to serve beyond "
            "this machine, or bind 127.0.0.1 (the default).")


def bind_socket(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, _, _, _, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot listen on {host}:{port}: {e.strerror}"
                               + (" (another server is using that port? try --port)" if e.errno == 98 else "")) from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _config(app, host: str, port: int, log_level: str, access_log: bool) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=access_log,
                          lifespan="off", proxy_headers=False, server_header=False, timeout_graceful_shutdown=3)


def _url(host: str, port: int) -> str:
    h = host.strip("[]")
    shown = f"[{h}]" if ":" in h else h
    if h in ("0.0.0.0", "::"):
        shown = "127.0.0.1"
    return f"http://{shown}:{port}/"


@dataclass
class ServerHandle:
    """A running server: ``.url``, ``.port``, ``.stop()``."""

    server: uvicorn.Server
    thread: threading.Thread
    sock: socket.socket
    host: str
    port: int
    error: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return _url(self.host, self.port)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        if self.thread.is_alive():
            self.server.force_exit = True
            self.thread.join(timeout)
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> "ServerHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_server(pipeline, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, *,
                 log_level: str = "warning", access_log: bool = False, startup_timeout: float = 15.0) -> ServerHandle:
    """Serve the UI and API for ``pipeline`` from a background thread; returns once it accepts."""
    check_bind(host, token)
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    server = uvicorn.Server(_config(create_app(pipeline, token), host, actual_port, log_level, access_log))
    errors: list = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as e:  # SystemExit from uvicorn included: report, do not kill the caller
            errors.append(e)

    thread = threading.Thread(target=run, name="mediaindex-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"the web server did not start on {host}:{actual_port}: "
                               f"{errors[0] if errors else 'timed out'}")
        time.sleep(0.02)
    return ServerHandle(server=server, thread=thread, sock=sock, host=host, port=actual_port, error=errors)


def run_server(pipeline, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, *,
               log_level: str = "info", access_log: bool = False, on_ready=None, workers: int = 1) -> None:
    """Serve in the foreground until Ctrl-C (``mediaindex serve``).

    ``workers`` > 1 runs that many uvicorn processes (searches are CPU-bound Python plus SQLite:
    one process uses at most about 1.3 cores), each with its own pipeline on the same data dir
    (SQLite WAL: many readers); connections are handed to the least busy one (module doc).
    """
    check_bind(host, token)
    sock = bind_socket(host, port)
    actual_port = sock.getsockname()[1]
    try:
        if workers > 1:
            os.environ["MEDIAINDEX_WEB_DATA_DIR"] = str(pipeline.config.data_dir)
            os.environ["MEDIAINDEX_WEB_INDEX"] = getattr(pipeline.index, "name", "") or ""
            os.environ["MEDIAINDEX_WEB_TOKEN"] = token or ""
            config = _config("mediaindex.web.app:app_from_env", host, actual_port, log_level, access_log)
            config.factory = True
            config.workers = workers
            if on_ready is not None:
                on_ready(_url(host, actual_port))
            if hasattr(socket, "send_fds") and hasattr(socket, "SOCK_SEQPACKET"):
                _Supervisor(config, sock, workers).run()
            else:  # pragma: no cover - Windows: uvicorn's workers on the one socket
                from uvicorn.supervisors import Multiprocess

                Multiprocess(config, sockets=[sock]).run()
            return
        server = uvicorn.Server(_config(create_app(pipeline, token), host, actual_port, log_level, access_log))
        if on_ready is not None:
            on_ready(_url(host, actual_port))
        server.run(sockets=[sock])
    finally:
        sock.close()


# ---- several workers: connections handed out by the parent ----------------------------------

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


class _Supervisor:
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
