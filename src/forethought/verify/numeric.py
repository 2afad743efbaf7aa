"""Numbers in free text (GSM8K style): find the final number and compare numerically.

Numbers are kept as exact `Fraction`s so "18.00", "18" and "36/2" are the same value.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A number token: optional sign (not when it is a binary minus as in "16-3"), optional "$",
# thousands-separated or plain digits with decimals, optional "/denominator".
_NUMBER = re.compile(
    r"(?<![\w.])(?P<sign>[-−–])?(?:\$\s?)?"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    r"(?:\s?/\s?(?P<den>\d+(?:\.\d+)?))?(?![\d])"
)
# Strict markers; the number after the LAST one is the answer.
_MARKER = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|####)", re.IGNORECASE)
_REL_TOL = 1e-6


def _to_fraction(match: re.Match[str]) -> Fraction | None:
    value = Fraction(match["int"].replace(",", ""))
    if match["den"] is not None:
        den = Fraction(match["den"])
        if den == 0:
            return None
        value /= den
    return -value if match["sign"] else value


def format_number(value: Fraction) -> str:
    """Canonical text for a number: "1234", "0.75", "-2.5", or "1/3" when it has no finite decimal."""
    if value.denominator == 1:
        return str(value.numerator)
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return f"{value.numerator}/{value.denominator}"
    # A terminating decimal: scale by a power of ten and place the point.
    digits = 0
    scaled = value
    while scaled.denominator != 1:
        scaled *= 10
        digits += 1
    sign = "-" if scaled < 0 else ""
    text = str(abs(scaled.numerator)).rjust(digits + 1, "0")
    return f"{sign}{text[:-digits]}.{text[-digits:]}"


def parse_number(text: str) -> Fraction | None:
    """The value of `text` if it is one number (units, "$", "%", bold and a final period allowed)."""
    matches = list(_NUMBER.finditer(text))
    if len(matches) != 1:
        return None
    rest = (text[: matches[0].start()] + text[matches[0].end() :]).strip(" *_`'\"$.%")
    if re.search(r"\d", rest):
        return None
    return _to_fraction(matches[0])


def extract_number(text: str) -> str | None:
    """The number after the last "The answer is"/"#### " (strict), else the last number (flexible)."""
    markers = list(_MARKER.finditer(text))
    if markers:
        after = _NUMBER.search(text, markers[-1].end())
        if after is not None and (value := _to_fraction(after)) is not None:
            return format_number(value)
    for match in reversed(list(_NUMBER.finditer(text))):
        if (value := _to_fraction(match)) is not None:
            return format_number(value)
    return None


def numbers_equal(a: str, b: str) -> bool:
    """True when two number strings (as `extract_number` writes them, or plain gold) agree within a tiny tolerance."""
    x, y = parse_number(a), parse_number(b)
    if x is None or y is None:
        return False
    return abs(x - y) <= _REL_TOL * max(1, abs(y))
