"""The embedded default index ``sqlite``: SQLite FTS5 in one file in the data dir.

Layout (``index.sqlite3``):

- ``media``: one row per indexed media and library (so a media without speech is still "in
  the index"). ``library`` (on ``media`` and ``docs``) is the id of the data dir that wrote the
  row: several data dirs may share one index file (``[sqlite] path``); each writes, lists and
  reconciles only its own rows, and searches all of them (``SearchQuery.library`` narrows).
- ``facet_totals``: documents per (library, facet, value), and ``facet_counts``: per (library,
  language, emotion, kind, folder), both kept by every write: facets of the empty query read the
  first (a few rows), or the second under a filter; facets of a word count the newest
  :data:`FACET_SAMPLE` matches and scale them up when there are more (``estimated``).
- ``docs``: one row per segment, with the media facets copied in (path, folder, title,
  language, emotion, kind, duration, mtime) so filters need no join; the original text; and the
  word-time map: ``wspans`` (int32 pairs: each engine word's character span in ``text``) and
  ``wtimes`` (float64: each word's start). ``body``/``extra`` hold what was handed to FTS when it
  differs from ``text`` (CJK text segmented with jieba, see :mod:`mediaindex.textsearch`).
- ``fts``: a contentless FTS5 table (``unicode61 remove_diacritics 2``: case-insensitive,
  diacritics folded) over ``body`` and ``extra``, rowid = ``docs.id``. Deleting a document
  hands FTS5 the exact values it indexed (kept in ``docs``).
- ``fts_vocab``: ``fts5vocab`` row view, for document frequencies (partial-match strategy).
- ``vocab``: every word ever indexed (segment text and media metadata) with its phonetic keys;
  read into memory (:class:`mediaindex.forgive.vocab.Vocabulary`) for typo and sound-alike
  candidates. It never shrinks; a candidate is used only while its document frequency is > 0.
- ``media_fts``: one FTS5 row per media (rowid = ``media.rowid``): title, artist/album artist/
  composer, album, file name, folder.

Search: the query is parsed (:func:`mediaindex.forgive.query.parse_search`: words, phrases,
prefix, ``-word``, ``OR``; never passed on as FTS5 syntax), ANDed and ranked with bm25. Then,
when some query word has alternatives (:func:`mediaindex.forgive.query.expand`: numbers,
spellings, compounds, typos and sound-alikes of a word the index lacks), one more query with
them ORed in adds the matches found only that way, after the exact ones. Media whose metadata
has every word come first (their best segment, else their start).

Matches are fetched newest first, at most :data:`RANK_CAP` of them; when the words are
frequent, only the newest :data:`PY_RANK` are scored (same bm25 formula, in Python), so a query
for a word in half the index costs a few ms instead of ranking 300k rows. With more
matches than RANK_CAP, the ranking is bm25 among the newest matches and ``total`` is
estimated from the density of the matches seen (exact, from ``fts5vocab``, when the query is one
plain word without filters). When no document has every word, a Meilisearch-like fallback runs cheap
AND queries with words dropped (never-seen words first, then each single word, then the most
frequent words) and returns the documents that match the most words (``partial=True``). Its
work is bounded whatever the query's length (the :data:`PARTIAL_WORDS` rarest words, at most
:data:`PARTIAL_QUERIES` sub-queries, none after :data:`PARTIAL_SECONDS`); ``stopped_early=True``
says a bound cut it short.

The hit's ``time`` is the start of the engine word under the first match of the shortest stretch
of the original text that has the most query words (not an earlier stop word).

Concurrency: one connection per thread, WAL mode, ``busy_timeout``; writes are serialised in
process by a lock and each media's write is one ``BEGIN IMMEDIATE`` transaction, so readers
(the web server) never see a half-written media.

Damage: a query that finds the file damaged raises ``IndexDamaged`` and leaves a mark
(``index.sqlite3.damaged``); ``repair()`` (run by ``index`` and ``watch`` at start) sets a marked
file, or one that fails ``PRAGMA quick_check``, aside, and the pipeline rebuilds it from the
cached transcripts. Readers in other processes notice the new file (its inode) and reopen it.
"""
from __future__ import annotations

import functools
import math
import os
import re
import sqlite3
import threading
import time as _time
from array import array
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Any, Iterable, Sequence

from mediaindex.backends import FacetCounts, IndexBackend, TransientError
from mediaindex.dberrors import IndexDamaged, database_error, is_damaged
from mediaindex.forgive.query import KINDS, AnyOf, Excluded, best_start, expand, flatten, match_cost, parse_search
from mediaindex.forgive.query import forgiven_summary as _forgiven_summary
from mediaindex.forgive.vocab import Vocabulary, sound_key
from mediaindex.hookspecs import hookimpl
from mediaindex.models import Media, SearchHit, SearchQuery, SearchResult, Segment
from mediaindex.textsearch import (Term, find_matches, fold, fts5_quote, fts5_term, index_text,
                                   in_dictionary, snippet,
                                   time_at, word_spans)

SCHEMA_VERSION = 1
RANK_CAP = 1000  # at most this many matches are considered (newest first)
PARTIAL_FETCH = 50  # hits fetched per sub-query in the partial-match fallback
PARTIAL_WORDS = 10  # the fallback weighs at most this many words of a query (the rarest)
PARTIAL_QUERIES = 32  # and at most this many sub-queries (no query of PARTIAL_WORDS words needs more)
PARTIAL_SECONDS = 0.25  # and starts none after this long
DF_TTL = 60.0  # seconds a document frequency stays cached (it only steers ranking/strategy)
DF_PROBE_CAP = 20000  # prefixes: matches counted up to this
BM25_WEIGHTS = (1.0, 0.5)  # body, extra (CJK sub-words)
BM25_DF_BUDGET = 60000  # FTS5 bm25() when the query words are in at most this many documents
FACET_SAMPLE = 2000  # facets of a query count at most this many matches (newest), then scale
PY_RANK = 300  # otherwise rank the newest this many matches here
FORGIVE_FETCH = 50  # matches found only through forgiving alternatives ranked per query
TITLE_HITS = 5  # media matched by title/artist/album/file name/folder, at most

_DOC_COLS = ("library, media_id, seg, path, folder, title, language, emotion, kind, duration, mtime, "
             "t_start, t_end, text, body, extra, wspans, wtimes, source, events, month")

_MEDIA_TABLE = """CREATE TABLE IF NOT EXISTS media(
    library TEXT NOT NULL DEFAULT '', id TEXT NOT NULL, path TEXT, folder TEXT, title TEXT, language TEXT,
    duration REAL, mtime REAL, segments INTEGER, PRIMARY KEY(library, id))"""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
""" + _MEDIA_TABLE + """;
CREATE TABLE IF NOT EXISTS docs(
    id INTEGER PRIMARY KEY, library TEXT NOT NULL DEFAULT '',
    media_id TEXT NOT NULL, seg INTEGER, path TEXT, folder TEXT, title TEXT,
    language TEXT, emotion TEXT, kind TEXT, duration REAL, mtime REAL,
    t_start REAL, t_end REAL, text TEXT NOT NULL, body TEXT, extra TEXT,
    wspans BLOB, wtimes BLOB, source TEXT, events TEXT, month TEXT);
CREATE INDEX IF NOT EXISTS docs_media ON docs(media_id, seg);
CREATE TABLE IF NOT EXISTS facet_counts(
    library TEXT NOT NULL, language TEXT NOT NULL, emotion TEXT NOT NULL, kind TEXT NOT NULL,
    folder TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY(library, language, emotion, kind, folder));
CREATE TABLE IF NOT EXISTS facet_totals(
    library TEXT NOT NULL, facet TEXT NOT NULL, value TEXT NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY(library, facet, value));
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    body, extra, content='', prefix='2 3', tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_vocab USING fts5vocab(fts, 'row');
CREATE TABLE IF NOT EXISTS vocab(id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE, sound TEXT);
CREATE VIRTUAL TABLE IF NOT EXISTS media_fts USING fts5(
    title, people, album, file, folder, tokenize='unicode61 remove_diacritics 2');
