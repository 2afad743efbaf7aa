"""Answer extraction and equivalence for checkable tasks: number, math, choice, yesno and exact.

`verify` pulls the answer out of a model output and compares it with the gold; math goes through
math-verify in worker processes with a wall-clock limit, the other types are cheap string work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from forethought.errors import UserError
from forethought.verify.choice import extract_choice, normalize_choice
from forethought.verify.mathexpr import equivalent_math_many, extract_math, normalize_math_gold
from forethought.verify.numeric import extract_number, numbers_equal
from forethought.verify.text import clean_exact, exact_equal, extract_exact, extract_yesno, normalize_yesno

ANSWER_TYPES: tuple[str, ...] = ("number", "math", "choice", "yesno", "exact")

__all__ = ["ANSWER_TYPES", "Verdict", "equivalent", "equivalent_many", "extract", "normalize_gold", "verify",
           "verify_batch"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one output: the answer found (normalised; None = unparseable) and whether it is right."""

    extracted: str | None
    correct: bool


def _check_type(answer_type: str) -> None:
    if answer_type not in ANSWER_TYPES:
        raise UserError(f"unknown answer type {answer_type!r}; choose one of: {', '.join(ANSWER_TYPES)}")


def extract(answer_type: str, text: str, *, num_choices: int | None = None) -> str | None:
    """The answer in a model output, normalised for its type; None when none can be found."""
    _check_type(answer_type)
    if answer_type == "number":
        return extract_number(text)
    if answer_type == "math":
        return extract_math(text)
    if answer_type == "choice":
        return extract_choice(text, num_choices)
    if answer_type == "yesno":
        return extract_yesno(text)
    return extract_exact(text)


def normalize_gold(answer_type: str, gold: str) -> str:
    """A gold answer in the form `extract` gives ("1,234" -> "1234", "(B)" -> "B" for choice, kept for exact).

    Raises UserError when the gold cannot be an answer of this type (e.g. a number gold with no number).
    """
    _check_type(answer_type)
    if answer_type == "number":
        value = extract_number(gold)
    elif answer_type == "math":
        value = normalize_math_gold(gold) or None
    elif answer_type == "choice":
        value = normalize_choice(gold)
    elif answer_type == "yesno":
        value = normalize_yesno(gold)
    else:
        value = clean_exact(gold) or None
    if value is None:
        raise UserError(f"gold answer {gold!r} is not a valid {answer_type!r} answer; fix the gold field of that row")
    return value


def _cheap_equal(answer_type: str, extracted: str, gold: str) -> bool:
    """Equivalence for every type but math."""
    gold = normalize_gold(answer_type, gold)
    if answer_type == "number":
        return numbers_equal(extracted, gold)
    if answer_type in ("choice", "yesno"):
        return extracted.strip().upper() == gold.upper()
    return exact_equal(extracted, gold)


def equivalent(answer_type: str, extracted: str | None, gold: str, *, timeout: float = 5.0) -> bool:
    """Whether an extracted answer matches the gold; False for None. Math is limited to `timeout` seconds."""
    _check_type(answer_type)
    if answer_type == "math":
        return equivalent_math_many([(extracted, gold)], timeout)[0]
    return extracted is not None and _cheap_equal(answer_type, extracted, gold)


def equivalent_many(answer_type: str, pairs: Sequence[tuple[str, str]], *, timeout: float = 5.0) -> list[bool]:
    """`equivalent` for many (answer, reference) pairs, e.g. two extracted answers (math: one worker-pool call)."""
    _check_type(answer_type)
    if answer_type == "math":
        return equivalent_math_many(list(pairs), timeout)
    out = []
    for a, b in pairs:
        try:
            out.append(a is not None and _cheap_equal(answer_type, a, b))
        except UserError:  # a reference that is no answer of this type equals nothing
            out.append(False)
    return out


def verify(
    answer_type: str, text: str, gold: str, *, num_choices: int | None = None, timeout: float = 5.0
) -> Verdict:
    """Extract the answer from `text` and compare it with `gold`."""
    extracted = extract(answer_type, text, num_choices=num_choices)
    return Verdict(extracted, equivalent(answer_type, extracted, gold, timeout=timeout))


def verify_batch(
    answer_type: str,
    texts: Sequence[str],
    golds: Sequence[str],
    *,
    num_choices: int | Sequence[int | None] | None = None,
    timeout: float = 5.0,
) -> list[Verdict]:
    """`verify` for many outputs; math pairs go to the worker pool in one call and run in parallel."""
    _check_type(answer_type)
    if len(texts) != len(golds):
        raise ValueError(f"verify_batch got {len(texts)} texts but {len(golds)} golds")
    if num_choices is None or isinstance(num_choices, int):
        choices: Sequence[int | None] = [num_choices] * len(texts)
    else:
        choices = num_choices
        if len(choices) != len(texts):
            raise ValueError(f"verify_batch got {len(texts)} texts but {len(choices)} num_choices")
    extracted = [extract(answer_type, t, num_choices=n) for t, n in zip(texts, choices)]
    if answer_type == "math":
        correct = equivalent_math_many(list(zip(extracted, golds)), timeout)
    else:
        correct = [e is not None and _cheap_equal(answer_type, e, g) for e, g in zip(extracted, golds)]
    return [Verdict(e, c) for e, c in zip(extracted, correct)]
