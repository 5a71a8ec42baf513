"""Text helpers shared by index backends: tokenising, CJK segmentation, query parsing, snippets.

Everything here works on the *original* segment text and returns character offsets into it, so a
backend can map a match to the word the speech engine timed, whatever its own tokeniser does.

- Latin/other scripts: tokens are runs of letters/digits (like SQLite FTS5 ``unicode61``),
  compared case-insensitively with diacritics folded (:func:`fold`).
- Chinese/Japanese (:func:`has_cjk`): runs of CJK characters are cut into words with jieba
  (loaded lazily and quietly, only when CJK text is first seen). :func:`index_text` gives the
  text to hand to an FTS tokeniser that splits on spaces: the jieba words in order, plus the
  jieba search-mode sub-words (``中华人民共和国`` also gives ``中华``, ``人民``, ``共和国``...) so
  a query cut differently from the text still matches.
- Queries (:func:`parse_query`) are untrusted user text: they are reduced to plain terms (words
  and ``"quoted phrases"``), never passed on as query syntax. The last bare word is a prefix
  (search as you type) unless the query ends with a space.
"""
from __future__ import annotations

import html
import logging
import re
import threading
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Iterable, Sequence

# ---- character classes ---------------------------------------------------------------------

# Scripts written without spaces that jieba segments: CJK ideographs (with extensions and
# compatibility ideographs), kana. Hangul is written with spaces and is left to the tokeniser.
_CJK_CHARS = (
    "\u3005\u3007\u3021-\u3029\u3038-\u303c"  # iteration marks, Hangzhou numerals
    "\u3040-\u309f\u30a0-\u30ff\u31f0-\u31ff"  # hiragana, katakana (+ phonetic ext.)
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # ideographs, ext. A, compatibility
    "\uff66-\uff9f"  # half-width katakana
    "\U00020000-\U0003134f"  # ideograph extensions B-G
)
_CJK_RE = re.compile(f"[{_CJK_CHARS}]")
_CJK_RUN_RE = re.compile(f"[{_CJK_CHARS}]+")
# A token of the other scripts: letters/digits (and combining marks), not CJK, not "_".
_LATIN_TOKEN = f"(?:(?![{_CJK_CHARS}])[^\\W_]|[\u0300-\u036f])+"
_TOKEN_RE = re.compile(f"(?P<cjk>[{_CJK_CHARS}]+)|(?P<w>{_LATIN_TOKEN})")


def has_cjk(text: str) -> bool:
    """True when the text contains Chinese/Japanese characters (which need segmenting)."""
    return _CJK_RE.search(text) is not None


def fold(token: str) -> str:
    """Case- and diacritic-insensitive form of a token ("Café" -> "cafe"), like unicode61."""
    t = token.lower()
    if t.isascii():
        return t
    d = unicodedata.normalize("NFD", t)
    return unicodedata.normalize("NFC", "".join(c for c in d if not unicodedata.combining(c)))


# ---- jieba ---------------------------------------------------------------------------------

_jieba_lock = threading.Lock()
_jieba = None


def jieba_tokenizer():
    """The jieba tokenizer, initialised once, quietly (no log lines on stderr)."""
    global _jieba
    if _jieba is None:
        with _jieba_lock:
            if _jieba is None:
                import jieba

                jieba.setLogLevel(logging.WARNING)
                logging.getLogger("jieba").setLevel(logging.WARNING)
                jieba.dt.initialize()
                _jieba = jieba.dt
    return _jieba


def cut(run: str) -> list[str]:
    """jieba words of a CJK run (accurate mode)."""
    return [w for w in jieba_tokenizer().lcut(run) if w.strip()]


def cut_for_search(run: str) -> list[str]:
    """jieba search-mode words of a CJK run: the words plus their dictionary sub-words."""
    return [w for w in jieba_tokenizer().lcut_for_search(run) if w.strip()]


def in_dictionary(word: str) -> bool:
    """True when jieba knows the word (it was not invented by the HMM for this context)."""
    return bool(jieba_tokenizer().FREQ.get(word))


# ---- indexing ------------------------------------------------------------------------------


def index_text(text: str) -> tuple[str, str | None]:
    """(body, extra) to index for a segment text.

    Without CJK the text is returned as is (``extra`` is None): the FTS tokeniser splits it.
    With CJK, each CJK run is replaced by its jieba words separated by spaces (so phrase
    queries over the words still work), and ``extra`` holds the search-mode sub-words that are
    not already words of the body, for matching queries that jieba cut differently.
    """
    if not has_cjk(text):
        return text, None
    extras: list[str] = []

    def repl(m: re.Match) -> str:
        run = m.group()
        words = cut(run)
        seen = set(words)
        for w in cut_for_search(run):
            if w not in seen:
                extras.append(w)
                seen.add(w)
        return " " + " ".join(words) + " "

    body = _CJK_RUN_RE.sub(repl, text)
    return body, (" ".join(extras) or None)


