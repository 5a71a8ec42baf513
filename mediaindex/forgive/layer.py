"""Forgiving in the core, for an index backend whose search forgives less than the embedded one.

A backend says what its own search forgives (``IndexBackend.forgives``: the embedded index all
of :data:`~.query.KINDS`, Meilisearch typos and compounds). :func:`forgiving` wraps any other
backend in a :class:`ForgivingIndex`, which

- keeps the library's words while it writes the backend's documents (:class:`~.wordbook.WordBook`);
- hands the backend a query it can run: each word ORed with the alternatives the backend cannot
  find itself and the library has (numbers, British/American spellings, sound-alike names:
  :func:`~.query.expand`), in the core's own query syntax (``harbour OR harbor``,
  ``"nineteen fifty three" OR 1953``);
- ranks the hits of the query as typed first (one request), then the hits only the alternatives
  found (a second request, less the hits already listed): exact matches always come first;
- says which words matched instead (``did_you_mean``, ``forgiven``), also for the typos and
  compounds the server forgave by itself (marked words of a hit that the query does not have).
"""
from __future__ import annotations

import html
import re
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any, Sequence

from rapidfuzz.distance import OSA

from mediaindex.backends import FacetCounts, IndexBackend
from mediaindex.models import Media, SearchHit, SearchQuery, SearchResult, Segment
from mediaindex.textsearch import Term, find_matches

from .query import EXACT, KINDS, Alt, AnyOf, Excluded, expand, flatten, forgiven_summary, parse_search
from .vocab import max_typos
from .wordbook import WordBook, words_of

MAX_ALTS = 4  # alternatives handed to the backend per query word (besides the word as typed)
MAX_WORDS = 10  # a longer query (a pasted paragraph) is sent as typed
COUNT_CAP = 200  # up to this many exact hits, the forgiven ones are counted exactly (else: at least)
_MARK = re.compile(r"<mark>(.*?)</mark>", re.S)


def forgiving(backend: IndexBackend, words_path: Path | str) -> IndexBackend:
    """The backend itself when it forgives everything, else a :class:`ForgivingIndex` keeping the
    library's words in ``words_path``."""
    if KINDS <= frozenset(getattr(backend, "forgives", ())):
        return backend
    return ForgivingIndex(backend, WordBook(words_path))


def _key(h: SearchHit, one_per_media: bool):
    return h.media_id if one_per_media else (h.media_id, h.segment_index)


def render(plan: Sequence[Term], excluded: Sequence[Excluded], prefix_last: bool) -> str:
    """A plan as query text in the core's syntax (what every backend parses): ``-word``,
    ``"a phrase"``, ``a OR b``; the word as typed stays last in the last group, so it stays
    the prefix while the query is being typed."""
    def one(t: Term) -> str:
        if t.cjk:
            return t.raw
        return '"' + " ".join(t.tokens) + '"' if t.phrase or len(t.tokens) > 1 else t.tokens[0]

    parts = ["-" + one(t) for t in excluded]
    for i, t in enumerate(plan):
        alts = [a.term for a in t.alts] if isinstance(t, AnyOf) else [t]
        if prefix_last and i == len(plan) - 1:
            alts = alts[1:] + alts[:1]
        parts.append(" OR ".join(one(a) for a in alts))
    q = " ".join(parts)
    return q if prefix_last else q + " "


