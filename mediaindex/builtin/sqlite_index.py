"""The embedded default index ``sqlite``: SQLite FTS5 in one file in the data dir.

Layout (``index.sqlite3``):

- ``media``: one row per indexed media (so a media without speech is still "in the index").
- ``docs``: one row per segment, with the media facets copied in (path, folder, title,
  language, emotion, kind, duration, mtime) so filters need no join; the original text; and the
  word-time map: ``wspans`` (int32 pairs: each engine word's character span in ``text``) and
  ``wtimes`` (float64: each word's start). ``body``/``extra`` hold what was handed to FTS when it
  differs from ``text`` (CJK text segmented with jieba, see :mod:`mediaindex.textsearch`).
- ``fts``: a contentless FTS5 table (``unicode61 remove_diacritics 2``: case-insensitive,
  diacritics folded) over ``body`` and ``extra``, rowid = ``docs.id``. Deleting a document
  hands FTS5 the exact values it indexed (kept in ``docs``).
- ``fts_vocab``: ``fts5vocab`` row view, for document frequencies (partial-match strategy).

Search: the query is parsed into plain terms (never passed on as FTS5 syntax), ANDed and ranked
with bm25. Matches are fetched newest first, at most :data:`RANK_CAP` of them; when the words
are frequent, only the newest :data:`PY_RANK` are scored (same bm25 formula, in Python), so a
query for a word in half the index costs a few ms instead of ranking 300k rows. With more
matches than RANK_CAP, the ranking is bm25 among the newest matches and ``total`` is
estimated from the density of the matches seen (exact, from ``fts5vocab``, when the query is one
plain word without filters). When no document has every word, a Meilisearch-like fallback runs cheap
AND queries with words dropped (never-seen words first, then each single word, then the most
frequent words) and returns the documents that match the most words (``partial=True``). Its
work is bounded whatever the query's length (the :data:`PARTIAL_WORDS` rarest words, at most
:data:`PARTIAL_QUERIES` sub-queries, none after :data:`PARTIAL_SECONDS`); ``stopped_early=True``
says a bound cut it short.

The hit's ``time`` is the start of the engine word under the first match in the original text.

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
from typing import Any

from mediaindex.backends import FacetCounts, IndexBackend
from mediaindex.dberrors import IndexDamaged, database_error, is_damaged
from mediaindex.hookspecs import hookimpl
from mediaindex.models import Media, SearchHit, SearchQuery, SearchResult, Segment
from mediaindex.textsearch import (Term, find_matches, fold, fts5_quote, fts5_term, index_text,
                                   in_dictionary, matched_term_count, parse_query, snippet,
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
PY_RANK = 300  # otherwise rank the newest this many matches here

_DOC_COLS = ("media_id, seg, path, folder, title, language, emotion, kind, duration, mtime, "
             "t_start, t_end, text, body, extra, wspans, wtimes")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS media(
    id TEXT PRIMARY KEY, path TEXT, folder TEXT, title TEXT, language TEXT,
    duration REAL, mtime REAL, segments INTEGER);
CREATE TABLE IF NOT EXISTS docs(
    id INTEGER PRIMARY KEY,
    media_id TEXT NOT NULL, seg INTEGER, path TEXT, folder TEXT, title TEXT,
    language TEXT, emotion TEXT, kind TEXT, duration REAL, mtime REAL,
    t_start REAL, t_end REAL, text TEXT NOT NULL, body TEXT, extra TEXT,
    wspans BLOB, wtimes BLOB);
CREATE INDEX IF NOT EXISTS docs_media ON docs(media_id, seg);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    body, extra, content='', prefix='2 3', tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS fts_vocab USING fts5vocab(fts, 'row');
"""


_SIMPLE_TOKEN_RE = re.compile(r"[^\W_]+")
_ASCII_TOKEN_RE = re.compile(r"[A-Za-z0-9]+")  # the same tokens as _SIMPLE_TOKEN_RE in ASCII text