"""


_SIMPLE_TOKEN_RE = re.compile(r"[^\W_]+")
_ASCII_TOKEN_RE = re.compile(r"[A-Za-z0-9]+")  # the same tokens as _SIMPLE_TOKEN_RE in ASCII text
_ASCII_SEPARATORS = str.maketrans({chr(i): " " for i in range(128) if not chr(i).isalnum()})


def _events_text(events: list[str] | None) -> str | None:
    """Events as ' a b ' (spaces around each name): a filter matches a whole name with instr()."""
    return f" {' '.join(events)} " if events else None


def _guarded(method):
    """An index locked past the busy timeout is a TransientError (the job waits: the contract for an
    outage). A damaged file or a full disk becomes a clear FatalError (see dberrors); damage is also
    marked on disk, so the next ``index`` or ``watch`` rebuilds the index even when its quick
    check finds nothing (a broken FTS5 page is only seen by a query)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kw):
        try:
            return method(self, *args, **kw)
        except sqlite3.Error as e:
            if isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e)):
                raise TransientError(f"the search index {self.path} is busy (locked by another process"
                                     f" for {self.BUSY_TIMEOUT:.0f} s): will retry") from e
            fatal = database_error(e, self.path, index=True)
            if fatal is None:
                raise
            if isinstance(fatal, IndexDamaged):
                self._mark_damaged(str(e))
            raise fatal from e
    return wrapper


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None


@lru_cache(maxsize=4096)
def _ascii_prefix_re(prefix: str) -> re.Pattern:
    """Tokens starting with ``prefix`` in lower-case ASCII text (one match per such token)."""
    return re.compile(r"(?<![a-z0-9])" + re.escape(prefix))


