"""Information bypassing: does a plan made with the gold answer in view give that answer away?

One rule per answer type. A short gold ("yes", "B", "x") is only caught when stated as the answer, so that
the word or letter appearing in ordinary text does not make every plan leak; step numbers are not answers. A
number counts written in digits or in words ("nine", "twenty-four", "one hundred and five"); ordinals ("first"),
"step one" and "one" as a pronoun ("one by one", "each one") do not. Naming or comparing options ("option A ...
option B") states nothing; "the answer is B", "choose option B", "option B is correct" do.
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
        return any(_number(m[0]) == value and not _is_step_number(plan, m.start(), m.end())
                   for m in _NUMBER.finditer(plan)) or value in _word_numbers(plan)
    if answer_type == "math":
        norm = _latex(gold)
        return len(norm) >= MIN_PHRASE and norm in _latex(plan)
    if answer_type == "exact":
        return len(gold) >= MIN_PHRASE and _has_phrase(plan, gold)
    return False  # yesno: only a stated answer counts


_BE = r"(?:is|:|=|would\s+be|will\s+be|should\s+be|must\s+be)"
_STATED = re.compile(rf"(?:answer\s*{_BE}|\\boxed\{{|\b(?:correct|right|best|final)\s+(?:option|choice)\s*{_BE}"
                     r"|\b(?:choose|chose|choosing|pick|picked|picking|select|selected|selecting|go(?:ing)?\s+with)"
                     r"\s+(?:option\s+|choice\s+|answer\s+)?)", re.IGNORECASE)
_VERDICT = re.compile(r"\s+(?:is|must\s+be|would\s+be|should\s+be)\s+(?:the\s+)?(?:correct|right|best|answer)\b",
                      re.IGNORECASE)  # after the gold: "(B) is the right answer"
_ASKED = re.compile(r"\b(?:whether|if)\s+(?:option\s+|choice\s+)?[*\"'(]*$", re.IGNORECASE)  # "check whether B is"
_OPENERS = re.compile(r"\s*[*\"'(]")
_SPACES = re.compile(r"\s*")


def _states_answer(plan: str, gold: str) -> bool:
    """'the answer is GOLD', 'answer: (GOLD)', '\\boxed{GOLD}', 'choose option GOLD', 'GOLD is correct'... (fixed
    regexes, no compile per gold). Merely naming an option ('option B says ...') states nothing."""
    return (any(follows(plan, m.end(), gold) for m in _STATED.finditer(plan))
            or any(_precedes(plan, m.start(), gold) for m in _VERDICT.finditer(plan)))


def _precedes(text: str, pos: int, gold: str) -> bool:
    """`gold` (case-insensitive, a whole word, brackets and quotes allowed) ends at `pos`, and is not asked about."""
    end = len(text[:pos].rstrip(")*\"' "))
    start = end - len(gold)
    return (start >= 0 and text[start:end].lower() == gold.lower()
            and (start == 0 or not (text[start - 1].isalnum() or text[start - 1] == "_"))
            and not _ASKED.search(text[max(0, start - 30):start]))


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


def _is_step_number(text: str, start: int, end: int) -> bool:
    """'1.' / '2)' / 'Two:' opening a line, or 'Step 2' / 'step two': an enumeration, not a quantity."""
    line = text[text.rfind("\n", 0, start) + 1 : start]
    after = text[end : end + 1]
    return bool(_LIST_MARKER.fullmatch(line) and after in (".", ")", ":")) or bool(_STEP_WORD.match(line[-40:]))


_UNITS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve thirteen "
                                     "fourteen fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_SCALES = {"thousand": 10**3, "million": 10**6, "billion": 10**9}
_WORDS = re.compile(r"[A-Za-z]+(?:-[A-Za-z]+)*")  # "twenty-four", and "twenty-first" / "three-step" as one word
_PRONOUN = re.compile(r"\b(?:each|every|any|no|which|this|that|the|other|another|one\s+by)\s+$", re.IGNORECASE)
_PRONOUN_AFTER = re.compile(r"\s+(?:of|by|another)\b", re.IGNORECASE)
_NEGATIVE = re.compile(r"\bnegative\s+$", re.IGNORECASE)


def _word_numbers(text: str) -> set[int]:
    """Values of the numbers written in words ("nine", "twenty-four", "a hundred", "one hundred and five",
    "negative five"), leaving out enumerations ("step two", a line opening "Two."), ordinals and compounds with
    other words ("first", "twenty-first", "one-third", "three-step"), and "one" as a pronoun ("one of", "each one")."""
    out: set[int] = set()
    words = [(m.start(), m.end(), m[0].lower()) for m in _WORDS.finditer(text)]
    i = 0
    while i < len(words):
        value, j = _read_number(text, words, i)
        if value is None:
            i += 1
            continue
        start, end = words[i][0], words[j - 1][1]
        pronoun = words[i][2] == "one" and j == i + 1 and bool(_PRONOUN.search(text[max(0, start - 20):start])
                                                              or _PRONOUN_AFTER.match(text, end))
        if not pronoun and not _is_step_number(text, start, end):
            out.add(-value if _NEGATIVE.search(text[max(0, start - 20):start]) else value)
        i = j
    return out


def _read_number(text: str, words: list[tuple[int, int, str]], i: int) -> tuple[int | None, int]:
    """The number written in words from `words[i]` on (None: none) and the index of the word after it."""
    total = current = 0
    last, value, j = None, None, i  # last: the kind of the previous word (unit, teen, tens, hundred, scale)
    while j < len(words):
        start, _, word = words[j]
        gap = text[words[j - 1][1]:start] if j > i else " "
        nxt = words[j + 1][2] if j + 1 < len(words) else ""
        if not (gap == " " or (gap == ", " and last == "scale")):
            break
        if word == "a" and j == i and (nxt == "hundred" or nxt in _SCALES):
            current, last, j = 1, "unit", j + 1  # "a hundred"
            continue
        if word == "and" and last in ("hundred", "scale") and nxt.split("-")[0] in {**_UNITS, **_TENS}:
            j += 1  # "one hundred and five"
            continue
        for part in word.split("-"):
            if part in _TENS and last in (None, "hundred", "scale"):
                current, last = current + _TENS[part], "tens"
            elif part in _UNITS and _UNITS[part] < 10 and last in (None, "tens", "hundred", "scale"):
                current, last = current + _UNITS[part], "unit"
            elif part in _UNITS and last in (None, "hundred", "scale"):
                current, last = current + _UNITS[part], "teen"
            elif part == "hundred" and last in ("unit", "teen") and current < 100:
                current, last = current * 100, "hundred"
            elif part in _SCALES and last in ("unit", "teen", "tens", "hundred"):
                total, current, last = total + current * _SCALES[part], 0, "scale"
            else:
                return value, j  # not a number word, or one that does not continue this number
        value, j = total + current, j + 1
    return value, j


def _latex(text: str) -> str:
    return _LATEX_NOISE.sub("", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
