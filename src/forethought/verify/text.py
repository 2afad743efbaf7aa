"""Short text answers: yes/no (BoolQ) and exact-match targets after "the answer is" (BIG-Bench Hard)."""

from __future__ import annotations

import re

from forethought.verify.numeric import numbers_equal, parse_number

_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\b", re.IGNORECASE)
_ANSWER_COLON = re.compile(r"\banswer\s*:", re.IGNORECASE)
_YESNO = re.compile(r"\b(yes|no|true|false)\b", re.IGNORECASE)
_OPTION = re.compile(r"\(([A-Za-z])\)")
_MARKUP = " \t*_`\"'“”‘’"


def extract_yesno(text: str) -> str | None:
    """The answer as "yes"/"no": after the last "the answer is", else the last standalone yes/no/true/false."""
    markers = list(_ANSWER_IS.finditer(text)) or list(_ANSWER_COLON.finditer(text))
    if markers and (first := _YESNO.search(text, markers[-1].end())):
        word = first.group(1)
    else:
        words = _YESNO.findall(text)
        if not words:
            return None
        word = words[-1]
    return "yes" if word.lower() in ("yes", "true") else "no"


def normalize_yesno(gold: str) -> str | None:
    """A gold yes/no ("Yes", "true", "1"...) as "yes"/"no", or None if it is neither."""
    word = gold.strip().strip(".").lower()
    return {"yes": "yes", "true": "yes", "1": "yes", "no": "no", "false": "no", "0": "no"}.get(word)


def clean_exact(answer: str) -> str:
    """Strip markup, quotes and a final period from an answer and collapse its whitespace."""
    answer = " ".join(answer.split()).strip(_MARKUP)
    answer = answer[:-1] if answer.endswith(".") else answer
    return answer.strip(_MARKUP)


def extract_exact(text: str) -> str | None:
    """The rest of the line after the last "the answer is" (or "Answer:"), cleaned; None if absent or empty."""
    markers = list(_ANSWER_IS.finditer(text)) or list(_ANSWER_COLON.finditer(text))
    if not markers:
        return None
    rest = text[markers[-1].end() :].lstrip(" \t:")
    lines = [line for line in rest.split("\n") if clean_exact(line)]
    return clean_exact(lines[0]) if lines else None


def exact_equal(extracted: str | None, gold: str) -> bool:
    """Case- and space-insensitive match; "(C)" also matches "C" or "(C) text"; numbers compare numerically."""
    if extracted is None:
        return False
    pred, target = clean_exact(extracted).casefold(), clean_exact(gold).casefold()
    if pred == target:
        return True
    if option := _OPTION.fullmatch(target):
        letter = option.group(1)
        return re.match(rf"\(?{letter}(?:\)|$|[\s.:])", pred) is not None
    if parse_number(target) is not None and re.fullmatch(r"[-−$\d.,/\s%]+", target):
        return numbers_equal(pred, target)
    if not re.search(r"\w", target):  # bracket sequences (dyck): spacing does not matter
        return pred.replace(" ", "") == target.replace(" ", "")
    if "," not in target and "," in pred:  # a word list written with commas
        return " ".join(pred.replace(",", " ").split()) == target
    return False
