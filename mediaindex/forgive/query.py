"""Query syntax, and the forgiving expansion of a parsed query.

Syntax (the same for every backend): words are ANDed; ``"quoted words"`` are a phrase; the
last word is a prefix unless the query ends with a space (search as you type); ``-word`` or
``-"a phrase"`` leaves out segments that have it; ``a OR b`` (upper-case OR) matches either.
Everything else is plain text, never the index's own query language.

:func:`expand` turns each query position into an :class:`AnyOf` of the words as typed and the
index words they may stand for: numbers in digits or words, British/American spellings, the
word with or without its hyphen or apostrophe, split or joined compounds, and, for a word the
index does not have, index words within a few typos or that sound the same.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mediaindex.textsearch import Term, _chunk_terms

from . import numbers, spelling
from .vocab import Vocabulary

_QUOTES = "\"\u201c\u201d\u201e"
EXACT = ("exact", "or")  # the reasons an alternative counts as the query as typed
MAX_FUZZY_WORDS = 4  # query words that get typo/sound-alike candidates, at most
KINDS = frozenset({"number", "spelling", "compound", "typo", "sound"})  # what can be forgiven


@dataclass
class Alt:
    """One way to match a query position."""

    term: Term
    why: str = "exact"  # exact | or | number | spelling | compound | typo | sound
    cost: int = 0  # 0: the same word written otherwise; 1-2: typos or sound-alike


@dataclass
class AnyOf(Term):
    """A query position that any of several terms matches (``OR``, forgiving alternatives)."""

    alts: list[Alt] = field(default_factory=list)

    @property
    def key(self) -> str:
        return "(" + "|".join(a.term.key for a in self.alts) + ")"


@dataclass
class Excluded(Term):
    """A ``-word``: segments that have it are left out."""


# ---- syntax --------------------------------------------------------------------------------


def _parts(q: str) -> list[tuple[str, bool, bool, bool]]:
    """(chunk, quoted, closed, negated) for each whitespace-separated chunk or quoted phrase."""
    parts = []
    i, n = 0, len(q)
    while i < n:
        if q[i].isspace():
            i += 1
            continue
        neg = q[i] == "-" and i + 1 < n and not q[i + 1].isspace()
        if neg:
            i += 1
        if q[i] in _QUOTES:
            j = i + 1
            while j < n and q[j] not in _QUOTES:
                j += 1
            parts.append((q[i + 1:j], True, j < n, neg))
            i = j + 1
            continue
        j = i
        while j < n and not q[j].isspace() and q[j] not in _QUOTES:
            j += 1
        parts.append((q[i:j], False, True, neg))
        i = j
    return parts


def parse_search(q: str) -> tuple[list[Term], list[Excluded]]:
    """(terms to match, terms to exclude) of untrusted query text. Never raises.

    Like :func:`mediaindex.textsearch.parse_query`, plus ``-word`` / ``-"phrase"`` and ``OR``.
    A ``-`` inside a word ("e-mail") is part of the word; ``OR`` at either end is ignored.
    """
    q = (q or "").replace("\x00", " ")
    trailing_space = not q or q[-1].isspace()
    parts = _parts(q)
    terms: list[Term] = []
    excluded: list[Excluded] = []
    seen: set[str] = set()
    or_next = False
    for k, (chunk, quoted, closed, neg) in enumerate(parts):
        last = k == len(parts) - 1
        if chunk == "OR" and not quoted and not neg:
            or_next = bool(terms) and not last
            continue
        prefix = last and not trailing_space and (not quoted or not closed) and not neg
        ts = _chunk_terms(chunk, quoted, prefix)
        if not ts:
            continue
        if neg:
            excluded += [Excluded(t.tokens, t.raw, t.phrase, False, t.cjk) for t in ts]
            or_next = False
            continue
        if or_next:
            prev = terms.pop()
            alts = list(prev.alts) if isinstance(prev, AnyOf) else [Alt(prev, "or")]
            alts.append(Alt(ts[0], "or"))
            terms.append(AnyOf([], f"{prev.raw} OR {ts[0].raw}", alts=alts))
            ts = ts[1:]
            or_next = False
        for t in ts:
            if t.key not in seen:
                seen.add(t.key)
                terms.append(t)
    return terms, excluded


# ---- forgiving -----------------------------------------------------------------------------


def _word(t: Term) -> str | None:
    """The single folded word of a plain word term (not a phrase, OR group or CJK word)."""
    if isinstance(t, AnyOf) or t.cjk or len(t.tokens) != 1:
        return None
    return t.tokens[0]


def _numberish(t: Term) -> bool:
    return (not isinstance(t, AnyOf) and not t.cjk and bool(t.tokens)
            and all(numbers.is_number_word(x) or numbers.is_joiner(x) for x in t.tokens))


def _number_run(terms: Sequence[Term], i: int) -> tuple[int, list[Alt]]:
    """(end, alternatives) of the run of number words starting at terms[i]; (i, []) if none."""
    j = i
    while j < len(terms) and _numberish(terms[j]):
        j += 1
    while j > i and all(numbers.is_joiner(x) for x in terms[j - 1].tokens):
        j -= 1  # "and" ends no number
    if j == i or numbers.is_joiner(terms[i].tokens[0]):
        return i, []
    run = terms[i:j]
    tokens = [x for t in run for x in t.tokens]
    forms = numbers.words_to_digits(tuple(tokens))
    if not forms:
        return i, []
    exact = run[0] if len(run) == 1 else Term(tokens, " ".join(t.raw for t in run), phrase=True,
                                               prefix=run[-1].prefix)
    alts = [Alt(exact)] + [Alt(Term(list(f), " ".join(f) if len(f) == 1 else ",".join(f), phrase=len(f) > 1),
                               "number") for f in forms]
    return j, alts


def _word_alts(t: Term, vocab: Vocabulary, df: Callable[[Term], int], word_df: Callable[[str], int],
               fuzzy: list[int], kinds: frozenset[str] = KINDS) -> list[Alt]:
    """Alternatives of one term (besides the term itself). ``fuzzy[0]``: how many more words
    may get typo and sound-alike candidates (decremented here)."""
    alts: list[Alt] = []
    if t.cjk:
        if df(t) == 0 and fuzzy[0] > 0 and "sound" in kinds:
            fuzzy[0] -= 1
            alts += [Alt(Term([w], w, cjk=True), "sound", 1) for w, _ in vocab.sounds_like(t.raw, word_df)]
        return alts
    digits = numbers.digits_to_words(tuple(t.tokens))
    if digits:
        return [Alt(Term(list(f), " ".join(f), phrase=len(f) > 1), "number") for f in digits]
    if len(t.tokens) > 1:  # "e-mail", "don't": also the word written as one
        j = spelling.joined(t.tokens, vocab) if not any(c.isspace() for c in t.raw) else None
        return [Alt(Term([j], j), "compound")] if j else []
    w = t.tokens[0]
    alts += [Alt(Term([v], v), "spelling") for v in spelling.variants(w)]
    if not t.prefix:
        alts += [Alt(Term(p, " ".join(p), phrase=True), "compound") for p in spelling.splits(w, vocab)]
    if w in vocab or df(t) > 0 or any(word_df(a.term.tokens[0]) > 0 for a in alts if a.why == "spelling"):
        return alts  # a word the index has (if only in a title) is not a typo
    if any(ch.isdigit() for ch in w) or fuzzy[0] <= 0:
        return alts  # codes and numbers are not typos; a long query pays for a few words only
    fuzzy[0] -= 1
    typos = vocab.typos(w, word_df) if "typo" in kinds else []
    alts += [Alt(Term([c], c), "typo", d) for c, d in typos]
    have = {c for c, _ in typos}
    if "sound" in kinds:
        alts += [Alt(Term([c], c), "sound", 1 if d <= 2 else 2) for c, d in vocab.sounds_like(w, word_df)
                 if c not in have]
    return alts


def expand(terms: Sequence[Term], vocab: Vocabulary, df: Callable[[Term], int],
           word_df: Callable[[str], int], kinds: frozenset[str] = KINDS) -> list[Term] | None:
    """The query's positions with their alternatives (:class:`AnyOf`), or None when no word
    has any. ``df`` counts a term's documents, ``word_df`` an index word's (0: not there).

    Typos and sounds-like are tried only for a word the index has never seen (nor its other
    spelling), for the first :data:`MAX_FUZZY_WORDS` such words; numbers, spellings,
    hyphens/apostrophes, splits and joins always. ``kinds``: typo and sound-alike candidates are
    looked for only when named there (the other kinds are cheap: callers drop what they do not want).
    """
    fuzzy = [MAX_FUZZY_WORDS]
    out: list[Term] = []
    changed = False
    i = 0
    while i < len(terms):
        t = terms[i]
        j, alts = _number_run(terms, i)
        if alts:
            out.append(AnyOf([], alts[0].term.raw, alts=alts))
            changed = True
            i = j
            continue
        nxt = terms[i + 1] if i + 1 < len(terms) else None
        a, b = _word(t), (_word(nxt) if nxt is not None else None)
        if a and b and not t.prefix:
            j_word = a + b
            if j_word in vocab and word_df(j_word) > 0:  # "sour dough" -> also "sourdough"
                both = Term([a, b], f"{t.raw} {nxt.raw}", phrase=True, prefix=nxt.prefix)
                out.append(AnyOf([], both.raw, alts=[Alt(both), Alt(Term([j_word], j_word, prefix=nxt.prefix),
                                                                 "compound")]))
                changed = True
                i += 2
                continue
        extra = [] if isinstance(t, AnyOf) else _word_alts(t, vocab, df, word_df, fuzzy, kinds)
        if extra:
            out.append(AnyOf([], t.raw, alts=[Alt(t)] + extra))
            changed = True
        else:
            out.append(t)
        i += 1
    return out if changed else None


# ---- matching ------------------------------------------------------------------------------


def flatten(terms: Sequence[Term]) -> tuple[list[Term], list[int], list[Alt]]:
    """(every term to look for in a text, the query position of each, its Alt)."""
    flat: list[Term] = []
    pos: list[int] = []
    alts: list[Alt] = []
    for gi, t in enumerate(terms):
        for a in (t.alts if isinstance(t, AnyOf) else [Alt(t)]):
            flat.append(a.term)
            pos.append(gi)
            alts.append(a)
    return flat, pos, alts


def best_start(matches: Sequence[tuple[int, int, int]], pos: Sequence[int]) -> int | None:
    """Start offset of the best run of query words in a text: the shortest stretch with the
    most query positions in it (the earliest on ties); None without matches.

    ``matches`` are sorted (start, end, flat term index), ``pos`` maps a flat index to its
    query position.
    """
    if not matches:
        return None
    want = len({pos[ti] for _, _, ti in matches})
    if want == 1:
        return matches[0][0]
    counts: dict[int, int] = {}
    have = 0
    lo = 0
    best: tuple[int, int] | None = None  # (length, start)
    for hi, (_, end, ti) in enumerate(matches):
        p = pos[ti]
        counts[p] = counts.get(p, 0) + 1
        if counts[p] == 1:
            have += 1
        while have == want:
            start = matches[lo][0]
            if best is None or end - start < best[0]:
                best = (end - start, start)
            lp = pos[matches[lo][2]]
            counts[lp] -= 1
            if counts[lp] == 0:
                have -= 1
            lo += 1
    return best[1] if best else matches[0][0]


def match_cost(matches: Sequence[tuple[int, int, int]], pos: Sequence[int], alts: Sequence[Alt],
               n_positions: int) -> tuple[int, int]:
    """(positions matched only through a forgiven alternative, their summed edit cost) of a text."""
    best: dict[int, tuple[int, int]] = {}
    for _, _, ti in matches:
        a = alts[ti]
        c = (0, 0) if a.why in EXACT else (1, a.cost)
        p = pos[ti]
        if p not in best or c < best[p]:
            best[p] = c
    forgiven = sum(c[0] for c in best.values())
    return forgiven, sum(c[1] for c in best.values())


def forgiven_summary(hits: Sequence[Any], picks: Sequence[dict[int, Alt]], terms: Sequence[Term],
                     exact_total: int) -> tuple[str | None, list[dict[str, Any]]]:
    """(did you mean, [{word, matched, why}]) for the hits shown: which index words matched
    instead of the words as typed. ``did_you_mean`` only when nothing matched as typed. Query
    positions in a row matched by one and the same alternative (two words joined into one by a
    server) count as one word."""
    def typed(p: int) -> str:
        t = terms[p]
        return t.alts[0].term.raw if isinstance(t, AnyOf) else t.raw

    def groups(pick: dict[int, Alt]) -> list[tuple[list[int], Alt | None]]:
        out: list[tuple[list[int], Alt | None]] = []
        for p in range(len(terms)):
            a = pick.get(p)
            if out and a is not None and out[-1][1] is a:
                out[-1][0].append(p)
            else:
                out.append(([p], a))
        return out

    found: dict[tuple[str, str], list[str]] = {}
    for pick in picks:
        for ps, a in groups(pick):
            if a is not None and a.why not in EXACT:
                words = found.setdefault((" ".join(typed(p) for p in ps), a.why), [])
                if a.term.raw not in words:
                    words.append(a.term.raw)
    forgiven = [{"word": w, "matched": m, "why": why} for (w, why), m in found.items()]
    did_you_mean = None
    if exact_total == 0 and hits and hits[0].forgiven:
        did_you_mean = " ".join(a.term.raw if a is not None and a.why not in EXACT else " ".join(typed(p) for p in ps)
                                for ps, a in groups(picks[0]))
    return did_you_mean, forgiven
