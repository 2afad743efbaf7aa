"""Which annotated plans to keep: CodePlan's filters (unterminated or malformed, copied, answer-stating), by reason.

Every check reads the plan as text (plans/code.py); nothing is executed.
"""

from __future__ import annotations

import re

from forethought.plans import code
from forethought.verify.mathexpr import last_boxed
from forethought.verify.numeric import format_number, parse_number

# Why a record is not kept, in the order the checks run (statistics list them in this order).
REASONS = ("empty_input", "input_too_long", "duplicate", "truncated", "unterminated", "empty", "unbalanced",
           "unfinished_block", "not_code", "copies_response", "states_answer")

_HASHES = re.compile(r"####\s*([^\n]+?)\s*$")
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\s*:?\s*([^\n]+?)\s*\.?\s*$", re.IGNORECASE | re.MULTILINE)


def final_answer(response: str) -> str | None:
    """The response's final answer when it states one: GSM8K's '#### X', the last \\boxed{X}, or 'The answer is X'."""
    if m := _HASHES.search(response.strip()):
        return m.group(1).strip()
    if (boxed := last_boxed(response)) is not None:
        return boxed
    found = _ANSWER_IS.findall(response)
    return found[-1].strip(" *$") if found else None


def answer_type(answer: str) -> str:
    """How to look for an answer in a plan: as a number when it is one, as LaTeX when it has any, else as a phrase."""
    if parse_number(answer) is not None:
        return "number"
    return "math" if "\\" in answer or "^" in answer else "exact"


def judge(plan: str, finish: str, prompt: str, response: str, answer: str | None, copy_threshold: float) -> str | None:
    """The first reason (see REASONS) not to keep an annotated plan, or None to keep it. `finish` is the engine's
    finish reason: "stop" means the model closed the ```python block, "length" that it ran out of tokens."""
    if finish == "length":
        return "truncated"
    if finish != "stop":
        return "unterminated"
    if why := code.problem(plan):
        return why
    if code.copies(plan, response, threshold=copy_threshold):
        return "copies_response"
    if answer:
        kind = answer_type(answer)
        gold = format_number(parse_number(answer)) if kind == "number" else answer
        if code.leaks(plan, gold, kind, prompt=prompt):
            return "states_answer"
    return None
