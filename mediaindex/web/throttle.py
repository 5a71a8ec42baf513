"""Slows token guessing, shared by every worker process of one server.

A leaky bucket per client address (an IPv6 client per /64, which one machine usually holds
whole): each wrong credential adds one, the bucket drains ``limit`` per ``window`` seconds, and
while it holds ``limit`` or more that address gets 429 *before* any credential is checked, so a
429 never tells a right token from a wrong one. An address that guessed ``limit`` times within a
minute then gets one more try every ``window / limit`` seconds (6 s): the owner who mistyped
waits seconds, not a minute, and a guesser still gets ten tries a minute.

The buckets live in a small SQLite table in the data dir (``web-auth.sqlite3``): worker
processes of ``serve --workers N`` share it (N workers do not allow N times the guesses), it
needs no extra process, and a server restart keeps the counts. Only wrong credentials write; a
request with a credential reads one row by key. The table is bounded: past ``max_addresses``
rows, drained buckets go first, then the least full ones, never with a reset that would free a
blocked address.

A login cookie that does not match (the token changed since it was set, or a guess) counts once
per address and value: a page that polls with an old cookie does not lock its owner out.
"""
from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import sqlite3
import threading
import time
from pathlib import Path

logger = logging.getLogger("uvicorn.error")

FILENAME = "web-auth.sqlite3"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (client TEXT PRIMARY KEY, level REAL NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS bad_cookies (key TEXT PRIMARY KEY, at REAL NOT NULL);
"""


def address_key(host: str) -> str:
    """The unit a limit applies to: an IPv4 address, an IPv6 /64, or the text as given."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class AuthThrottle:
    """Per-address counts of wrong credentials (see the module doc)."""

    def __init__(self, path: str | Path | None = None, limit: int = 10, window: float = 60.0,
                 max_addresses: int = 10_000):
        self.limit, self.window, self.max_addresses = limit, window, max_addresses
        self.rate = limit / window  # drained per second
        self._lock = threading.Lock()
        self._conn = self._open(path)

    @staticmethod
    def _open(path) -> sqlite3.Connection:
        if path is not None:
            try:
                conn = sqlite3.connect(str(path), timeout=5, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=OFF")
                conn.executescript(_SCHEMA)
                return conn
            except sqlite3.Error as e:
                logger.warning("token guessing is counted per process: cannot use %s (%s)", path, e)
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        conn.executescript(_SCHEMA)
        return conn

    def level(self, client: str) -> float:
        """How full this address's bucket is now (0: no recent wrong credential)."""
        with self._lock:
            row = self._conn.execute("SELECT level, at FROM buckets WHERE client = ?",
                                     (address_key(client),)).fetchone()
        if row is None:
            return 0.0
        return max(0.0, row[0] - max(0.0, time.time() - row[1]) * self.rate)

    def retry_after(self, client: str, level: float | None = None) -> int | None:
        """Seconds to wait when this address is blocked, else None."""
        level = self.level(client) if level is None else level
        if level <= self.limit - 1:
            return None
        return max(1, math.ceil((level - (self.limit - 1)) / self.rate))

    def failed(self, client: str) -> None:
        """One wrong credential from this address."""
        now = time.time()
        with self._lock:
            self._conn.execute(
                "INSERT INTO buckets (client, level, at) VALUES (?, 1, ?) ON CONFLICT (client) DO UPDATE "
                "SET level = max(0, level - max(0, excluded.at - at) * ?) + 1, at = excluded.at",
                (address_key(client), now, self.rate))
            self._bound(now)

    def failed_cookie(self, client: str, value: str) -> None:
        """A login cookie that does not match: counted once per address and value."""
        if self.note_bad_cookie(client, value):
            self.failed(client)

    def note_bad_cookie(self, client: str, value: str) -> bool:
        """Remember a wrong cookie value from this address; True when it is new."""
        key = hashlib.sha256(f"{address_key(client)}\0{value}".encode("utf-8", "replace")).hexdigest()[:32]
        with self._lock:
            new = self._conn.execute("INSERT OR IGNORE INTO bad_cookies (key, at) VALUES (?, ?)",
                                     (key, time.time())).rowcount
            if new:
                self._conn.execute(
                    "DELETE FROM bad_cookies WHERE key IN (SELECT key FROM bad_cookies ORDER BY at DESC "
                    "LIMIT -1 OFFSET ?)", (self.max_addresses,))
        return bool(new)

    def succeeded(self, client: str) -> None:
        """A right credential: this address starts afresh."""
        with self._lock:
            self._conn.execute("DELETE FROM buckets WHERE client = ?", (address_key(client),))

    def _bound(self, now: float) -> None:
        """Past max_addresses rows: drop drained buckets, then the least full (never the blocked)."""
        n = self._conn.execute("SELECT count(*) FROM buckets").fetchone()[0]
        if n <= self.max_addresses:
            return
        current = "level - max(0, ? - at) * ?"
        self._conn.execute(f"DELETE FROM buckets WHERE {current} <= 0", (now, self.rate))
        n = self._conn.execute("SELECT count(*) FROM buckets").fetchone()[0]
        excess = n - self.max_addresses * 9 // 10
        if excess > 0:
            self._conn.execute(f"DELETE FROM buckets WHERE client IN (SELECT client FROM buckets "
                               f"ORDER BY {current} LIMIT ?)", (now, self.rate, excess))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
