"""Option letters in generative multiple-choice answers ("The answer is (B)", "Answer: C", "**D**"...).

Explicit statements win (the last one); loose letters are a fallback, ordered from clearest to vaguest.
"""

from __future__ import annotations

import re
import string

# One option letter: "(b)" or "b)" in any case, a bare capital, or a bare small letter that ends the
# sentence ("the answer is b.") so that the article in "the answer is a dog" is not taken.
_LETTER = (
    r"[*_\"'`\[]*(?:\((?P<p>[A-Za-z])\)|(?P<u>[A-Z])(?:\)|(?![\w']))"
    r"|(?P<l>[a-z])(?:\)|(?=[.:;,!]?[ \t]*(?:$|\n)|[.:;,!]\s)))"
)
_STATEMENTS = [
    # "The answer is (B)", "Answer: C", "the correct option is b)", "my answer would be option D"
    re.compile(
        r"\b(?i:answer|option|choice)\b[^\n.]{0,30}?(?:\bis\b|\bbe\b|:)\s*(?:(?i:option|choice|letter)\b)?\s*:?\s*"
        + _LETTER,
        re.MULTILINE,
    ),
    # "I choose option C", "I'll go with B", "Select (A)"
    re.compile(
        r"\b(?i:choose|pick|select|go\s+with)\s+(?:(?i:option|choice|answer)\s+)?" + _LETTER,
        re.MULTILINE,
    ),
    # "(C) is correct", "B is the right answer"
    re.compile(_LETTER + r"\s+is\s+(?:the\s+)?(?:correct|right|best)\b", re.MULTILINE),
]
_LOOSE = [
    re.compile(r"^[ \t]*[*_\"'`]*\(?([A-Za-z])\)?[.*_\"'`]*[ \t]*$", re.MULTILINE),  # a line that is just "B"
    re.compile(r"\*\*\(?([A-Z])\)?[.:)]?\*\*"),  # **D**
    re.compile(r"\(([A-Z])\)|(?<![\w'])([A-Z])\)"),  # (A) Paris... / B) ...
    re.compile(r"(?<![\w'])([A-Z])(?![\w']|\s+[a-z])"),  # a capital standing alone, not "A cat" or "I think"
]


def valid_letters(num_choices: int | None) -> str:
    """The letters an answer may take: the first `num_choices` capitals, or A..J when unknown."""
    return string.ascii_uppercase[: min(num_choices, 26)] if num_choices else "ABCDEFGHIJ"


def _letters(match: re.Match[str]) -> str | None:
    return next((g for g in match.groups() if g), None)


def extract_choice(text: str, num_choices: int | None = None) -> str | None:
    """The chosen option letter ("A".."J"), or None when the text names no valid option."""
    valid = valid_letters(num_choices)
    statements = [
        (m.start(), letter.upper())
        for pattern in _STATEMENTS
        for m in pattern.finditer(text)
        if (letter := _letters(m)) and letter.upper() in valid
    ]
    if statements:
        return max(statements)[1]
    for pattern in _LOOSE:
        for m in reversed(list(pattern.finditer(text))):
            letter = _letters(m)
            if letter and letter.upper() in valid:
                return letter.upper()
    return None


def normalize_choice(gold: str) -> str | None:
    """A gold option as a capital letter: "(B)", "b", "B." all give "B"; None if it is not a letter."""
    m = re.fullmatch(r"\s*\(?([A-Za-z])[).]?\s*", gold)
    return m.group(1).upper() if m else None
