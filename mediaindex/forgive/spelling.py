"""Spelling variants: British/American (``breame``'s word lists), words written with a hyphen
or an apostrophe ("e-mail" / "email", "don't" / "dont"), split and joined compounds
("sour dough" / "sourdough")."""
from __future__ import annotations

from functools import lru_cache
from typing import Container

MAX_SPLITS = 3


@lru_cache(maxsize=1)
def _variant_tables() -> tuple[dict[str, str], dict[str, str]]:
    from breame.data.spelling_constants import AMERICAN_ENGLISH_SPELLINGS, BRITISH_ENGLISH_SPELLINGS

    return BRITISH_ENGLISH_SPELLINGS, AMERICAN_ENGLISH_SPELLINGS  # british -> american, american -> british


def variants(word: str) -> list[str]:
    """The other spelling(s) of a British or American word ("harbour" -> ["harbor"])."""
    to_us, to_uk = _variant_tables()
    out = [v for v in (to_us.get(word), to_uk.get(word)) if v and v != word]
    return list(dict.fromkeys(out))


def joined(tokens: list[str], vocab: Container[str]) -> str | None:
    """The tokens written as one word, when the index has that word ("e mail" -> "email")."""
    w = "".join(tokens)
    return w if len(tokens) > 1 and w in vocab else None


CONTRACTIONS = frozenset({"s", "t", "d", "m", "ll", "re", "ve"})  # don't, we'll, I'm...


def splits(word: str, vocab: Container[str]) -> list[list[str]]:
    """Ways to cut a word into two index words ("sourdough" -> [["sour", "dough"]]): each part
    has 3+ letters, or one is a single letter before a part of 4+ ("e mail"), or the second is
    a contraction's tail ("don t", "we ll"); the most even cuts first."""
    out = []
    n = len(word)
    for i in sorted(range(1, n), key=lambda i: abs(n - 2 * i)):
        a, b = word[:i], word[i:]
        ok = min(len(a), len(b)) >= 3 or (len(a) == 1 and len(b) >= 4) or (b in CONTRACTIONS and len(a) >= 2)
        if ok and a in vocab and b in vocab:
            out.append([a, b])
            if len(out) >= MAX_SPLITS:
                break
    return out