class SqliteIndex(IndexBackend):
    """SQLite FTS5 index in one file. Cheap to construct; the database opens on first use."""

    name = "sqlite"
    forgives = KINDS  # all of it, from its own vocabulary (mediaindex.forgive)
    REOPEN_CHECK = 1.0  # seconds: how often a thread checks that its file was not replaced
    BUSY_TIMEOUT = 30.0  # seconds a write waits for another process's lock, then TransientError

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()
        self._lock = threading.Lock()  # schema + connection list + df cache
        self._write_lock = threading.RLock()
        self._conns: list[sqlite3.Connection] = []
        self._ready = False
        self._generation = 0  # bumped when the file is found damaged: every thread reopens it
        self._df_cache: dict[str, tuple[float, int]] = {}
        self._marker = self.path.with_name(self.path.name + ".damaged")
        self._vocab = Vocabulary()  # every word indexed (typo and sounds-like candidates)
        self._vocab_key: tuple | None = None  # (generation, inode) of the file it was read from

    # ---- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.generation == self._generation and not self._replaced():
            return c
        if c is not None:  # the file was found damaged, or set aside and rebuilt by another process
            self._drop(c)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        generation = self._generation
        c = sqlite3.connect(str(self.path), timeout=self.BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            self._setup(c)
        except BaseException:
            c.close()
            raise
        self._local.conn, self._local.generation = c, generation
        self._local.inode, self._local.checked = _inode(self.path), _time.monotonic()
        return c

    def _replaced(self) -> bool:
        """Is the file this thread reads no longer the one at the path (set aside by a repair)?"""
        now = _time.monotonic()
        if now - self._local.checked < self.REOPEN_CHECK:
            return False
        self._local.checked = now
        return _inode(self.path) != self._local.inode

    def _setup(self, c: sqlite3.Connection) -> None:
        c.execute(f"PRAGMA busy_timeout={int(self.BUSY_TIMEOUT * 1000)}")
        c.execute("PRAGMA synchronous=FULL")  # the contract: a write is durable when it returns
        c.execute("PRAGMA temp_store=MEMORY")
        c.execute("PRAGMA cache_size=-32000")
        with self._lock:
            if not self._ready:
                c.execute("PRAGMA journal_mode=WAL")
                c.executescript(_SCHEMA)
                cols = {r[1] for r in c.execute("PRAGMA table_info(docs)")}
                for col in ("source", "events"):  # an index made before enrichment had neither
                    if col not in cols:
                        c.execute(f"ALTER TABLE docs ADD COLUMN {col} TEXT")
                if "month" not in cols:  # nor dates: the file's month until the next reindex reads its tags
                    _add_month(c)
                row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    c.execute("INSERT OR REPLACE INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
                _migrate(c)
                _backfill(c)
                if self.library:
                    _adopt(c, self.library)
                self._ready = True
            self._conns.append(c)

    def _drop(self, c: sqlite3.Connection) -> None:
        with self._lock:
            if c in self._conns:
                self._conns.remove(c)
        try:
            c.close()
        except sqlite3.Error:
            pass
        self._local.conn = None

    def _mark_damaged(self, reason: str) -> None:
        """Remember the damage (for the next writer) and make every thread reopen the file."""
        try:
            self._marker.write_text(reason + "\n")
        except OSError:
            pass
        with self._lock:
            self._ready = False
            self._generation += 1
            self._df_cache.clear()
            self._n_cache = None

    def _damage(self) -> str | None:
        """Why the file is damaged (a query's mark, its header, ``PRAGMA quick_check``), or None."""
        if self._marker.exists():
            return self._marker.read_text(errors="replace").strip() or "marked damaged"
        if not self.path.exists():
            return None
        try:
            c = sqlite3.connect(str(self.path), timeout=30.0)
            try:
                rows = c.execute("PRAGMA quick_check").fetchall()
            finally:
                c.close()
        except sqlite3.DatabaseError as e:
            if is_damaged(e):
                return str(e)
            raise
        problems = [r[0] for r in rows if r[0] != "ok"]
        return "; ".join(problems[:3]) if problems else None

    @_guarded
    def repair(self) -> str | None:
        """A damaged file is moved aside (``index.damaged-<time>.sqlite3``, to inspect or delete) and
        an empty index takes its place; the pipeline's reconcile then rebuilds it from the cached
        transcripts. Costs one ``PRAGMA quick_check`` (reads the whole file once)."""
        reason = self._damage()
        if reason is None:
            return None
        self.close()
        with self._lock:
            self._ready = False
            self._generation += 1
        stamp = _time.strftime("%Y%m%d-%H%M%S")
        aside = self.path.with_name(f"{self.path.stem}.damaged-{stamp}{self.path.suffix}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.stem}.damaged-{stamp}-{n}{self.path.suffix}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(f"{self.path}{suffix}")
            if src.exists():
                os.replace(src, f"{aside}{suffix}")
        self._marker.unlink(missing_ok=True)
        return f"the search index {self.path} was damaged ({reason}): moved aside to {aside.name}"

    def close(self) -> None:
        with self._lock:
            conns, self._conns = self._conns, []
        for c in conns:
            try:
                c.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def _write(self):
        return _WriteTxn(self)

    # ---- writes ----------------------------------------------------------------------------

    @staticmethod
    def _rows(library: str, media: Media, segments: list[Segment]) -> list[tuple]:
        path, folder, title, month = media.path, media.folder, media.title, media.month
        rows = []
        for seg in segments:
            text = seg.text or ""
            body, extra = index_text(text)
            spans, times = word_spans(text, seg.words)
            rows.append((library, media.id, seg.index, path, folder, title, seg.language or media.language,
                         seg.emotion, seg.kind or "speech", media.duration, media.mtime,
                         float(seg.start), float(seg.end), text, None if body == text else body,
                         extra, array("i", spans).tobytes(), array("d", times).tobytes(),
                         seg.source or "asr", _events_text(seg.events), month))
        return rows

    @_guarded
    def upsert(self, media: Media, segments: list[Segment]) -> None:
        lib = self.library or ""
        rows = self._rows(lib, media, segments)  # the CPU work, outside the write lock
        meta = _media_meta(media)
        new_words = self._new_words([*(r[14] or r[13] for r in rows), *(r[15] for r in rows if r[15]), *meta])
        with self._write() as c:
            self._delete_docs(c, lib, media.id)
            _delete_meta(c, lib, media.id)
            c.execute("INSERT OR REPLACE INTO media(library, id, path, folder, title, language, duration, mtime,"
                      " segments) VALUES(?,?,?,?,?,?,?,?,?)",
                      (lib, media.id, media.path, media.folder, media.title, media.language, media.duration,
                       media.mtime, len(rows)))
            cur = c.execute("SELECT coalesce(max(id), 0) FROM docs")
            first = cur.fetchone()[0] + 1
            c.executemany(f"INSERT INTO docs(id, {_DOC_COLS}) VALUES({','.join('?' * 22)})",
                          [(first + i, *r) for i, r in enumerate(rows)])
            c.execute("INSERT INTO fts(rowid, body, extra) SELECT id, coalesce(body, text), extra FROM docs"
                      " WHERE id >= ?", (first,))
            _add_facets(c, lib, rows)
            _insert_meta(c, lib, media.id, meta)
            c.executemany("INSERT OR IGNORE INTO vocab(term, sound) VALUES(?, ?)", new_words)

    def _sync_vocab(self) -> Vocabulary:
        """The vocabulary, with the words other connections (or processes) added since; read
        anew from a file that was rebuilt (repaired, here or by another process)."""
        c = self._conn()
        key = (self._local.generation, self._local.inode)
        if key != self._vocab_key:
            self._vocab, self._vocab_key = Vocabulary(), key
        v = self._vocab
        rows = c.execute("SELECT id, term, sound FROM vocab WHERE id > ?", (v.last_id,)).fetchall()
        if rows:
            v.add(rows)
        return v

    def _new_words(self, texts: list[str]) -> list[tuple[str, str | None]]:
        """(word, sound key) of the tokens of ``texts`` that the vocabulary lacks."""
        vocab = self._sync_vocab()
        return [(w, sound_key(w)) for w in _tokens(texts) - vocab.words]

    @staticmethod
    def _delete_docs(c: sqlite3.Connection, library: str, media_id: str) -> None:
        _count_facets(c, library, media_id, -1)
        c.execute("INSERT INTO fts(fts, rowid, body, extra) SELECT 'delete', id, coalesce(body, text), extra"
                  " FROM docs WHERE media_id = ? AND library = ?", (media_id, library))
        c.execute("DELETE FROM docs WHERE media_id = ? AND library = ?", (media_id, library))

    @_guarded
    def update_media(self, media: Media) -> None:
        meta = _media_meta(media)
        new_words = self._new_words(list(meta))
        lib = self.library or ""
        with self._write() as c:
            _delete_meta(c, lib, media.id)
            _count_facets(c, lib, media.id, -1)  # the folder may change
            c.execute("UPDATE docs SET path=?, folder=?, title=?, duration=?, mtime=?, month=? WHERE media_id=?"
                      " AND library=?", (media.path, media.folder, media.title, media.duration, media.mtime,
                                         media.month, media.id, lib))
            c.execute("UPDATE media SET path=?, folder=?, title=?, language=coalesce(?, language), duration=?,"
                      " mtime=? WHERE id=? AND library=?",
                      (media.path, media.folder, media.title, media.language, media.duration, media.mtime,
                       media.id, lib))
            _count_facets(c, lib, media.id, +1)
            _insert_meta(c, lib, media.id, meta)
            c.executemany("INSERT OR IGNORE INTO vocab(term, sound) VALUES(?, ?)", new_words)

    @_guarded
    def delete(self, media_id: str) -> None:
        lib = self.library or ""
        with self._write() as c:
            self._delete_docs(c, lib, media_id)
            _delete_meta(c, lib, media_id)
            c.execute("DELETE FROM media WHERE id = ? AND library = ?", (media_id, lib))

    @_guarded
    def media_ids(self) -> set[str]:
        """This library's media (an index shared with other data dirs holds theirs too)."""
        return {r[0] for r in self._conn().execute("SELECT id FROM media WHERE library = ?", (self.library or "",))}

    @_guarded
    def optimize(self) -> None:
        """Merge the FTS b-trees into one (after a bulk load; optional)."""
        with self._write() as c:
            c.execute("INSERT INTO fts(fts) VALUES('optimize')")

    # ---- query helpers ---------------------------------------------------------------------

    @staticmethod
    def _filters(q: SearchQuery) -> tuple[str, list[Any]]:
        sql, params = [], []
        for col in ("language", "emotion", "kind", "media_id", "library"):
            v = getattr(q, col)
            if v:
                sql.append(f"d.{col} = ?")
                params.append(v)
        if q.source:
            sql.append("coalesce(d.source, 'asr') = ?")
            params.append(q.source)
        if q.event:
            sql.append("instr(d.events, ?) > 0")
            params.append(f" {q.event} ")
        if q.date:  # a year takes in its months: "2024" <= "2024-03" < "2024~"
            sql.append("d.month BETWEEN ? AND ?")
            params += [q.date, q.date + "~"]
        if q.path_prefix:
            # a range, not LIKE: '%' and '_' in paths are ordinary characters here
            sql.append("d.path >= ? AND d.path < ?")
            params += [q.path_prefix, q.path_prefix + "\U0010ffff"]
        return (" AND " + " AND ".join(sql)) if sql else "", params

    def _cached(self, key: str, compute) -> int:
        now = _time.monotonic()
        hit = self._df_cache.get(key)
        if hit is not None and now - hit[0] < DF_TTL:
            return hit[1]
        df = compute()
        if df > 0:  # zeros are not cached: the word may be indexed a moment later
            with self._lock:
                if len(self._df_cache) > 20000:
                    self._df_cache.clear()
                self._df_cache[key] = (now, df)
        return df

    def _probe(self, expr: str, cap: int) -> int:
        return self._conn().execute("SELECT count(*) FROM (SELECT rowid FROM fts WHERE fts MATCH ? LIMIT ?)",
                                    (expr, cap)).fetchone()[0]

    def _token_df(self, tok: str) -> int:
        def compute() -> int:
            r = self._conn().execute("SELECT doc FROM fts_vocab WHERE term = ?", (tok,)).fetchone()
            if r:
                return int(r[0])
            if tok.isascii():  # folded as unicode61 folds it: not in the vocabulary, in no document
                return 0
            # our folding may differ from unicode61's for some letters: ask FTS5 itself
            return self._probe(fts5_quote(tok), DF_PROBE_CAP)
        return self._cached("t:" + tok, compute)

    def _df(self, term: Term) -> int:
        """Documents containing the term (an upper bound for phrases); cached for DF_TTL.

        Plain words: ``fts5vocab``. Prefixes and CJK words outside jieba's dictionary: matches
        counted up to DF_PROBE_CAP. Phrases: the smallest of their words' counts. Alternatives
        (``OR``, forgiving): the sum of theirs.
        """
        if isinstance(term, AnyOf):
            return sum(self._df(a.term) for a in term.alts)
        if term.prefix or (term.cjk and len(term.raw) > 1 and not in_dictionary(term.raw)):
            expr = self._expr(term)
            return self._cached("p:" + expr, lambda: self._probe(expr, DF_PROBE_CAP))
        return min(self._token_df(t) for t in term.tokens)

    def _cost(self, term: Term, df: int) -> int:
        """Roughly how many postings FTS5's bm25() reads to weigh this term (it evaluates the
        whole term over the index): the sum of a phrase's word frequencies."""
        if isinstance(term, AnyOf):
            return sum(self._cost(a.term, self._df(a.term)) for a in term.alts)
        if term.prefix:
            return df if df < DF_PROBE_CAP else 1 << 40
        if len(term.tokens) > 1:
            return sum(self._token_df(t) for t in term.tokens)
        return df

    def _expr(self, term: Term) -> str:
        if isinstance(term, AnyOf):
            return "(" + " OR ".join(self._expr(a.term) for a in term.alts) + ")"
        if term.cjk and len(term.raw) > 1 and not in_dictionary(term.raw):
            # a word jieba invented for this query (HMM): the text may be cut differently;
            # also accept the dictionary pieces of it in a row
            from mediaindex.textsearch import jieba_tokenizer

            pieces = [p for p in jieba_tokenizer().lcut(term.raw, HMM=False) if p.strip()]
            if len(pieces) > 1:
                return f"({fts5_quote(term.raw)} OR {fts5_quote(' '.join(pieces))})"
        return fts5_term(term)

    def _stats_n(self) -> int:
        """Number of documents (cached for a while; it only weighs words in bm25)."""
        now = _time.monotonic()
        cached = getattr(self, "_n_cache", None)
        if cached is None or now - cached[0] > DF_TTL:
            n = self._conn().execute("SELECT count(*) FROM docs").fetchone()[0]
            self._n_cache = cached = (now, n)
        return cached[1]

    def _candidates(self, terms: list[Term], q: SearchQuery, fetch: int,
                    need_total: bool = True, py_rank: int = PY_RANK,
                    exclude: Sequence[Term] = ()) -> tuple[list[tuple[int, float]], int]:
        """(ranked [(doc id, bm25)], total) for the AND of the terms under the query's filters.

        Matches are listed newest first without ranking (cheap: FTS5 walks its doclists by
        rowid), at most RANK_CAP of them. FTS5's own bm25() counts the documents of every query
        word on each call (a full doclist scan: 13 ms for a word in 500k segments), so it is
        used only when the words are rare enough (sum of document frequencies <= BM25_DF_BUDGET)
        and every match is known; otherwise the newest PY_RANK matches get the same bm25
        formula computed here from their text with cached document frequencies, and the rest
        follow newest first. Documents with an ``exclude`` term are left out.
        """
        c = self._conn()
        dfs = [self._df(t) for t in terms]
        if min(dfs) == 0:
            return [], 0
        match = self._match(terms, exclude)
        fsql, fparams = self._filters(q)
        if q.media_id:  # one media (a grouped answer's moments): its ids are consecutive, FTS5 reads that range
            lo, hi = c.execute("SELECT min(id), max(id) FROM docs WHERE media_id = ?", (q.media_id,)).fetchone()
            if lo is None:
                return [], 0
            fsql += " AND fts.rowid BETWEEN ? AND ?"
            fparams = [*fparams, lo, hi]
        join = " JOIN docs d ON d.id = fts.rowid" if fsql else ""
        bm25_ok = sum(self._cost(t, df) for t, df in zip(terms, dfs)) <= BM25_DF_BUDGET
        if bm25_ok and min(dfs) <= RANK_CAP:  # few matches, rare words: one exact query
            rows = c.execute(f"SELECT fts.rowid, bm25(fts, {BM25_WEIGHTS[0]}, {BM25_WEIGHTS[1]}) FROM fts{join}"
                             f" WHERE fts MATCH ?{fsql} ORDER BY 2, 1 DESC", [match, *fparams]).fetchall()
            return rows[:fetch], len(rows)
        cap = max(RANK_CAP, fetch)
        ids = [r[0] for r in c.execute(f"SELECT fts.rowid FROM fts{join} WHERE fts MATCH ?{fsql}"
                                       f" ORDER BY fts.rowid DESC LIMIT ?", [match, *fparams, cap + 1])]
        if not ids:
            return [], 0
        complete = len(ids) <= cap
        ids = ids[:cap]
        total = len(ids)
        if not complete and need_total:
            if not fsql and len(terms) == 1 and not terms[0].prefix and len(terms[0].tokens) == 1:
                total = max(total + 1, dfs[0])  # exact
            else:
                # estimated: the matches seen cover ids [ids[-1], max id]; assume the same density
                # below (counting them all would cost as much as ranking them all)
                top = c.execute("SELECT max(id) FROM docs").fetchone()[0] or 0
                total = max(total + 1, int(total * top / max(1, top - ids[-1] + 1)))
        if complete and bm25_ok:
            rows = c.execute(f"SELECT fts.rowid, bm25(fts, {BM25_WEIGHTS[0]}, {BM25_WEIGHTS[1]}) FROM fts{join}"
                             f" WHERE fts MATCH ?{fsql} ORDER BY 2, 1 DESC LIMIT ?",
                             [match, *fparams, fetch]).fetchall()
            return rows, total
        n_rank = max(py_rank, fetch)
        head, tail = ids[:n_rank], ids[n_rank:fetch]
        scored = self._py_bm25(head, terms, dfs)
        scored.sort(key=lambda r: (r[1], -r[0]))
        return scored[:fetch] + [(rid, 0.0) for rid in tail], total

    def _match(self, terms: Sequence[Term], exclude: Sequence[Term] = ()) -> str:
        """The FTS5 expression: every term, none of the excluded ones."""
        match = " AND ".join(self._expr(t) for t in terms)
        if exclude:
            match = f"({match}) NOT ({' OR '.join(self._expr(t) for t in exclude)})"
        return match

    def _py_bm25(self, ids: list[int], terms: list[Term], dfs: list[int]) -> list[tuple[int, float]]:
        """bm25 (FTS5's formula and sign: lower is better) of documents, computed from their text."""
        c = self._conn()
        n = max(self._stats_n(), 1)
        idf = [max(math.log((n - df + 0.5) / (df + 0.5) + 1.0), 1e-6) for df in dfs]
        docs = []
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            docs += c.execute(f"SELECT id, coalesce(body, text) FROM docs WHERE id IN ({','.join('?' * len(chunk))})",
                              chunk).fetchall()
        # term frequencies and lengths, from the tokens FTS5 sees (unicode61: runs of letters and
        # digits, folded); ASCII text (most of it) takes a faster path with the same counts
        k1, b = 1.2, 0.75
        stats = []  # (doc id, length, [tf per term])
        total_len = 0
        for rid, body in docs:
            low = body.lower()
            ascii_doc = low.isascii()
            if ascii_doc:
                toks = _ASCII_TOKEN_RE.findall(low)
            else:
                toks = [fold(t) for t in _SIMPLE_TOKEN_RE.findall(low)]
            tfs = [max(_tf(term, low, toks, ascii_doc), 1) for term in terms]
            stats.append((rid, len(toks), tfs))
            total_len += len(toks)
        avgdl = max(total_len / len(stats), 1e-9) if stats else 1.0
        out = []
        for rid, dl, tfs in stats:
            norm = k1 * (1 - b + b * dl / avgdl)
            score = 0.0
            for tf, w in zip(tfs, idf):
                score -= w * tf * (k1 + 1) / (tf + norm)
            out.append((rid, score))
        return out

    def _rarest(self, terms: list[Term], n: int) -> list[Term]:
        """The n terms in the fewest documents."""
        return sorted(terms, key=self._df)[:n]

    def _any_match(self, terms: list[Term], q: SearchQuery) -> bool:
        """True when a document under the query's filters has every one of the terms."""
        if not all(self._df(t) for t in terms):
            return False
        fsql, fparams = self._filters(q)
        join = " JOIN docs d ON d.id = fts.rowid" if fsql else ""
        match = " AND ".join(self._expr(t) for t in terms)
        return self._conn().execute(f"SELECT 1 FROM fts{join} WHERE fts MATCH ?{fsql} LIMIT 1",
                                    [match, *fparams]).fetchone() is not None

    def _partial(self, terms: list[Term], q: SearchQuery,
                 want: int) -> tuple[list[tuple[int, float, int]], int, bool]:
        """Documents matching the most terms: ([(doc id, bm25, words matched)] best first, how many,
        stopped early).

        The work is bounded whatever the query's length: only the PARTIAL_WORDS rarest words are
        weighed (a 5 s segment holds about a dozen words; the frequent ones say the least), at
        most PARTIAL_QUERIES sub-queries run, and none starts after PARTIAL_SECONDS. ``stopped``
        says a bound cut the search short: documents matching more of the words may exist.
        """
        dfs = {t.key: self._df(t) for t in terms}
        live = [t for t in terms if dfs[t.key] > 0]  # words never seen can never match
        # drop order: the most frequent words first (they say the least)
        live.sort(key=lambda t: -dfs[t.key])
        stopped = len(live) > PARTIAL_WORDS
        live = live[-PARTIAL_WORDS:]
        n = len(live)
        fetch = max(want, PARTIAL_FETCH)  # per sub-query; only the newest `fetch` are ranked
        found: dict[int, tuple[int, float]] = {}  # id -> (level, score)

        def subsets(k: int) -> list[list[Term]]:
            if k == n:
                return [live]
            drop = n - k
            if math.comb(n, drop) <= 12:
                # every way of dropping `drop` words, most frequent ones first
                return [[t for i, t in enumerate(live) if i not in set(ds)] for ds in combinations(range(n), drop)]
            return [live[drop:]]  # greedy: keep the k rarest

        k = n
        if k == len(terms):  # every word exists, yet no document has them all
            k -= 1
        queries, deadline = 0, _time.monotonic() + PARTIAL_SECONDS
        while k >= 1 and len(found) < want:
            for sub in subsets(k):
                if queries and (queries >= PARTIAL_QUERIES or _time.monotonic() > deadline):
                    return self._partial_ranked(found), len(found), True
                queries += 1
                rows, _ = self._candidates(sub, q, fetch, need_total=False, py_rank=fetch)
                for rid, score in rows:
                    if rid not in found:
                        found[rid] = (k, score)
            k -= 1
        return self._partial_ranked(found), len(found), stopped

    @staticmethod
    def _partial_ranked(found: dict[int, tuple[int, float]]) -> list[tuple[int, float, int]]:
        ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], kv[1][1], -kv[0]))
        return [(rid, score, level) for rid, (level, score) in ranked]

    # ---- search ----------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> SearchResult:
        result = self._search(query)
        if query.facets:
            result.facets = self.facets(query)
        return result

    @_guarded
    def _search(self, query: SearchQuery) -> SearchResult:
        terms, excluded = parse_search(query.q)
        limit = max(0, int(query.limit or 0))
        offset = max(0, int(query.offset or 0))
        want = offset + limit
        fetch = max(want, RANK_CAP) if query.one_per_media else want  # one per media: dedupe a wider list
        if not terms:
            return SearchResult(query=query.q, total=0, hits=[])
        if len(terms) > PARTIAL_WORDS and not self._any_match(self._rarest(terms, PARTIAL_WORDS), query):
            rows, total = [], 0  # not even the rarest words meet: skip the AND of them all (costly)
        else:
            rows, total = self._candidates(terms, query, fetch, exclude=excluded)
        exact_total = total
        # a long query (a pasted paragraph) is not forgiven: the expansion would cost more than it finds
        plan = self._forgive(terms) if len(terms) <= PARTIAL_WORDS else None
        if plan is not None:
            rows, total = self._with_forgiven(rows, total, plan, query, fetch, excluded)
        shown = plan or terms
        entries, added = [("doc", rid, score, False) for rid, score in rows], 0
        if len(terms) <= PARTIAL_WORDS:  # a pasted paragraph is nobody's title
            entries, added = self._with_titles(entries, shown, excluded, query)
        total += added
        partial = stopped = False
        levels: dict[int, int] = {}
        if total == 0 and len(terms) > 1:
            prow, total, stopped = self._partial(terms, query, fetch)
            partial = total > 0
            entries = [("doc", rid, score, False) for rid, score, _ in prow]
            levels = {rid: level for rid, _, level in prow}
        if query.one_per_media:  # the best hit of each media (among the first RANK_CAP matches)
            entries = self._best_per_media(entries)
            total = len(entries)
        # (a word in no document marks nothing: a long query's unknown words cost no matching)
        if partial:
            shown = [t for t in terms if self._df(t)]
        hits, picks = self._hits(entries[offset:want], shown, levels, excluded)
        # beyond RANK_CAP matches, _candidates estimates the total unless it has the exact count
        # (one plain word, no filters: its document frequency); partial totals count what was found
        one_word = len(terms) == 1 and not terms[0].prefix and len(terms[0].tokens) == 1 and plan is None
        exact = not partial and (total <= RANK_CAP or (one_word and not self._filters(query)[0]))
        did_you_mean, forgiven = _forgiven_summary(hits, picks, shown, exact_total)
        return SearchResult(query=query.q, total=total, hits=hits, partial=partial, total_exact=exact,
                            stopped_early=stopped, did_you_mean=did_you_mean, forgiven=forgiven)

    def _forgive(self, terms: list[Term]) -> list[Term] | None:
        """The query with forgiving alternatives (see :mod:`mediaindex.forgive`), or None."""
        return expand(terms, self._sync_vocab(), self._df, self._token_df)

    def _with_forgiven(self, rows: list[tuple[int, float]], total: int, plan: list[Term], q: SearchQuery,
                       want: int, excluded: list[Excluded]) -> tuple[list[tuple[int, float]], int]:
        """The exact matches, then those found only through alternatives: fewest forgiven
        words first, then fewest edits, then bm25."""
        frows, ftotal = self._candidates(plan, q, max(want, FORGIVE_FETCH), exclude=excluded)
        seen = {rid for rid, _ in rows}
        extra = [(rid, score) for rid, score in frows if rid not in seen]
        if not extra:
            return rows, total
        flat, pos, alts = flatten(plan)
        c = self._conn()
        ids = [rid for rid, _ in extra]
        texts = dict(c.execute(f"SELECT id, text FROM docs WHERE id IN ({','.join('?' * len(ids))})", ids))
        cost = {rid: match_cost(find_matches(texts.get(rid, ""), flat), pos, alts, len(plan)) for rid in ids}
        extra.sort(key=lambda r: (cost[r[0]], r[1], -r[0]))
        return rows + extra, max(total, ftotal)

    def _best_per_media(self, entries: list[tuple]) -> list[tuple]:
        """The first (best ranked) entry of each media, in rank order."""
        c = self._conn()
        media: dict[int, str] = {}
        ids = [e[1] for e in entries if e[0] == "doc"]
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            media.update(c.execute(f"SELECT id, media_id FROM docs WHERE id IN ({','.join('?' * len(chunk))})",
                                   chunk).fetchall())
        seen: set[str] = set()
        out = []
        for e in entries:
            m = media.get(e[1]) if e[0] == "doc" else e[1]
            if m is not None and m not in seen:
                seen.add(m)
                out.append(e)
        return out

    def _title_matches(self, terms: list[Term], excluded: list[Excluded],
                       q: SearchQuery) -> list[tuple[str, float, bool]]:
        """Media whose title, artist, album, file name or folder has every term:
        [(media id, bm25, not only in the folder)], best first."""
        if q.emotion or q.kind or q.source or q.event:
            return []  # segment properties: only spoken matches can have them
        sql, params = [], []
        for col, v in (("language", q.language), ("id", q.media_id), ("library", q.library)):
            if v:
                sql.append(f"m.{col} = ?")
                params.append(v)
        if q.path_prefix:
            sql.append("m.path >= ? AND m.path < ?")
            params += [q.path_prefix, q.path_prefix + "\U0010ffff"]
        where = "".join(" AND " + s for s in sql)
        match = self._match(terms, excluded)
        c = self._conn()
        base = "SELECT m.id, bm25(media_fts, 10, 6, 4, 4, 1) FROM media_fts JOIN media m ON m.rowid = media_fts.rowid"
        try:
            rows = c.execute(f"{base} WHERE media_fts MATCH ?{where} ORDER BY 2 LIMIT ?",
                             [match, *params, TITLE_HITS]).fetchall()
            if not rows:
                return []
            strong = {r[0] for r in c.execute(f"{base} WHERE media_fts MATCH ?{where}",
                                              [f"{{title people album file}} : ({match})", *params])}
        except sqlite3.OperationalError:  # a query FTS5 cannot run on this table: no title hits
            return []
        return [(mid, score, mid in strong) for mid, score in rows]

    def _with_titles(self, entries: list[tuple], terms: list[Term], excluded: list[Excluded],
                     q: SearchQuery) -> tuple[list[tuple], int]:
        """Title hits first: a media whose title (artist, album, file name) matches shows its best
        segment when the words are also said in it, else its start; folder-only matches come
        after the spoken ones. Returns (entries, hits added)."""
        titles = self._title_matches(terms, excluded, q)
        if not titles:
            return entries, 0
        front, back, moved = [], [], set()
        added = 0
        for mid, score, strong in titles:
            best = self._best_in_media(mid, terms, excluded, q)
            if best:
                moved.add(best[0])
                entry = ("doc", best[0], best[1], True)
            else:
                entry = ("media", mid, score, True)
                added += 1
            (front if strong else back).append(entry)
        rest = [e for e in entries if e[1] not in moved]
        return front + rest + back, added

    def _best_in_media(self, media_id: str, terms: list[Term], excluded: list[Excluded],
                       q: SearchQuery) -> tuple[int, float] | None:
        """(doc id, bm25) of a media's best segment with every term, or None. A media's
        segments have consecutive ids: FTS5 reads only that rowid range, however frequent the
        words (a media_id filter would join every match)."""
        c = self._conn()
        lo, hi = c.execute("SELECT min(id), max(id) FROM docs WHERE media_id = ?", (media_id,)).fetchone()
        if lo is None:
            return None
        fsql, fparams = self._filters(q)
        join = " JOIN docs d ON d.id = fts.rowid" if fsql else ""
        ids = [r[0] for r in c.execute(f"SELECT fts.rowid FROM fts{join} WHERE fts MATCH ? AND fts.rowid BETWEEN ? AND ?"
                                       f"{fsql} LIMIT ?", [self._match(terms, excluded), lo, hi, *fparams, PY_RANK])]
        if not ids:
            return None
        scored = self._py_bm25(ids, terms, [self._df(t) for t in terms])
        return min(scored, key=lambda r: (r[1], -r[0]))

    def _hits(self, page: list[tuple], terms: list[Term], levels: dict[int, int],
              excluded: list[Excluded] = ()) -> tuple[list[SearchHit], list[dict[int, Any]]]:
        """Hits for ("doc", id, bm25, title match) and ("media", id, bm25, _) entries, and for
        each the alternative that matched at each query position."""
        if not page:
            return [], []
        c = self._conn()
        flat, pos, alts = flatten(terms)
        ids = [e[1] for e in page if e[0] == "doc"]
        docs = {r[0]: r for r in c.execute(
            "SELECT id, media_id, seg, path, title, language, emotion, kind, t_start, t_end, text, wspans, wtimes,"
            f" source, events FROM docs WHERE id IN ({','.join('?' * len(ids))})", ids)} if ids else {}
        hits, picks = [], []
        for kind, rid, score, title_match in page:
            if kind == "media":
                hit = self._media_hit(rid, score, flat, len(terms))
                if hit is not None:
                    hits.append(hit)
                    picks.append({})
                continue
            d = docs.get(rid)
            if d is None:  # deleted between the two queries
                continue
            _, media_id, seg, path, title, language, emotion, kind_, start, end, text, wspans, wtimes, src, ev = d
            if levels and excluded and find_matches(text, excluded):
                continue  # the partial-match fallback does not know about -word
            matches = find_matches(text, flat)
            t = start
            first = best_start(matches, pos)
            if first is not None:
                spans = array("i")
                spans.frombytes(wspans or b"")
                times = array("d")
                times.frombytes(wtimes or b"")
                t = time_at(first, spans, times, start)
            seen = len({pos[ti] for _, _, ti in matches})
            matched = max(seen, levels.get(rid, len(terms))) if levels else len(terms)
            pick: dict[int, Any] = {}
            for _, _, ti in matches:
                a = alts[ti]
                p = pos[ti]
                if p not in pick or (a.why in ("exact", "or"), -a.cost) > (pick[p].why in ("exact", "or"), -pick[p].cost):
                    pick[p] = a
            forgiven = any(a.why not in ("exact", "or") for a in pick.values())
            hits.append(SearchHit(media_id=media_id, path=path, time=t, start=start, end=end, text=text,
                                  snippet=snippet(text, matches), segment_index=seg, language=language,
                                  emotion=emotion, kind=kind_ or "speech", title=title, score=-score,
                                  matched_words=matched, match="title" if title_match else "text",
                                  forgiven=forgiven, source=src or "asr", events=(ev or "").split()))
            picks.append(pick)
        return hits, picks

    def _media_hit(self, media_id: str, score: float, flat: list[Term], n_terms: int) -> SearchHit | None:
        """A hit at the start of a media whose metadata matched (no segment has the words)."""
        c = self._conn()
        r = c.execute("SELECT m.path, m.title, m.language, f.title, f.people, f.album, f.file, f.folder"
                      " FROM media m JOIN media_fts f ON f.rowid = m.rowid WHERE m.id = ?", (media_id,)).fetchone()
        if r is None:
            return None
        path, title, language, *meta = r
        text = " \u00b7 ".join(dict.fromkeys(x for x in meta[:4] if x))
        matches = find_matches(text, flat)
        if not matches and meta[4]:
            text = f"{text} \u00b7 {meta[4]}" if text else meta[4]
            matches = find_matches(text, flat)
        first = c.execute("SELECT t_end FROM docs WHERE media_id = ? ORDER BY seg LIMIT 1", (media_id,)).fetchone()
        return SearchHit(media_id=media_id, path=path, time=0.0, start=0.0, end=first[0] if first else 0.0,
                         text=text, snippet=snippet(text, matches), segment_index=0, language=language,
                         title=title, score=-score, matched_words=n_terms, match="title")

    # ---- facets ----------------------------------------------------------------------------

    @_guarded
    def facets(self, query: SearchQuery) -> FacetCounts:
        """Documents per language, emotion, kind and folder. The empty query reads the counts
        kept at write time; a query counts its newest FACET_SAMPLE matches, scaled to the
        (estimated) total when there are more (``estimated=True``)."""
        c = self._conn()
        terms, excluded = parse_search(query.q)
        if not terms:
            kept = self._kept_facets(query)
            if kept is not None:
                return kept
        fsql, fparams = self._filters(query)
        estimated = False
        if not terms:
            rows = c.execute("SELECT d.language, d.emotion, d.kind, d.folder, d.source, d.events, d.month, count(*)"
                             f" FROM docs d WHERE 1{fsql} GROUP BY 1, 2, 3, 4, 5, 6, 7", fparams).fetchall()
        else:
            match = self._match(self._forgive(terms) or terms, excluded)  # what search shows
            sample = c.execute("SELECT d.id, d.language, d.emotion, d.kind, d.folder, d.source, d.events, d.month"
                               " FROM fts"
                               f" JOIN docs d ON d.id = fts.rowid WHERE fts MATCH ?{fsql}"
                               " ORDER BY fts.rowid DESC LIMIT ?", [match, *fparams, FACET_SAMPLE + 1]).fetchall()
            counts: dict[tuple, int] = {}
            for _, *key in sample[:FACET_SAMPLE]:
                counts[tuple(key)] = counts.get(tuple(key), 0) + 1
            if len(sample) > FACET_SAMPLE:  # a frequent word: scale the newest matches up
                estimated = True
                total = self._estimate_total(terms, fsql, FACET_SAMPLE, sample[FACET_SAMPLE - 1][0])
                scale = total / FACET_SAMPLE
                counts = {k: max(1, round(n * scale)) for k, n in counts.items()}
            rows = [(*k, n) for k, n in counts.items()]
            if not rows and len(terms) > 1:  # partial matches: facets of what search shows
                prow, _, _ = self._partial(terms, query, PARTIAL_FETCH)
                ids = [rid for rid, _, _ in prow]
                rows = []
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    rows += c.execute("SELECT language, emotion, kind, folder, source, events, month, count(*)"
                                      f" FROM docs WHERE id IN ({','.join('?' * len(chunk))}) GROUP BY 1, 2, 3, 4, 5, 6, 7",
                                      chunk).fetchall()
        return _facet_counts(rows, estimated)

    def _kept_facets(self, q: SearchQuery) -> FacetCounts | None:
        """Facets of the empty query from ``facet_counts``; None when a filter needs the documents
        (one media, a path prefix that is not a folder)."""
        if q.media_id or q.source or q.event or q.date or (q.path_prefix and not q.path_prefix.endswith(("/", os.sep))):
            return None
        c = self._conn()
        if not (q.language or q.emotion or q.kind or q.path_prefix):
            out = FacetCounts()
            rows = c.execute("SELECT facet, value, n FROM facet_totals WHERE library = ?", (q.library,)) if q.library \
                else c.execute("SELECT facet, value, n FROM facet_totals")
            for facet, value, n in rows:
                counts = out.setdefault(facet, {})
                counts[value] = counts.get(value, 0) + n
            return out
        sql, params = [], []
        for col in ("language", "emotion", "kind", "library"):
            v = getattr(q, col)
            if v:
                sql.append(f"{col} = ?")
                params.append(v)
        if q.path_prefix:
            sql.append("folder || ? >= ? AND folder || ? < ?")
            sep = q.path_prefix[-1]
            params += [sep, q.path_prefix, sep, q.path_prefix + "\U0010ffff"]
        where = " WHERE " + " AND ".join(sql) if sql else ""
        rows = c.execute(f"SELECT language, emotion, kind, folder, n FROM facet_counts{where}", params)
        return _facet_counts([(*(v or None for v in r[:4]), r[4]) for r in rows])

    def _estimate_total(self, terms: list[Term], fsql: str, seen: int, lowest: int) -> int:
        """Matches of a frequent query: exact for one plain word without filters (``fts5vocab``),
        else from the density of the newest ``seen`` matches (ids down to ``lowest``)."""
        if not fsql and len(terms) == 1 and not isinstance(terms[0], AnyOf) and not terms[0].prefix \
                and len(terms[0].tokens) == 1:
            return max(seen, self._df(terms[0]))
        top = self._conn().execute("SELECT max(id) FROM docs").fetchone()[0] or 0
        return max(seen, int(seen * top / max(1, top - lowest + 1)))