def word_spans(text: str, words: Iterable) -> tuple[list[int], list[float]]:
    """Character spans of the engine's words in ``text`` and their start times.

    Returns (flat [start0, end0, start1, end1, ...], [time0, time1, ...]). Words are located in
    order with ``str.find``; a word that cannot be found (the engine's words differ from the
    text) is skipped, so it never shifts the others.
    """
    spans: list[int] = []
    times: list[float] = []
    pos = 0
    find = text.find
    for w in words:
        wt = w.text.strip()
        if not wt:
            continue
        i = find(wt, pos)
        if i < 0:
            # retry case-insensitively, then give up on this word
            i = text.lower().find(wt.lower(), pos)
            if i < 0:
                continue
        j = i + len(wt)
        spans.append(i)
        spans.append(j)
        times.append(w.start)
        pos = j
    return spans, times


def time_at(offset: int, spans: Sequence[int], times: Sequence[float], default: float) -> float:
    """Start time of the word at character ``offset`` (the one containing it, else the next)."""
    n = len(times)
    if not n:
        return default
    # binary search: last word whose start <= offset
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        if spans[2 * mid] <= offset:
            lo = mid + 1
        else:
            hi = mid
    k = lo - 1
    if k >= 0 and offset < spans[2 * k + 1]:
        return times[k]
    if k + 1 < n:
        return times[k + 1]
    return times[n - 1] if k >= 0 else default


# ---- queries -------------------------------------------------------------------------------


@dataclass
class Term:
    """One query term: a word, a phrase (several tokens in order), or a CJK word.

    ``tokens`` are folded; ``raw`` is the text as typed (for CJK: the jieba word).
    """

    tokens: list[str]
    raw: str
    phrase: bool = False  # quoted by the user or several tokens in one chunk ("don't")
    prefix: bool = False  # the last token may be a prefix
    cjk: bool = False

    @property
    def key(self) -> str:
        return " ".join(self.tokens) + ("*" if self.prefix else "")


@dataclass
class ParsedQuery:
    text: str
    terms: list[Term] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.terms


def _chunk_terms(chunk: str, quoted: bool, prefix: bool) -> list[Term]:
    toks = [(m.group(), m.lastgroup) for m in _TOKEN_RE.finditer(chunk)]
    if not toks:
        return []
    if any(kind == "cjk" for _, kind in toks):
        # CJK words are separate terms (like Latin words); a quoted phrase keeps Latin tokens
        # together only when it has no CJK (the index interleaves sub-words for CJK).
        out: list[Term] = []
        for tok, kind in toks:
            if kind == "cjk":
                for w in cut(tok):
                    if _CJK_RE.search(w):
                        out.append(Term([w], w, cjk=True))
                    else:
                        out.extend(_chunk_terms(w, False, False))
            else:
                out.append(Term([fold(tok)], tok))
        if prefix and out and not out[-1].cjk:
            out[-1].prefix = True
        return out
    tokens = [fold(t) for t, _ in toks]
    return [Term(tokens, chunk.strip(), phrase=len(tokens) > 1 or quoted, prefix=prefix)]


def parse_query(q: str) -> ParsedQuery:
    """Parse untrusted query text into terms. Never raises.

    ``"quoted text"`` is a phrase (an unclosed quote runs to the end); other whitespace-separated
    chunks are words (a chunk like ``don't`` that tokenises into several tokens is a phrase).
    The last word (or unclosed phrase) is a prefix unless the query ends with whitespace.
    Duplicate terms are dropped.
    """
    q = q or ""
    q = q.replace("\x00", " ")
    pq = ParsedQuery(q)
    trailing_space = not q or q[-1].isspace()
    parts: list[tuple[str, bool, bool]] = []  # (chunk, quoted, closed)
    i, n = 0, len(q)
    while i < n:
        c = q[i]
        if c.isspace():
            i += 1
            continue
        if c in "\"\u201c\u201d\u201e":
            j = i + 1
            while j < n and q[j] not in "\"\u201c\u201d\u201e":
                j += 1
            parts.append((q[i + 1 : j], True, j < n))
            i = j + 1
            continue
        j = i
        while j < n and not q[j].isspace() and q[j] not in "\"\u201c\u201d\u201e":
            j += 1
        parts.append((q[i:j], False, True))
        i = j
    seen: set[str] = set()
    for k, (chunk, quoted, closed) in enumerate(parts):
        last = k == len(parts) - 1
        prefix = last and not trailing_space and (not quoted or not closed)
        for t in _chunk_terms(chunk, quoted, prefix):
            if t.key not in seen:
                seen.add(t.key)
                pq.terms.append(t)
    return pq