def _guarded(method):
    """A damaged file or a full disk becomes a clear FatalError (see dberrors); damage is also
    marked on disk, so the next ``index`` or ``watch`` rebuilds the index even when its quick
    check finds nothing (a broken FTS5 page is only seen by a query)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kw):
        try:
            return method(self, *args, **kw)
        except sqlite3.Error as e:
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
    REOPEN_CHECK = 1.0  # seconds: how often a thread checks that its file was not replaced

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

    # ---- connections -----------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.generation == self._generation and not self._replaced():
            return c
        if c is not None:  # the file was found damaged, or set aside and rebuilt by another process
            self._drop(c)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        generation = self._generation
        c = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None, check_same_thread=False)
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
        c.execute("PRAGMA busy_timeout=30000")
        c.execute("PRAGMA synchronous=NORMAL")  # safe in WAL mode: no corruption, only the
        # last commits may be lost on power failure (and re-indexed from the state database)
        c.execute("PRAGMA temp_store=MEMORY")
        c.execute("PRAGMA cache_size=-32000")
        with self._lock:
            if not self._ready:
                c.execute("PRAGMA journal_mode=WAL")
                c.executescript(_SCHEMA)
                row = c.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None:
                    c.execute("INSERT OR REPLACE INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
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
    def _rows(media: Media, segments: list[Segment]) -> list[tuple]:
        path, folder, title = media.path, media.folder, media.title
        rows = []
        for seg in segments:
            text = seg.text or ""
            body, extra = index_text(text)
            spans, times = word_spans(text, seg.words)
            rows.append((media.id, seg.index, path, folder, title, seg.language or media.language,
                         seg.emotion, seg.kind or "speech", media.duration, media.mtime,
                         float(seg.start), float(seg.end), text, None if body == text else body,
                         extra, array("i", spans).tobytes(), array("d", times).tobytes()))
        return rows

    @_guarded
    def upsert(self, media: Media, segments: list[Segment]) -> None:
        rows = self._rows(media, segments)  # the CPU work, outside the write lock
        with self._write() as c:
            self._delete_docs(c, media.id)
            c.execute("INSERT OR REPLACE INTO media(id, path, folder, title, language, duration, mtime, segments)"
                      " VALUES(?,?,?,?,?,?,?,?)",
                      (media.id, media.path, media.folder, media.title, media.language, media.duration,
                       media.mtime, len(rows)))
            cur = c.execute("SELECT coalesce(max(id), 0) FROM docs")
            first = cur.fetchone()[0] + 1
            c.executemany(f"INSERT INTO docs(id, {_DOC_COLS}) VALUES({','.join('?' * 18)})",
                          [(first + i, *r) for i, r in enumerate(rows)])
            c.execute("INSERT INTO fts(rowid, body, extra) SELECT id, coalesce(body, text), extra FROM docs"
                      " WHERE id >= ?", (first,))

    @staticmethod
    def _delete_docs(c: sqlite3.Connection, media_id: str) -> None:
        c.execute("INSERT INTO fts(fts, rowid, body, extra) SELECT 'delete', id, coalesce(body, text), extra"
                  " FROM docs WHERE media_id = ?", (media_id,))
        c.execute("DELETE FROM docs WHERE media_id = ?", (media_id,))

    @_guarded
    def update_media(self, media: Media) -> None:
        with self._write() as c:
            c.execute("UPDATE docs SET path=?, folder=?, title=?, duration=?, mtime=? WHERE media_id=?",
                      (media.path, media.folder, media.title, media.duration, media.mtime, media.id))
            c.execute("UPDATE media SET path=?, folder=?, title=?, language=coalesce(?, language), duration=?,"
                      " mtime=? WHERE id=?",
                      (media.path, media.folder, media.title, media.language, media.duration, media.mtime,
                       media.id))

    @_guarded
    def delete(self, media_id: str) -> None:
        with self._write() as c:
            self._delete_docs(c, media_id)
            c.execute("DELETE FROM media WHERE id = ?", (media_id,))

    @_guarded
    def media_ids(self) -> set[str]:
        return {r[0] for r in self._conn().execute("SELECT id FROM media")}

    @_guarded
    def optimize(self) -> None:
        """Merge the FTS b-trees into one (after a bulk load; optional)."""
        with self._write() as c:
            c.execute("INSERT INTO fts(fts) VALUES('optimize')")

    # ---- query helpers ---------------------------------------------------------------------

    @staticmethod
    def _filters(q: SearchQuery) -> tuple[str, list[Any]]:
        sql, params = [], []
        for col in ("language", "emotion", "kind", "media_id"):
            v = getattr(q, col)
            if v:
                sql.append(f"d.{col} = ?")
                params.append(v)
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
        counted up to DF_PROBE_CAP. Phrases: the smallest of their words' counts.
        """
        if term.prefix or (term.cjk and len(term.raw) > 1 and not in_dictionary(term.raw)):
            expr = self._expr(term)
            return self._cached("p:" + expr, lambda: self._probe(expr, DF_PROBE_CAP))
        return min(self._token_df(t) for t in term.tokens)

    def _cost(self, term: Term, df: int) -> int:
        """Roughly how many postings FTS5's bm25() reads to weigh this term (it evaluates the
        whole term over the index): the sum of a phrase's word frequencies."""
        if term.prefix:
            return df if df < DF_PROBE_CAP else 1 << 40
        if len(term.tokens) > 1:
            return sum(self._token_df(t) for t in term.tokens)
        return df

    def _expr(self, term: Term) -> str:
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
                    need_total: bool = True, py_rank: int = PY_RANK) -> tuple[list[tuple[int, float]], int]:
        """(ranked [(doc id, bm25)], total) for the AND of the terms under the query's filters.

        Matches are listed newest first without ranking (cheap: FTS5 walks its doclists by
        rowid), at most RANK_CAP of them. FTS5's own bm25() counts the documents of every query
        word on each call (a full doclist scan: 13 ms for a word in 500k segments), so it is
        used only when the words are rare enough (sum of document frequencies <= BM25_DF_BUDGET)
        and every match is known; otherwise the newest PY_RANK matches get the same bm25
        formula computed here from their text with cached document frequencies, and the rest
        follow newest first.
        """
        c = self._conn()
        dfs = [self._df(t) for t in terms]
        if min(dfs) == 0:
            return [], 0
        match = " AND ".join(self._expr(t) for t in terms)
        fsql, fparams = self._filters(q)
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
            tfs = []
            for term in terms:
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
                tfs.append(max(tf, 1))
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

    @_guarded
    def search(self, query: SearchQuery) -> SearchResult:
        pq = parse_query(query.q)
        limit = max(0, int(query.limit or 0))
        offset = max(0, int(query.offset or 0))
        want = offset + limit
        if pq.empty:
            return SearchResult(query=query.q, total=0, hits=[])
        terms = pq.terms
        if len(terms) > PARTIAL_WORDS and not self._any_match(self._rarest(terms, PARTIAL_WORDS), query):
            rows, total = [], 0  # not even the rarest words meet: skip the AND of them all (costly)
        else:
            rows, total = self._candidates(terms, query, want)
        partial = stopped = False
        levels: dict[int, int] = {}
        if total == 0 and len(terms) > 1:
            prow, total, stopped = self._partial(terms, query, want)
            partial = total > 0
            rows = [(rid, score) for rid, score, _ in prow]
            levels = {rid: level for rid, _, level in prow}
        page = rows[offset:want]
        # (a word in no document marks nothing: a long query's unknown words cost no matching)
        hits = self._hits(page, [t for t in terms if self._df(t)] if partial else terms, levels)
        # beyond RANK_CAP matches, _candidates estimates the total unless it has the exact count
        # (one plain word, no filters: its document frequency); partial totals count what was found
        one_word = len(terms) == 1 and not terms[0].prefix and len(terms[0].tokens) == 1
        exact = not partial and (total <= RANK_CAP or (one_word and not self._filters(query)[0]))
        return SearchResult(query=query.q, total=total, hits=hits, partial=partial, total_exact=exact,
                            stopped_early=stopped)

    def _hits(self, page: list[tuple[int, float]], terms: list[Term], levels: dict[int, int]) -> list[SearchHit]:
        if not page:
            return []
        c = self._conn()
        ids = [rid for rid, _ in page]
        docs = {r[0]: r for r in c.execute(
            "SELECT id, media_id, seg, path, title, language, emotion, kind, t_start, t_end, text, wspans, wtimes"
            f" FROM docs WHERE id IN ({','.join('?' * len(ids))})", ids)}
        hits = []
        for rid, score in page:
            d = docs.get(rid)
            if d is None:  # deleted between the two queries
                continue
            _, media_id, seg, path, title, language, emotion, kind, start, end, text, wspans, wtimes = d
            matches = find_matches(text, terms)
            t = start
            if matches:
                spans = array("i")
                spans.frombytes(wspans or b"")
                times = array("d")
                times.frombytes(wtimes or b"")
                t = time_at(matches[0][0], spans, times, start)
            matched = max(matched_term_count(matches), levels.get(rid, len(terms))) if levels else len(terms)
            hits.append(SearchHit(media_id=media_id, path=path, time=t, start=start, end=end, text=text,
                                  snippet=snippet(text, matches), segment_index=seg, language=language,
                                  emotion=emotion, kind=kind or "speech", title=title, score=-score,
                                  matched_words=matched))
        return hits

    # ---- facets ----------------------------------------------------------------------------

    @_guarded
    def facets(self, query: SearchQuery) -> FacetCounts:
        c = self._conn()
        pq = parse_query(query.q)
        fsql, fparams = self._filters(query)
        out = FacetCounts()
        if pq.empty:
            rows = c.execute("SELECT d.language, d.emotion, d.kind, d.folder, count(*) FROM docs d"
                             f" WHERE 1{fsql} GROUP BY 1, 2, 3, 4", fparams).fetchall()
        else:
            match = " AND ".join(self._expr(t) for t in pq.terms)
            rows = c.execute("SELECT d.language, d.emotion, d.kind, d.folder, count(*) FROM fts"
                             f" JOIN docs d ON d.id = fts.rowid WHERE fts MATCH ?{fsql} GROUP BY 1, 2, 3, 4",
                             [match, *fparams]).fetchall()
            if not rows and len(pq.terms) > 1:  # partial matches: facets of what search shows
                prow, _, _ = self._partial(pq.terms, query, PARTIAL_FETCH)
                ids = [rid for rid, _, _ in prow]
                rows = []
                for i in range(0, len(ids), 500):
                    chunk = ids[i:i + 500]
                    rows += c.execute("SELECT language, emotion, kind, folder, count(*) FROM docs"
                                      f" WHERE id IN ({','.join('?' * len(chunk))}) GROUP BY 1, 2, 3, 4",
                                      chunk).fetchall()
        for lang, emo, kind, folder, n in rows:
            for facet, v in ((out.language, lang), (out.emotion, emo), (out.kind, kind), (out.folder, folder)):
                if v is not None:
                    facet[v] = facet.get(v, 0) + n
        return out


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
    register(SqliteIndex(config.data_dir / "index.sqlite3"))