def _facet_counts(rows: Iterable[tuple], estimated: bool = False) -> FacetCounts:
    """FacetCounts from (language, emotion, kind, folder[, source, events], n) rows; ``source``
    and ``event`` (sound events, from the enrichers) are added when the rows have them."""
    out = FacetCounts(estimated=estimated)
    for *vals, n in rows:
        lang, emo, kind, folder = vals[:4]
        for facet, v in ((out["language"], lang), (out["emotion"], emo), (out["kind"], kind), (out["folder"], folder)):
            if v is not None:
                facet[v] = facet.get(v, 0) + n
        if len(vals) > 4:
            source = out.setdefault("source", {})
            source[vals[4] or "asr"] = source.get(vals[4] or "asr", 0) + n
            events = out.setdefault("event", {})
            for name in (vals[5] or "").split():
                events[name] = events.get(name, 0) + n
        if len(vals) > 6 and vals[6]:
            month = out.setdefault("month", {})
            month[vals[6]] = month.get(vals[6], 0) + n
    return out


def _tf(term: Term, low: str, toks: list[str], ascii_doc: bool) -> int:
    """Occurrences of a term in a document (lower-cased text and its folded tokens); for a
    phrase, its rarest word's count."""
    if isinstance(term, AnyOf):
        return sum(_tf(a.term, low, toks, ascii_doc) for a in term.alts)
    tf = 0
    last = len(term.tokens) - 1
    for j, want in enumerate(term.tokens):
        if term.prefix and j == last:
            if ascii_doc and want.isascii():
                cnt = len(_ascii_prefix_re(want).findall(low))
            else:
                cnt = sum(1 for t in toks if t.startswith(want))
        else:
            cnt = toks.count(want)
        tf = cnt if j == 0 else min(tf, cnt)
    return tf


