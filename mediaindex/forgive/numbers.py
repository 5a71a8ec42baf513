"""Numbers both ways, for English: digits in the query also find number words in the
transcript and the other way round ("17" / "seventeen", "1953" / "nineteen fifty three",
"50,000" / "fifty thousand", "3rd" / "third").

Digits to words: ``num2words`` (cardinal with and without "and", the year reading, ordinals).
Words to digits: ``text2num`` (``alpha2digit``), plus the year reading it leaves as two numbers.
Token lists are what the FTS tokeniser sees: "fifty-three" is ["fifty", "three"], "50,000" is
["50", "000"].
"""
from __future__ import annotations

import re
from functools import lru_cache

MAX_VALUE = 10 ** 12

_UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
          "sixteen seventeen eighteen nineteen").split()
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = "hundred thousand million billion".split()
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth thirtieth fortieth "
             "fiftieth sixtieth seventieth eightieth ninetieth hundredth thousandth millionth").split()
NUMBER_WORDS = frozenset(_UNITS + _TENS + _SCALES + _ORDINALS)
_JOINERS = frozenset({"and", "oh"})  # "one hundred and five", "nineteen oh five" (inside a run only)

_DIGITS_RE = re.compile(r"\d+")
_ORDINAL_RE = re.compile(r"(\d+)(st|nd|rd|th)")


def is_number_word(token: str) -> bool:
    return token in NUMBER_WORDS


def is_joiner(token: str) -> bool:
    return token in _JOINERS


def _tokens(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


@lru_cache(maxsize=4096)
def words_to_digits(words: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Digit forms (token lists) of a run of number words; () when it is not one number."""
    from text_to_num import alpha2digit

    try:
        out = alpha2digit(" ".join(words), "en", threshold=0).split()
    except Exception:  # noqa: BLE001 - a parser's failure only means "no digit form"
        return ()
    if len(out) == 1 and (_DIGITS_RE.fullmatch(out[0]) or _ORDINAL_RE.fullmatch(out[0])):
        value = out[0]
    elif len(out) == 2 and all(_DIGITS_RE.fullmatch(x) for x in out) and 10 <= int(out[0]) <= 99 \
            and 10 <= int(out[1]) <= 99:
        value = out[0] + out[1]  # "nineteen fifty three" -> 1953
    elif len(out) == 3 and out[1] == "oh" and out[0].isdigit() and out[2].isdigit() and 10 <= int(out[0]) <= 99 \
            and int(out[2]) <= 9:
        value = f"{out[0]}0{out[2]}"  # "nineteen oh five" -> 1905
    else:
        return ()
    forms = [(value,)]
    if value.isdigit() and int(value) >= 10000:
        forms.append(tuple(_grouped(int(value))))  # 50000 -> "50,000" -> ["50", "000"]
    return tuple(forms)


def _grouped(n: int) -> list[str]:
    return f"{n:,}".split(",")


@lru_cache(maxsize=4096)
def digits_to_words(tokens: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    """Word forms (token lists) of a number written in digits: ("1953",), ("50", "000"),
    ("3rd",); () when the tokens are not one whole number."""
    from num2words import num2words

    ordinal = None
    if len(tokens) == 1 and _ORDINAL_RE.fullmatch(tokens[0]):
        ordinal = int(_ORDINAL_RE.fullmatch(tokens[0]).group(1))
    if ordinal is not None:
        if ordinal >= MAX_VALUE:
            return ()
        return (tuple(_tokens(num2words(ordinal, to="ordinal"))),)
    if not tokens or not all(_DIGITS_RE.fullmatch(t) for t in tokens):
        return ()
    if len(tokens) > 1 and (not 1 <= len(tokens[0]) <= 3 or any(len(t) != 3 for t in tokens[1:])):
        return ()  # not thousands groups ("3 5" from "3.5" is not one number)
    digits = "".join(tokens)
    if len(digits) > 1 and digits.startswith("0"):
        return ()  # "007" is a name, not a number
    n = int(digits)
    if n >= MAX_VALUE:
        return ()
    forms: list[tuple[str, ...]] = []
    cardinal = _tokens(num2words(n))
    forms.append(tuple(cardinal))
    if "and" in cardinal:
        forms.append(tuple(t for t in cardinal if t != "and"))
    if 1100 <= n <= 2099 and n % 100:
        forms.append(tuple(_tokens(num2words(n, to="year"))))  # nineteen fifty three
    if len(tokens) > 1:
        forms.append((digits,))  # "50,000" also finds "50000"
    elif n >= 10000:
        forms.append(tuple(_grouped(n)))  # "50000" also finds "50,000"
    return tuple(dict.fromkeys(f for f in forms if f != tokens))
