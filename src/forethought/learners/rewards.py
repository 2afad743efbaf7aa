"""GRPO rewards from a task's own verifier: 1 for a verified-correct answer, 0 otherwise, plus an optional format
reward for a well-formed plan and an optional penalty for a plan that states the answer (the samplers' leak rules).

A completion is split into (plan, answer) exactly as `forethought eval` splits it for the plan format, so GRPO
optimises the quantity the evaluation measures. Verification goes through the verifier's batch call: math answers
are checked in its worker pool with a wall-clock limit, so a pathological completion scores 0 and can neither hang
nor crash training. Model output is data: it is parsed as text, never executed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from pydantic import Field

from forethought.config import StrictModel
from forethought.plans import code
from forethought.plans.leak import plan_leaks
from forethought.tasks.base import Example, Task

__all__ = ["ONE_PASS", "RewardParts", "RewardSettings", "TaskReward", "split_completion"]

ONE_PASS = ("none", "code", "steps")  # plan formats whose plan and answer come in one completion
STEP_OPEN, STEP_CLOSE, PLAN_CLOSE, SOLUTION_OPEN = "<step>", "</step>", "</plan>", "<solution>"
_TAG = re.compile(r"</?(?:step|plan|solution)>")


class RewardSettings(StrictModel):
    """`learner.rewards`: correctness is 1/0; the format reward and the leak penalty are off unless set."""

    format: float = Field(0.0, ge=0)  # added when the plan is present, well formed and closed before the answer
    leak_penalty: float = Field(0.0, ge=0)  # subtracted when the plan states the gold answer (plans/leak.py rules)
    verify_timeout: float = Field(5.0, gt=0)  # seconds per math equivalence check in the verifier's worker pool


@dataclass(frozen=True)
class RewardParts:
    """How one completion was scored; `reward` is what GRPO sees."""

    correct: bool
    extracted: str | None
    well_formed: bool | None  # None for plan format `none` (no plan to check)
    leaked: bool
    reward: float

    def as_dict(self) -> dict:
        return asdict(self)


def split_completion(text: str, plan_format: str) -> tuple[str | None, str, bool | None]:
    """(plan, answer text, well formed) for a completion generated after the format's assistant prefix.

    `none`: no plan, the whole text is the answer. `code` (reply opened by ```python): the plan is the block, the
    answer the text after its closing fence (none if it never closes, as in evaluation); well formed = a non-empty
    plan, closed, then a non-empty answer. `steps` (reply opened by <plan>): the answer is the text after <solution>
    (the whole reply when there is none, as in evaluation); well formed = one or more non-empty <step>..</step>
    then </plan>, nothing else between the tags, then a non-empty solution.
    """
    if plan_format == "none":
        return None, text, None
    if plan_format == "code":
        parsed = code.parse(code.OPEN + text)
        ok = bool(parsed.closed and parsed.plan and parsed.plan.strip() and parsed.response.strip())
        return parsed.plan, parsed.response, ok
    if plan_format == "steps":
        head, tag, solution = text.partition(SOLUTION_OPEN)
        if not tag:
            return None, text, False
        return head, solution, _steps_well_formed(head) and bool(solution.replace("</solution>", "").strip())
    raise ValueError(f"plan format {plan_format!r} is not a one-pass format ({', '.join(ONE_PASS)})")


def _steps_well_formed(head: str) -> bool:
    body = head.strip()
    if not body.endswith(PLAN_CLOSE):
        return False
    body = body[: -len(PLAN_CLOSE)].strip()
    steps = 0
    for piece in re.split(r"(<step>.*?</step>)", body, flags=re.DOTALL):
        if not piece.strip():
            continue
        if not (piece.startswith(STEP_OPEN) and piece.endswith(STEP_CLOSE)):
            return False  # text or tags outside a step
        inner = piece[len(STEP_OPEN): -len(STEP_CLOSE)]
        if not inner.strip() or _TAG.search(inner):
            return False
        steps += 1
    return steps > 0


class TaskReward:
    """The reward function handed to TRL: scores completions with the task's verifier and the plan checks.

    Called by TRL as `reward(prompts=..., completions=..., question_id=[...], completion_ids=[...], ...)`; `sink`,
    when given, receives one dict per completion (question id, completion, reward parts, tokens) for rollouts.jsonl.
    """

    __name__ = "task_reward"  # TRL logs rewards under the function's name

    def __init__(self, task: Task, plan_format: str, settings: RewardSettings, examples: Sequence[Example],
                 sink=None):
        if plan_format not in ONE_PASS:
            raise ValueError(f"plan format {plan_format!r} is not a one-pass format ({', '.join(ONE_PASS)})")
        self.task, self.plan_format, self.settings, self.sink = task, plan_format, settings, sink
        self.examples = {ex.id: ex for ex in examples}

    def score(self, texts: Sequence[str], examples: Sequence[Example]) -> list[RewardParts]:
        """Reward parts of each completion text (generated after the format's prefix) for its example."""
        splits = [split_completion(t, self.plan_format) for t in texts]
        verdicts = self._verify([answer for _, answer, _ in splits], examples)
        out = []
        for (plan, _, ok), v, ex in zip(splits, verdicts, examples):
            leaked = bool(plan) and self._leaks(plan, ex)
            reward = float(v.correct)
            if ok:
                reward += self.settings.format
            if leaked:
                reward -= self.settings.leak_penalty
            out.append(RewardParts(bool(v.correct), v.extracted, ok, leaked, reward))
        return out

    def _verify(self, answers: list[str], examples: Sequence[Example]):
        """The task's verifier with the configured time limit (math runs in the worker pool)."""
        from forethought import verify

        if type(self.task).verify_batch is not Task.verify_batch:  # a task with its own verifier
            return self.task.verify_batch(answers, examples)
        choices = ([len(ex.choices) or None for ex in examples] if self.task.answer_type == "choice" else None)
        return verify.verify_batch(self.task.answer_type, answers, [ex.gold for ex in examples],
                                   num_choices=choices, timeout=self.settings.verify_timeout)

    def _leaks(self, plan: str, ex: Example) -> bool:
        if self.settings.leak_penalty == 0:
            return False
        if self.plan_format == "code":
            return code.leaks(plan, ex.gold, self.task.answer_type, ex.choices, prompt=ex.question)
        return plan_leaks(plan, ex.gold, self.task.answer_type, ex.choices)

    def __call__(self, prompts=None, completions=None, question_id=None, completion_ids=None, **extra) -> list[float]:
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        examples = [self.examples[q] for q in question_id]
        parts = self.score(texts, examples)
        if self.sink is not None:
            state = extra.get("trainer_state")
            step = state.global_step + 1 if state is not None else None  # the optimizer step these rollouts feed
            for k, (q, text, p) in enumerate(zip(question_id, texts, parts)):
                row = {"step": step, "question_id": q, "completion": text, **p.as_dict(),
                       "tokens": len(completion_ids[k]) if completion_ids is not None else None,
                       "token_ids": list(completion_ids[k]) if completion_ids is not None else None}
                for key in ("finish_reason", "logprob_sum", "tokens_in"):
                    if key in extra:
                        row[key] = extra[key][k]
                self.sink(row)
        return [p.reward for p in parts]