def _tokens(texts: Iterable[str]) -> set[str]:
    """The folded tokens FTS5 (unicode61) makes of these texts."""
    low = "\n".join(t for t in texts if t).lower()
    if low.isascii():  # the same tokens as _ASCII_TOKEN_RE, faster
        return set(low.translate(_ASCII_SEPARATORS).split())
    return {fold(t) for t in set(_SIMPLE_TOKEN_RE.findall(low))}


def _media_meta(media: Media) -> tuple[str, str, str, str, str]:
    """(title, people, album, file name, folder) of a media: what ``media_fts`` holds."""
    tags = media.tags or {}
    people = " ".join(dict.fromkeys(v for k in ("artist", "album_artist", "composer") if (v := tags.get(k))))
    stem = os.path.splitext(os.path.basename(media.path))[0]
    return media.title or "", people, tags.get("album") or "", stem, media.folder or ""


def _delete_meta(c: sqlite3.Connection, library: str, media_id: str) -> None:
    c.execute("DELETE FROM media_fts WHERE rowid = (SELECT rowid FROM media WHERE library = ? AND id = ?)",
              (library, media_id))


def _insert_meta(c: sqlite3.Connection, library: str, media_id: str, meta: tuple[str, ...]) -> None:
    c.execute("INSERT INTO media_fts(rowid, title, people, album, file, folder)"
              " SELECT rowid, ?, ?, ?, ?, ? FROM media WHERE library = ? AND id = ?", (*meta, library, media_id))


