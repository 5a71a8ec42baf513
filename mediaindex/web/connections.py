"""Connection limits for uvicorn: a connection that sends nothing is not held forever.

uvicorn closes a connection that stays idle after a response (``timeout_keep_alive``), but not
one that never sends a request, nor one that sends its headers a byte at a time, nor one whose
client stopped reading a response: about 2,000 such connections (no token needed) used up the
usual 1,024 file descriptors and locked every client out. The protocol classes here add:

- a header timeout: a request's headers must be complete ``HEADER_TIMEOUT`` seconds after the
  connection opened or the previous response ended;
- a send timeout: a response the client has not read from for ``SEND_TIMEOUT`` seconds (the
  socket buffer full all along) is dropped; a player re-requests with a Range when it resumes;
- a cap of ``MAX_PER_ADDRESS`` open connections per client address (IPv6: per /64) and server
  process; more get a 503 and are closed at once.

A request body is read by the app (only ``/api/login`` reads one without the token, and it
bounds its own wait).
"""
from __future__ import annotations

import asyncio
import socket
import struct
import time

from uvicorn.protocols.http.h11_impl import H11Protocol

from .throttle import address_key

HEADER_TIMEOUT = 10.0
SEND_TIMEOUT = 120.0
KEEP_ALIVE_TIMEOUT = 5.0
MAX_PER_ADDRESS = 64
_TICK = 0.5

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
         b"connection: close\r\ncontent-length: 40\r\nretry-after: 5\r\n\r\n"
         b"too many connections from this address\r\n")


class _Limits:
    """Mixed into a uvicorn HTTP protocol class (it has ``transport``, ``flow``, ``cycle``,
    ``client`` and ``server_state``)."""

    def connection_made(self, transport) -> None:
        _no_delay(transport)
        super().connection_made(transport)
        state = self.server_state
        if not hasattr(state, "per_address"):
            state.per_address, state.limits_task = {}, None
        self._address = address_key(self.client[0]) if self.client else "?"
        self._phase = None  # (cycle, response complete) last seen by the watchdog
        self._waiting_since = self._paused_since = time.monotonic()
        open_here = state.per_address.get(self._address, 0) + 1
        state.per_address[self._address] = open_here
        if open_here > MAX_PER_ADDRESS:
            transport.write(_BUSY)
            transport.close()
            return
        if state.limits_task is None or state.limits_task.done():
            state.limits_task = asyncio.get_running_loop().create_task(_watchdog(state))

    def connection_lost(self, exc) -> None:
        counts = self.server_state.per_address
        left = counts.get(self._address, 1) - 1
        if left > 0:
            counts[self._address] = left
        else:
            counts.pop(self._address, None)
        super().connection_lost(exc)

    def check_limits(self, now: float) -> None:
        """Close this connection when it waited too long for headers or for its reader."""
        cycle = self.cycle
        phase = (cycle, cycle is not None and cycle.response_complete)
        if phase != self._phase:
            self._phase = phase
            self._waiting_since = now
        waiting = cycle is None or cycle.response_complete
        if waiting and now - self._waiting_since > HEADER_TIMEOUT:
            self.transport.close()
            return
        if waiting or not (self.flow is not None and self.flow.write_paused):
            self._paused_since = now
        elif now - self._paused_since > SEND_TIMEOUT:
            self._reset()

    def _reset(self) -> None:
        """Drop the connection and what the kernel still holds for it (a plain close would keep
        the unsent megabytes, retrying, long after the descriptor is gone)."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.transport.abort()


def _no_delay(transport) -> None:
    """Send each write at once (TCP_NODELAY): a socket handed to uvicorn (``bind_socket``) does
    not get it, and a response written as headers then body waited for the client's delayed
    ACK, 40 ms on every request after the first on a kept-alive connection."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


async def _watchdog(state) -> None:
    """One task per server: look at every open connection each tick; ends with the last one."""
    while True:
        await asyncio.sleep(_TICK)
        conns = [c for c in list(state.connections) if isinstance(c, _Limits)]
        if not conns:
            return
        now = time.monotonic()
        for c in conns:
            if not c.transport.is_closing():
                c.check_limits(now)


class LimitedH11Protocol(_Limits, H11Protocol):
    """uvicorn's h11 protocol with the limits above."""


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is not installed: uvicorn uses h11
    LimitedHttpToolsProtocol = None
else:
    class LimitedHttpToolsProtocol(_Limits, HttpToolsProtocol):
        """uvicorn's httptools protocol with the limits above."""


def protocol_class() -> type:
    """The protocol uvicorn's ``http="auto"`` would pick, with the limits."""
    return LimitedHttpToolsProtocol or LimitedH11Protocol
