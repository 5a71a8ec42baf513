"""The index's vocabulary in memory: candidates for a query word that the index does not have.

- Typos: words within an edit distance (optimal string alignment: a swap of two letters is one
  edit) that grows with the word's length, as in Meilisearch: none below 5 letters, 1 from 5,
  2 from 9. Candidates come from words of a similar length only (rapidfuzz, in C++).
- Sounds like: words sharing a Double Metaphone key (English and other Latin-script names) or,
  for Chinese, the same pinyin without tones (a misheard homophone).
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable

from rapidfuzz import process
from rapidfuzz.distance import OSA

MAX_CANDIDATES = 6  # alternatives kept per query word and kind
SOUND_MIN_LEN = 4  # shorter words sound like too many others


def max_typos(word: str) -> int:
    """Edits forgiven in a word of this length: 0 below 5 letters, 1 from 5, 2 from 9."""
    n = len(word)
    return 2 if n >= 9 else 1 if n >= 5 else 0


def _is_cjk(word: str) -> bool:
    from mediaindex.textsearch import has_cjk

    return has_cjk(word)


def sound_key(word: str) -> str | None:
    """Space-separated phonetic keys of an index word, or None when it has none.

    Latin letters: the Double Metaphone primary and alternate keys. Chinese: ``py:`` and the
    pinyin without tones. Words with digits or shorter than :data:`SOUND_MIN_LEN` have none.
    """
    if word.isascii():
        if len(word) < SOUND_MIN_LEN or not word.isalpha():
            return None
        from doublemetaphone import doublemetaphone

        keys = [k for k in dict.fromkeys(doublemetaphone(word)) if k]
        return " ".join(keys) or None
    if _is_cjk(word):
        from pypinyin import lazy_pinyin

        return "py:" + "".join(lazy_pinyin(word))
    return None


class Vocabulary:
    """Every word the index has seen (never shrinks: callers check a candidate still matches)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.words: set[str] = set()
        self.by_len: dict[int, list[str]] = {}
        self.by_sound: dict[str, list[str]] = {}
        self._pending: list[tuple[str, str | None]] = []  # added, not yet in by_len/by_sound
        self.last_id = 0

    def __contains__(self, word: str) -> bool:
        return word in self.words

    def __len__(self) -> int:
        return len(self.words)

    def add(self, rows: Iterable[tuple[int, str, str | None]]) -> None:
        """Add (id, word, sound key) rows, as read from the index's ``vocab`` table. Cheap: the
        lookup tables are brought up to date by the first search that needs them."""
        with self._lock:
            for rid, word, sound in rows:
                self.last_id = max(self.last_id, rid)
                if word not in self.words:
                    self.words.add(word)
                    self._pending.append((word, sound))

    def _tables(self) -> tuple[dict[int, list[str]], dict[str, list[str]]]:
        """(words by length, words by sound key), with the words added since the last call."""
        if self._pending:
            with self._lock:
                pending, self._pending = self._pending, []
                by_len: dict[int, list[str]] = {}
                by_sound: dict[str, list[str]] = {}
                for word, sound in pending:
                    by_len.setdefault(len(word), []).append(word)
                    for k in (sound or "").split():
                        by_sound.setdefault(k, []).append(word)
                # copy on write: searches in other threads iterate the old lists
                for n, ws in by_len.items():
                    self.by_len[n] = self.by_len.get(n, []) + ws
                for k, ws in by_sound.items():
                    self.by_sound[k] = self.by_sound.get(k, []) + ws
        return self.by_len, self.by_sound

    def typos(self, word: str, df: Callable[[str], int] | None = None) -> list[tuple[str, int]]:
        """Index words within :func:`max_typos` edits of ``word``: [(word, edits)], closest
        first, then the most frequent (when ``df`` is given; words with df 0 are dropped)."""
        k = max_typos(word)
        if not k:
            return []
        found: list[tuple[str, int]] = []
        by_len = self._tables()[0]
        for n in range(len(word) - k, len(word) + k + 1):
            choices = by_len.get(n)
            if choices:
                for cand, dist, _ in process.extract(word, choices, scorer=OSA.distance, score_cutoff=k,
                                                     limit=4 * MAX_CANDIDATES):
                    if cand != word:
                        found.append((cand, int(dist)))
        return _best(found, df)

    def sounds_like(self, word: str, df: Callable[[str], int] | None = None) -> list[tuple[str, int]]:
        """Index words with a phonetic key of ``word`` and not too far in spelling:
        [(word, edits)], closest first."""
        key = sound_key(word)
        if not key:
            return []
        cjk = key.startswith("py:")
        limit = max(3, len(word) // 2)
        found: dict[str, int] = {}
        by_sound = self._tables()[1]
        for k in key.split():
            for cand in by_sound.get(k, ()):
                if cand == word or cand in found:
                    continue
                dist = OSA.distance(word, cand)
                if cjk or (dist <= limit and abs(len(cand) - len(word)) <= 3):
                    found[cand] = dist
        return _best(list(found.items()), df)


def _best(found: list[tuple[str, int]], df: Callable[[str], int] | None) -> list[tuple[str, int]]:
    found.sort(key=lambda x: (x[1], x[0]))
    found = found[:4 * MAX_CANDIDATES]
    if df is not None:
        weighted = [(w, d, df(w)) for w, d in found]
        weighted = [x for x in weighted if x[2] > 0]
        weighted.sort(key=lambda x: (x[1], -x[2], x[0]))
        found = [(w, d) for w, d, _ in weighted]
    return found[:MAX_CANDIDATES]