_FACET_ROWS = ("SELECT library, coalesce(language, ''), coalesce(emotion, ''), coalesce(kind, ''),"
               " coalesce(folder, ''), {sign} * count(*) FROM docs WHERE {where} GROUP BY 1, 2, 3, 4, 5")

_TOTAL_ROWS = ("SELECT library, '{facet}', {facet}, {sign} * count(*) FROM docs"
               " WHERE {where} AND {facet} IS NOT NULL GROUP BY 1, 2, 3")


def _count_facets(c: sqlite3.Connection, library: str, media_id: str, sign: int) -> None:
    """Add (sign=1) or take away (sign=-1) a media's documents from ``facet_counts``."""
    c.execute("INSERT INTO facet_counts(library, language, emotion, kind, folder, n) "
              + _FACET_ROWS.format(sign=1 if sign > 0 else -1, where="library = ? AND media_id = ?")
              + " ON CONFLICT(library, language, emotion, kind, folder) DO UPDATE SET n = n + excluded.n",
              (library, media_id))
    for facet in (*FacetCounts.FACETS, "month"):
        c.execute("INSERT INTO facet_totals(library, facet, value, n) "
                  + _TOTAL_ROWS.format(facet=facet, sign=1 if sign > 0 else -1, where="library = ? AND media_id = ?")
                  + " ON CONFLICT(library, facet, value) DO UPDATE SET n = n + excluded.n", (library, media_id))
    _count_extra(c, c.execute("SELECT source, events FROM docs WHERE library = ? AND media_id = ?",
                              (library, media_id)).fetchall(), library, 1 if sign > 0 else -1)
    if sign < 0:
        c.execute("DELETE FROM facet_counts WHERE n <= 0")
        c.execute("DELETE FROM facet_totals WHERE n <= 0")


