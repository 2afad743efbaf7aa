"""Information bypassing: does a plan made with the gold answer in view give that answer away?

One rule per answer type. A short gold ("yes", "B", "x") is only caught when stated as the answer, so that
the word or letter appearing in ordinary text does not make every plan leak; step numbers are not answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from fractions import Fraction

_NUMBER = re.compile(r"(?<![\w.])[-−]?\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?(?![\w]|\.\d)")
_LIST_MARKER = re.compile(r"[\s#*>-]*")
_STEP_WORD = re.compile(r".*\b(?:step|stage|part|phase)\s*$", re.IGNORECASE)
_LATEX_NOISE = re.compile(r"\s+|\$|\\left|\\right|\\[,!;]")
MIN_PHRASE = 3  # a gold (or option text) shorter than this is only caught when stated as the answer


def plan_leaks(plan: str, gold: str, answer_type: str, choices: Sequence[str] = ()) -> bool:
    """True when `plan` contains the gold answer (its number, LaTeX, option text, or "the answer is GOLD")."""
    gold = gold.strip()
    if not gold:
        return False
    if answer_type == "choice":
        return _states_answer(plan, gold) or _option_leaks(plan, gold, choices)
    if _states_answer(plan, gold):
        return True
    if (value := _number(gold)) is not None:
        return any(_number(m[0]) == value and not _is_step_number(plan, m) for m in _NUMBER.finditer(plan))
    if answer_type == "math":
        norm = _latex(gold)
        return len(norm) >= MIN_PHRASE and norm in _latex(plan)
    if answer_type == "exact":
        return len(gold) >= MIN_PHRASE and _has_phrase(plan, gold)
    return False  # yesno: only a stated answer counts


_STATED = re.compile(r"(?:answer\s*(?:is|:|=|would\s+be|will\s+be|should\s+be)|\\boxed\{|\b(?:option|choice)\s)",
                     re.IGNORECASE)
_OPENERS = re.compile(r"\s*[*\"'(]")
_SPACES = re.compile(r"\s*")


def _states_answer(plan: str, gold: str) -> bool:
    """'the answer is GOLD', 'answer: (GOLD)', '\\boxed{GOLD}', 'option GOLD'... (one fixed regex, no compile per gold)"""
    return any(follows(plan, m.end(), gold) for m in _STATED.finditer(plan))


def follows(text: str, pos: int, gold: str) -> bool:
    """`gold` (case-insensitive, not followed by a word character) starts at `pos` after spaces and any of *"'("""
    gold = gold.lower()
    while True:
        start = _SPACES.match(text, pos).end()
        end = start + len(gold)
        if text[start:end].lower() == gold and (end == len(text) or not (text[end].isalnum() or text[end] == "_")):
            return True
        opener = _OPENERS.match(text, pos)
        if opener is None:
            return False
        pos = opener.end()


def _option_leaks(plan: str, letter: str, choices: Sequence[str]) -> bool:
    """The correct option's text appears and no other option's text does (listing all options gives nothing away)."""
    index = ord(letter.upper()) - ord("A")
    if not 0 <= index < len(choices) or len(choices[index].strip()) < MIN_PHRASE:
        return False
    others = [c for i, c in enumerate(choices) if i != index and len(c.strip()) >= MIN_PHRASE]
    return _has_phrase(plan, choices[index].strip()) and not any(_has_phrase(plan, c.strip()) for c in others)


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", text, re.IGNORECASE) is not None


def _number(text: str) -> Fraction | None:
    try:
        return Fraction(text.replace(",", "").replace("$", "").replace("−", "-").strip())
    except (ValueError, ZeroDivisionError):
        return None


def _is_step_number(text: str, m: re.Match) -> bool:
    """'1.' / '2)' opening a line, or 'Step 2': an enumeration, not a quantity."""
    line = text[text.rfind("\n", 0, m.start()) + 1 : m.start()]
    after = text[m.end() : m.end() + 1]
    return bool(_LIST_MARKER.fullmatch(line) and after in (".", ")", ":")) or bool(_STEP_WORD.match(line))


def _latex(text: str) -> str:
    return _LATEX_NOISE.sub("", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
