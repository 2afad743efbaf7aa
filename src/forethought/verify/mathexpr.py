"""LaTeX math answers (MATH, MATH-500): the last \\boxed{} and math-verify equivalence in worker processes."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence

from forethought.errors import UserError
from forethought.verify._mathpool import get_pool

_BOX = re.compile(r"\\(?:boxed|fbox)\s*")
_ANSWER_IS = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is)\s*:?[ \t]*([^\n]*)", re.IGNORECASE)


def last_boxed(text: str) -> str | None:
    """Content of the last complete \\boxed{...} or \\fbox{...} (nested braces matched), or of `\\boxed 5`."""
    for match in reversed(list(_BOX.finditer(text))):
        start = match.end()
        if start >= len(text):
            continue
        if text[start] != "{":
            bare = re.match(r"[^\s$]+", text[start:])
            if bare and match.group().endswith(" "):
                return bare.group()
            continue
        depth = 0
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start + 1 : i].strip()
    return None


def _clean(answer: str) -> str:
    """Strip surrounding whitespace, $ delimiters and a final period."""
    answer = answer.strip()
    if inline := re.match(r"\$+([^$]+)\$+", answer):
        answer = inline.group(1)
    return answer.strip().rstrip(".").strip()


def extract_math(text: str) -> str | None:
    """The last boxed answer, else what follows the last "The answer is"; None if neither is there."""
    boxed = last_boxed(text)
    if boxed is not None:
        return _clean(boxed) or None
    found = _ANSWER_IS.findall(text)
    if found:
        return _clean(found[-1]) or None
    return None


def normalize_math_gold(gold: str) -> str:
    """A gold answer as stored: the last boxed part if a whole solution was given, else the text stripped."""
    boxed = last_boxed(gold)
    return _clean(boxed if boxed is not None else gold)


def _light(s: str) -> str:
    """Cheap normalisation for the string-equality fast path (never decides "not equal")."""
    s = re.sub(r"\\[dt]frac", r"\\frac", s)
    s = re.sub(r"\\(?:left|right)(?![a-zA-Z])", "", s)
    s = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\[,!;: ]|\s+|\$", "", s)
    return s.rstrip(".")


def _pool_answer(answer: str) -> str:
    """An answer as the worker wraps it in $...$: escaped and bare dollar signs removed."""
    return answer.replace("\\$", "").replace("$", "").strip()


def equivalent_math_many(pairs: Sequence[tuple[str | None, str]], timeout: float = 5.0) -> list[bool]:
    """Equivalence of each (extracted, gold): fast path first, then math-verify in the worker pool."""
    results = [False] * len(pairs)
    todo: list[int] = []
    for i, (pred, gold) in enumerate(pairs):
        if pred is None or not pred.strip():
            continue
        if _light(pred) == _light(normalize_math_gold(gold)):
            results[i] = True
        else:
            todo.append(i)
    if todo:
        if importlib.util.find_spec("math_verify") is None:
            raise UserError("math answers need the 'math-verify' package: pip install math-verify")
        checked = get_pool().compare(
            [(_pool_answer(normalize_math_gold(pairs[i][1])), _pool_answer(pairs[i][0] or "")) for i in todo],
            timeout,
        )
        for i, ok in zip(todo, checked):
            results[i] = ok
    return results