def _count_extra(c: sqlite3.Connection, rows: Iterable[tuple], library: str, sign: int) -> None:
    """Add or take away ``source`` and ``event`` (sound events) totals for (source, events) rows."""
    totals: dict[tuple, int] = {}
    for source, events in rows:
        if source:
            totals[("source", source)] = totals.get(("source", source), 0) + sign
        for name in (events or "").split():
            totals[("event", name)] = totals.get(("event", name), 0) + sign
    c.executemany("INSERT INTO facet_totals(library, facet, value, n) VALUES(?,?,?,?)"
                  " ON CONFLICT(library, facet, value) DO UPDATE SET n = n + excluded.n",
                  [(library, *k, n) for k, n in totals.items()])


def _add_facets(c: sqlite3.Connection, library: str, rows: list[tuple]) -> None:
    """Add new documents (``_rows``: folder, language, emotion, kind at 4, 6, 7, 8) to the facet
    counts, counted here (cheaper than asking SQLite to group what was just inserted)."""
    combos: dict[tuple, int] = {}
    for r in rows:
        key = (r[6] or "", r[7] or "", r[8] or "", r[4] or "")
        combos[key] = combos.get(key, 0) + 1
    c.executemany("INSERT INTO facet_counts(library, language, emotion, kind, folder, n) VALUES(?,?,?,?,?,?)"
                  " ON CONFLICT(library, language, emotion, kind, folder) DO UPDATE SET n = n + excluded.n",
                  [(library, *k, n) for k, n in combos.items()])
    totals: dict[tuple, int] = {}
    for r in rows:
        for facet, v in (("language", r[6]), ("emotion", r[7]), ("kind", r[8]), ("folder", r[4]), ("month", r[20])):
            if v is not None:
                totals[(facet, v)] = totals.get((facet, v), 0) + 1
    c.executemany("INSERT INTO facet_totals(library, facet, value, n) VALUES(?,?,?,?)"
                  " ON CONFLICT(library, facet, value) DO UPDATE SET n = n + excluded.n",
                  [(library, *k, n) for k, n in totals.items()])
    _count_extra(c, [(r[18], r[19]) for r in rows], library, 1)


