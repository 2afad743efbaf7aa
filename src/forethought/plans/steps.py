"""What a CPL plan step is: the tagged format, how a continuation becomes a step or a final solution, its reward.

An assistant turn reads `<plan><step>Plan 1: ...</step> ... </plan><solution>... The answer is X.</solution>`.
A node's state is the question plus the assistant text so far (`prefix`); one action is the next step or the
whole solution. Search code (search/mcts.py) calls `messages`, `root_prefix`, `STOP`, `parse` and `solution_text`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from forethought import plans
from forethought.plans import prompts

STEP_OPEN, STEP_CLOSE = "<step>", "</step>"
PLAN_OPEN, PLAN_CLOSE = "<plan>", "</plan>"
SOLUTION_OPEN, SOLUTION_CLOSE = "<solution>", "</solution>"
STOP = (STEP_CLOSE, SOLUTION_CLOSE)


@dataclass(frozen=True)
class Action:
    """One parsed continuation: a plan step, a final solution, or malformed (a terminal failure)."""

    kind: str  # "step" | "solution" | "malformed"
    text: str  # what is appended to the prefix (tags included)


def messages(question: str, answer_type: str, demos=()) -> list[dict]:
    """The chat that asks for a stepwise plan then a solution; optional worked demonstrations come first."""
    out: list[dict] = []
    for d in demos:
        out += [{"role": "user", "content": _ask(d.question, answer_type)},
                {"role": "assistant", "content": render_steps(d.plan.splitlines(), d.solution)}]
    return out + [{"role": "user", "content": _ask(question, answer_type)}]


def _ask(question: str, answer_type: str) -> str:
    return prompts.STEPS.format(question=question.strip(), answer_format=plans.prompts.answer_format(answer_type))


def render_steps(steps: list[str], solution: str) -> str:
    """A complete assistant turn from plain step texts and a solution text."""
    lines = [re.sub(r"^\s*(?:[-*]|\d+[.)])\s*", "", s).strip() for s in steps]  # drop "1." / "-" markers
    body = "".join(f"\n{STEP_OPEN}Plan {k}: {s}{STEP_CLOSE}" for k, s in enumerate((s for s in lines if s), 1))
    return f"{PLAN_OPEN}{body}\n{PLAN_CLOSE}\n{SOLUTION_OPEN}{solution.strip()}{SOLUTION_CLOSE}"


def root_prefix() -> str:
    """The assistant text every tree starts from (no trailing whitespace: chat templates may strip it)."""
    return PLAN_OPEN


def parse(continuation: str, finish_reason: str) -> Action:
    """Classify a continuation generated from a prefix (stop strings already cut off by the engine)."""
    text = continuation.strip()
    if SOLUTION_OPEN in text:
        head, _, body = text.partition(SOLUTION_OPEN)
        if head.replace(PLAN_CLOSE, "").strip() or not body.strip() or finish_reason == "length":
            return Action("malformed", continuation)
        return Action("solution", f"\n{PLAN_CLOSE}\n{SOLUTION_OPEN}{body.strip()}{SOLUTION_CLOSE}")
    if text.startswith(STEP_OPEN) and finish_reason == "stop":
        body = text[len(STEP_OPEN):].strip()
        if body and not any(tag in body for tag in (STEP_OPEN, STEP_CLOSE, PLAN_OPEN, PLAN_CLOSE, SOLUTION_OPEN)):
            return Action("step", f"\n{STEP_OPEN}{body}{STEP_CLOSE}")
    return Action("malformed", continuation)


def solution_text(action_text: str) -> str:
    """The solution body of a solution action (what the verifier reads)."""
    return action_text.partition(SOLUTION_OPEN)[2].removesuffix(SOLUTION_CLOSE).strip()


def step_count(prefix: str) -> int:
    return prefix.count(STEP_CLOSE)