class ForgivingIndex(IndexBackend):
    """An index backend with the core's forgiving in front of it (see the module doc)."""

    def __init__(self, inner: IndexBackend, book: WordBook):
        self.inner, self.book = inner, book
        self.kinds = KINDS - frozenset(getattr(inner, "forgives", ()))  # what the core adds
        self.forgives = KINDS

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def library(self) -> str | None:  # type: ignore[override]
        return self.inner.library

    @library.setter
    def library(self, value: str | None) -> None:
        self.inner.library = value

    def __getattr__(self, attr: str) -> Any:  # the backend's own extras (health, url...)
        if attr in ("inner", "book"):
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    # ---- writes: the backend's, then the words ---------------------------------------------

    def upsert(self, media: Media, segments: list[Segment]) -> None:
        self.inner.upsert(media, segments)
        tags = media.tags or {}
        meta = " ".join(str(v) for v in (media.title, tags.get("title"), tags.get("artist"), tags.get("album")) if v)
        self.book.set_media(media.id, [s.text for s in segments] + [meta])

    def update_media(self, media: Media) -> None:
        self.inner.update_media(media)  # (the words of a new title join the book at the next upsert)

    def delete(self, media_id: str) -> None:
        self.inner.delete(media_id)
        self.book.remove(media_id)

    def media_ids(self) -> set[str]:
        return self.inner.media_ids()

    def missing_words(self, media_ids: set[str]) -> set[str]:
        """Media of the index whose words the book lacks (a new or lost side file): rebuild them."""
        return set(media_ids) - self.book.media_ids()

    def repair(self) -> str | None:
        return self.inner.repair()

    def close(self) -> None:
        self.inner.close()
        self.book.close()

    # ---- the plan ---------------------------------------------------------------------------

    def plan(self, terms: list[Term]) -> list[Term] | None:
        """The query with the alternatives this backend needs from the core, or None."""
        if not terms or len(terms) > MAX_WORDS:
            return None
        counts: dict[str, int] = {}

        def word_df(w: str) -> int:
            if w not in counts:
                counts[w] = self.book.count(w)
            return counts[w]

        def df(t: Term) -> int:
            if isinstance(t, AnyOf):
                return sum(df(a.term) for a in t.alts)
            if t.prefix and len(t.tokens) == 1 and not t.cjk:
                return word_df(t.tokens[0]) or int(self.book.has_prefix(t.tokens[0]))
            return min(word_df(x) for x in (t.tokens if not t.cjk else [t.raw]))

        try:
            plan = expand(terms, self.book.vocabulary(), df, word_df, self.kinds)
            out, changed = [], False
            for t in plan or ():
                if isinstance(t, AnyOf) and not all(a.why == "or" for a in t.alts):
                    keep = [a for a in t.alts[1:] if a.why in self.kinds and df(a.term) > 0][:MAX_ALTS]
                    changed |= bool(keep)
                    t = AnyOf([], t.raw, alts=[t.alts[0], *keep]) if keep else t.alts[0].term
                out.append(t)
        except sqlite3.Error:  # a word list that cannot be read (damaged, locked) forgives nothing
            return None
        return out if changed else None

    # ---- search -----------------------------------------------------------------------------

    def search(self, query: SearchQuery) -> SearchResult:
        terms, excluded = parse_search(query.q)
        plan = self.plan(terms)
        if plan is None:  # (the server's own typos and compounds are still said)
            res = self.inner.search(query)
            top = not query.offset and not res.partial  # the first hit is the best: forgiven, none is exact
            return self._explained(res, res.hits, terms, None if top else res.total)
        want = max(0, int(query.offset or 0)) + max(0, int(query.limit or 0))
        wide = replace(query, q=render(plan, excluded, terms[-1].prefix), offset=0)
        exact = self.inner.search(replace(query, offset=0, limit=want, facets=False))
        if exact.hits and not exact.partial:
            if len(exact.hits) >= want and exact.total > COUNT_CAP:  # a page of exact hits: count the others
                more = self.inner.search(replace(wide, limit=0))
                hits, total, counted = exact.hits, max(exact.total, more.total), False
            else:  # the exact hits, then those only an alternative found (counted when few)
                ask = want + exact.total
                more = self.inner.search(replace(wide, limit=ask))
                seen = {_key(h, query.one_per_media) for h in exact.hits}
                extra = [h for h in more.hits
                         if _key(h, query.one_per_media) not in seen and self._core_found(h, plan)]
                hits, counted = exact.hits + extra, len(more.hits) < ask  # (every match of the alternatives seen)
                total = exact.total + len(extra) if counted else max(exact.total + len(extra), more.total)
            res = replace(more, total=total, partial=False, total_exact=exact.total_exact and counted)
            first = self._picks(exact.hits[:1], plan)[0]  # (a typo the server forgave)
            exact_total = 0 if any(a.why not in EXACT for a in first.values()) else exact.total
        else:
            more = self.inner.search(replace(wide, limit=want))
            use_more = bool(more.hits) and (not more.partial or not exact.hits)
            res = more if use_more else replace(exact, facets=more.facets)
            hits, exact_total = res.hits, 0
        res = replace(res, query=query.q)
        return self._explained(res, hits[query.offset or 0:want], plan, exact_total)

    def _core_found(self, hit: SearchHit, plan: Sequence[Term]) -> bool:
        """Did only an alternative of the core's find this hit (not the query as typed)?"""
        return any(a.why in self.kinds for a in self._picks([hit], plan)[0].values())

    def _explained(self, res: SearchResult, hits: list[SearchHit], terms: Sequence[Term],
                   exact_total: int | None) -> SearchResult:
        """The result with these hits, each marked forgiven or not, and what was forgiven.
        ``exact_total`` None: the hits are the best ones; none matched as typed when the first
        did not."""
        if not terms:
            return res
        picks = self._picks(hits, terms)
        for h, pick in zip(hits, picks):
            h.forgiven = any(a.why not in EXACT for a in pick.values())
        if exact_total is None:
            exact_total = 0 if hits and hits[0].forgiven else res.total
        did_you_mean, forgiven = forgiven_summary(hits, picks, terms, exact_total)
        return replace(res, hits=hits, did_you_mean=did_you_mean, forgiven=forgiven)

    @staticmethod
    def _picks(hits: Sequence[SearchHit], terms: Sequence[Term]) -> list[dict[int, Alt]]:
        """For each hit, the alternative that matched at each query position: the core's (found
        in the hit's text), else the word the server marked in its place (its own typo or
        compound); a position with neither matched elsewhere (a title) as typed."""
        flat, pos, alts = flatten(terms)
        out = []
        for h in hits:
            pick: dict[int, Alt] = {}
            for _, _, ti in find_matches(h.text, flat):
                a, p = alts[ti], pos[ti]
                if p not in pick or (a.why in EXACT, -a.cost) > (pick[p].why in EXACT, -pick[p].cost):
                    pick[p] = a
            missing = [p for p in range(len(terms)) if p not in pick]
            if missing:
                marks = [m for m in (html.unescape(x) for x in _MARK.findall(h.snippet or ""))
                         if not find_matches(m, flat)]
                words = [w for m in marks for w in words_of(m)]
                same: dict[tuple[str, str], Alt] = {}  # one alternative for words the server joined
                for p in missing:
                    a = _server_alt(terms, p, words)
                    if a is not None:
                        pick[p] = same.setdefault((a.term.raw, a.why), a)
            out.append(pick)
        return out

    def facets(self, query: SearchQuery) -> FacetCounts:
        """Facets of what search shows: the query with its alternatives."""
        terms, excluded = parse_search(query.q)
        plan = self.plan(terms)
        if plan is None:
            return self.inner.facets(query)
        return self.inner.facets(replace(query, q=render(plan, excluded, terms[-1].prefix)))


def _typed(t: Term) -> list[str]:
    t = t.alts[0].term if isinstance(t, AnyOf) else t
    return list(t.tokens)


def _server_alt(terms: Sequence[Term], p: int, marks: list[str]) -> Alt | None:
    """The marked word the server matched for query position ``p`` instead of the word as typed:
    a joined or split compound, else the nearest word within the server's typo allowance."""
    words = _typed(terms[p])
    if not words or not marks:
        return None
    w = "".join(words)
    prev = "".join(_typed(terms[p - 1])) if p > 0 else ""
    nxt = "".join(_typed(terms[p + 1])) if p + 1 < len(terms) else ""
    for m in marks:
        if m != w and m in (w + nxt, prev + w) or (len(words) > 1 and m == w):
            return Alt(Term([m], m), "compound")
    for a, b in zip(marks, marks[1:]):
        if a + b == w:
            return Alt(Term([a, b], f"{a} {b}", phrase=True), "compound")
    best = min(marks, key=lambda m: (OSA.distance(w, m), m))
    d = OSA.distance(w, best)
    if 0 < d <= max(1, max_typos(w)) + 1:  # (a first-letter typo counts two on the server)
        return Alt(Term([best], best), "typo", d)
    return None