def _add_month(c: sqlite3.Connection) -> None:
    """Date documents of an index made before dates by their file's month, and count them."""
    c.execute("BEGIN IMMEDIATE")
    try:
        if "month" not in {r[1] for r in c.execute("PRAGMA table_info(docs)")}:
            c.execute("ALTER TABLE docs ADD COLUMN month TEXT")
            c.execute("UPDATE docs SET month = strftime('%Y-%m', mtime, 'unixepoch') WHERE mtime > 0")
            c.execute("INSERT INTO facet_totals(library, facet, value, n) "
                      + _TOTAL_ROWS.format(facet="month", sign=1, where="1"))
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def _recount_facets(c: sqlite3.Connection) -> None:
    c.execute("DELETE FROM facet_counts")
    c.execute("DELETE FROM facet_totals")
    c.execute("INSERT INTO facet_counts(library, language, emotion, kind, folder, n) "
              + _FACET_ROWS.format(sign=1, where="1"))
    for facet in (*FacetCounts.FACETS, "month"):
        c.execute("INSERT INTO facet_totals(library, facet, value, n) "
                  + _TOTAL_ROWS.format(facet=facet, sign=1, where="1"))
    for (library,) in c.execute("SELECT DISTINCT library FROM docs").fetchall():
        _count_extra(c, c.execute("SELECT source, events FROM docs WHERE library = ?", (library,)).fetchall(),
                     library, 1)


def _migrate(c: sqlite3.Connection) -> None:
    """Bring an index made before libraries and kept facet counts up to date, once: ``library``
    on ``media`` (part of its key, rowids kept for ``media_fts``) and ``docs``, ``facet_counts``
    filled from the documents. Rows made before libraries belong to no library ('') until a
    library opens the file (:func:`_adopt`)."""
    if c.execute("SELECT 1 FROM meta WHERE key = 'facets'").fetchone():
        return
    c.execute("BEGIN IMMEDIATE")
    try:
        if not c.execute("SELECT 1 FROM meta WHERE key = 'facets'").fetchone():
            if "library" not in {r[1] for r in c.execute("PRAGMA table_info(media)")}:
                c.execute("ALTER TABLE docs ADD COLUMN library TEXT NOT NULL DEFAULT ''")
                c.execute("ALTER TABLE media RENAME TO media_v1")
                c.execute(_MEDIA_TABLE)
                c.execute("INSERT INTO media(rowid, library, id, path, folder, title, language, duration, mtime,"
                          " segments) SELECT rowid, '', id, path, folder, title, language, duration, mtime,"
                          " segments FROM media_v1")
                c.execute("DROP TABLE media_v1")
                if c.execute("SELECT 1 FROM media LIMIT 1").fetchone():
                    c.execute("INSERT OR REPLACE INTO meta VALUES('unowned', '1')")
            _recount_facets(c)
            c.execute("INSERT OR REPLACE INTO meta VALUES('facets', '1')")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def _adopt(c: sqlite3.Connection, library: str) -> None:
    """The first library to open an index made before libraries owns its rows (that index had
    one writer: the data dir it lived in)."""
    if not c.execute("SELECT 1 FROM meta WHERE key = 'unowned'").fetchone():
        return
    c.execute("BEGIN IMMEDIATE")
    try:
        if c.execute("SELECT 1 FROM meta WHERE key = 'unowned'").fetchone():
            c.execute("UPDATE OR IGNORE media SET library = ? WHERE library = ''", (library,))
            c.execute("UPDATE docs SET library = ? WHERE library = ''", (library,))
            _recount_facets(c)
            c.execute("DELETE FROM meta WHERE key = 'unowned'")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


def _backfill(c: sqlite3.Connection) -> None:
    """Fill ``vocab`` and ``media_fts`` (added after schema 1) once, for an index made before
    them: every FTS word, and each media's title, file name and folder (artist and album come
    with the next re-index)."""
    if c.execute("SELECT 1 FROM meta WHERE key = 'vocab'").fetchone():
        return
    c.execute("BEGIN IMMEDIATE")
    try:
        if not c.execute("SELECT 1 FROM meta WHERE key = 'vocab'").fetchone():
            if c.execute("SELECT 1 FROM docs LIMIT 1").fetchone():
                terms = [r[0] for r in c.execute("SELECT term FROM fts_vocab")]
                c.executemany("INSERT OR IGNORE INTO vocab(term, sound) VALUES(?, ?)",
                              [(t, sound_key(t)) for t in terms])
                media = c.execute("SELECT library, id, path, title FROM media").fetchall()
                for lib, mid, path, title in media:
                    m = Media(id=mid, path=path or "", paths=[], size=0, mtime=0.0, tags={"title": title or ""})
                    words = _tokens(_media_meta(m))
                    c.executemany("INSERT OR IGNORE INTO vocab(term, sound) VALUES(?, ?)",
                                  [(w, sound_key(w)) for w in words])
                    _insert_meta(c, lib, mid, _media_meta(m))
            c.execute("INSERT OR REPLACE INTO meta VALUES('vocab', '1')")
        c.execute("COMMIT")
    except BaseException:
        c.execute("ROLLBACK")
        raise


class _WriteTxn:
    """``with index._write() as conn``: one BEGIN IMMEDIATE transaction, serialised in process."""

    def __init__(self, index: SqliteIndex):
        self.index = index

    def __enter__(self) -> sqlite3.Connection:
        self.index._write_lock.acquire()
        try:
            self.c = self.index._conn()
            self.c.execute("BEGIN IMMEDIATE")
        except BaseException:
            self.index._write_lock.release()
            raise
        return self.c

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:
                try:
                    self.c.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            else:
                self._rollback()
        finally:
            self.index._write_lock.release()

    def _rollback(self) -> None:
        if self.c.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
            try:
                self.c.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the error that got us here is the one to report


@hookimpl
def register_index_backends(register, config) -> None:
    """``[sqlite] path`` puts the index file elsewhere (e.g. one file shared by several data
    dirs); the default is ``index.sqlite3`` in the data dir."""
    path = config.section("sqlite").get("path")
    register(SqliteIndex(config.data_dir / Path(str(path)).expanduser() if path else config.data_dir / "index.sqlite3"))
