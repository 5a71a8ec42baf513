"""Run the web app with uvicorn: in a background thread (``watch``) or blocking (``serve``).

The listening socket is bound here, before uvicorn starts, so "address in use" or "not allowed"
is raised in the caller with a clear message (and ``port=0`` picks a free port).

Several worker processes (``serve --workers N``, by default one per CPU core up to 4) are run by
``workers.py``.
"""
from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn

from ..errors import UsageError
from .app import create_app
from .security import is_loopback
from .connections import KEEP_ALIVE_TIMEOUT, protocol_class
from .workers import Supervisor

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8844
MAX_DEFAULT_WORKERS = 4


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


class UnsafeBindError(UsageError, ValueError):
    """Refused: a non-loopback address without a token would expose the library to the network."""


MIN_TOKEN_LENGTH = 16  # beyond loopback: a token that guessing (10 tries a minute) cannot find


def check_bind(host: str, token: str | None) -> None:
    if is_loopback(host):
        return
    if not token:
        raise UnsafeBindError(
            f"refusing to listen on {host}: that address is reachable from other machines and anyone there "
            "could search and play your media. Give a token (--token-file or MEDIAINDEX_TOKEN) to serve "
            "beyond this machine, or bind 127.0.0.1 (the default).")
    if len(token.strip()) < MIN_TOKEN_LENGTH:
        raise UnsafeBindError(
            f"refusing to listen on {host} with a token of {len(token.strip())} characters: beyond this "
            f"machine the token needs at least {MIN_TOKEN_LENGTH} (not counting spaces), e.g. "
            "`python -c 'import secrets; print(secrets.token_urlsafe())'`.")


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
                          lifespan="off", proxy_headers=False, server_header=False, timeout_graceful_shutdown=3,
                          http=protocol_class(), timeout_keep_alive=KEEP_ALIVE_TIMEOUT)


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
                Supervisor(config, sock, workers).run()
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
