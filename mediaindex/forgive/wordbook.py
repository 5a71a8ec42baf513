"""The core's own vocabulary of a library, for an index backend that has none to offer.

The embedded index keeps its words itself; a server (Meilisearch) cannot list its words with
their phonetic keys, so the core keeps them while it writes: every word of the segments and
metadata it hands the backend, its phonetic key (:func:`~mediaindex.forgive.vocab.sound_key`)
and in how many segments of the library it is. The counts go down when a media is replaced or
deleted (each media's word ids are kept with it), so a word that left the library is no longer
offered. One side SQLite file per data dir (``words.sqlite3``), in WAL mode: the web server's
processes read what the indexer writes.

Bounded: one row per distinct word (at most :data:`MAX_WORD` characters) and one per media.
"""
from __future__ import annotations

import re
import sqlite3
import threading
from array import array
from collections import Counter
from pathlib import Path
from typing import Iterable

from mediaindex.textsearch import _TOKEN_RE, cut, fold

from .vocab import Vocabulary, sound_key

MAX_WORD = 40  # longer tokens (hashes, URLs) are nobody's typo
_ASCII_WORD = re.compile(r"[a-z0-9]+")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS words(id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE, sound TEXT,
                                 n INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS media(id TEXT PRIMARY KEY, words BLOB NOT NULL);
"""


def words_of(text: str) -> set[str]:
    """The folded words of a text as the query parser folds them (Chinese/Japanese cut by jieba)."""
    low = text.lower()
    if low.isascii():
        return {w for w in _ASCII_WORD.findall(low) if len(w) <= MAX_WORD}
    out: set[str] = set()
    for m in _TOKEN_RE.finditer(low):
        if m.lastgroup == "cjk":
            out.update(w for w in cut(m.group()) if w.strip())
        else:
            out.add(fold(m.group()))
    return {w for w in out if len(w) <= MAX_WORD}


class WordBook:
    """Words of one library with their sound keys and segment counts (see the module doc)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._vocab = Vocabulary()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # derived data: reconcile rebuilds what a crash loses
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    # ---- writes ----------------------------------------------------------------------------

    def set_media(self, media_id: str, texts: Iterable[str]) -> None:
        """A media's words are now these (one text per segment; metadata counts as one more)."""
        counts: Counter[str] = Counter()
        for t in texts:
            if t:
                counts.update(words_of(t))
        with self._lock:
            c = self._conn()
            have = self._ids_of(c, counts)
            new = [(w, sound_key(w)) for w in counts if w not in have]  # the CPU work, outside the transaction
            c.execute("BEGIN IMMEDIATE")
            try:
                self._forget(c, media_id)
                if new:
                    c.executemany("INSERT OR IGNORE INTO words(term, sound) VALUES(?, ?)", new)
                    have.update(self._ids_of(c, [w for w, _ in new]))
                pairs = [(n, have[w]) for w, n in counts.items()]
                c.executemany("UPDATE words SET n = n + ? WHERE id = ?", pairs)
                blob = array("i", [x for n, i in pairs for x in (i, n)]).tobytes()
                c.execute("INSERT OR REPLACE INTO media(id, words) VALUES(?, ?)", (media_id, blob))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @staticmethod
    def _ids_of(c: sqlite3.Connection, words: Iterable[str]) -> dict[str, int]:
        words = list(words)
        out: dict[str, int] = {}
        for k in range(0, len(words), 500):
            chunk = words[k:k + 500]
            out.update(c.execute(f"SELECT term, id FROM words WHERE term IN ({','.join('?' * len(chunk))})",
                                 chunk).fetchall())
        return out

    @staticmethod
    def _forget(c: sqlite3.Connection, media_id: str) -> None:
        row = c.execute("SELECT words FROM media WHERE id = ?", (media_id,)).fetchone()
        if row is None:
            return
        a = array("i")
        a.frombytes(row[0])
        c.executemany("UPDATE words SET n = max(0, n - ?) WHERE id = ?",
                      [(a[k + 1], a[k]) for k in range(0, len(a), 2)])
        c.execute("DELETE FROM media WHERE id = ?", (media_id,))

    def remove(self, media_id: str) -> None:
        """The media left the index: its words count one segment less each."""
        with self._lock:
            c = self._conn()
            c.execute("BEGIN IMMEDIATE")
            try:
                self._forget(c, media_id)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    # ---- reads -----------------------------------------------------------------------------

    def media_ids(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._conn().execute("SELECT id FROM media")}

    def count(self, word: str) -> int:
        """Segments of the library with this word (0: not there, or no longer)."""
        with self._lock:
            r = self._conn().execute("SELECT n FROM words WHERE term = ?", (word,)).fetchone()
        return int(r[0]) if r else 0

    def has_prefix(self, prefix: str) -> bool:
        """Does some word of the library start with ``prefix``?"""
        with self._lock:
            r = self._conn().execute("SELECT 1 FROM words WHERE term >= ? AND term < ? AND n > 0 LIMIT 1",
                                     (prefix, prefix + "\U0010ffff")).fetchone()
        return r is not None

    def vocabulary(self) -> Vocabulary:
        """Every word ever written, in memory (typo and sound-alike candidates; check ``count``),
        with the words other processes added since the last call."""
        with self._lock:
            v = self._vocab
            rows = self._conn().execute("SELECT id, term, sound FROM words WHERE id > ?", (v.last_id,)).fetchall()
        if rows:
            v.add(rows)
        return v

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