def fts5_quote(token: str) -> str:
    """A token as an FTS5 string literal (never query syntax)."""
    return '"' + token.replace('"', '""') + '"'


def fts5_term(term: Term) -> str:
    """The FTS5 expression for one term: a quoted word or phrase, with ``*`` for a prefix."""
    s = fts5_quote(" ".join(term.tokens))
    return s + " *" if term.prefix else s


# ---- matching in the original text ---------------------------------------------------------


def _latin_tokens(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), fold(m.group())) for m in _TOKEN_RE.finditer(text) if m.lastgroup == "w"]


_ASCII_ALNUM = "A-Za-z0-9"  # a token character in ASCII text ([^\W_]: no CJK, no marks there)


@lru_cache(maxsize=4096)
def _ascii_word_re(word: str, prefix: bool) -> re.Pattern:
    """One ASCII token (or, with ``prefix``, a token starting with it) as a whole-token pattern
    over ASCII text: the same matches, spans included, as tokenising and comparing folded tokens."""
    tail = f"[{_ASCII_ALNUM}]*" if prefix else f"(?![{_ASCII_ALNUM}])"
    return re.compile(f"(?<![{_ASCII_ALNUM}]){re.escape(word)}{tail}", re.IGNORECASE | re.ASCII)


def find_matches(text: str, terms: Sequence[Term]) -> list[tuple[int, int, int]]:
    """Every occurrence of the terms in ``text``: sorted (start, end, term number)."""
    out: list[tuple[int, int, int]] = []
    toks: list[tuple[int, int, str]] | None = None
    ascii_text = text.isascii()
    for ti, term in enumerate(terms):
        if ascii_text and not term.cjk and len(term.tokens) == 1 and term.tokens[0].isascii():
            # fast path (most segments, most terms): a regex instead of folding every token
            for m in _ascii_word_re(term.tokens[0], term.prefix).finditer(text):
                out.append((m.start(), m.end(), ti))
            continue
        if term.cjk:
            w = term.raw
            i = text.find(w)
            while i >= 0:
                out.append((i, i + len(w), ti))
                i = text.find(w, i + len(w))
            continue
        if toks is None:
            toks = _latin_tokens(text)
        want = term.tokens
        m = len(want)
        for k in range(len(toks) - m + 1):
            ok = True
            for j in range(m):
                tok = toks[k + j][2]
                if j == m - 1 and term.prefix:
                    if not tok.startswith(want[j]):
                        ok = False
                        break
                elif tok != want[j]:
                    ok = False
                    break
            if ok:
                out.append((toks[k][0], toks[k + m - 1][1], ti))
    out.sort()
    return out


def matched_term_count(matches: Sequence[tuple[int, int, int]]) -> int:
    return len({ti for _, _, ti in matches})


def snippet(text: str, matches: Sequence[tuple[int, int, int]], width: int = 200) -> str:
    """HTML snippet: a window of ``text`` around the first match, matches in ``<mark>``.

    Everything else is HTML-escaped, so markup in a transcript stays text.
    """
    if len(text) <= width:
        lo, hi = 0, len(text)
    else:
        first = matches[0][0] if matches else 0
        lo = max(0, first - width // 3)
        if lo > 0:  # start at a word boundary
            sp = text.find(" ", lo, first)
            if sp >= 0:
                lo = sp + 1
        hi = min(len(text), lo + width)
        if hi < len(text):
            sp = text.rfind(" ", max(lo, hi - 30), hi)
            if sp > lo:
                hi = sp
    parts: list[str] = ["\u2026"] if lo > 0 else []
    pos = lo
    for s, e, _ in matches:
        if e <= pos or s >= hi:
            continue
        s = max(s, pos)
        e = min(e, hi)
        parts.append(html.escape(text[pos:s]))
        parts.append("<mark>" + html.escape(text[s:e]) + "</mark>")
        pos = e
    parts.append(html.escape(text[pos:hi]))
    if hi < len(text):
        parts.append("\u2026")
    return "".join(parts).strip()
