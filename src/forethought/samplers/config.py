"""The `sampler:` section of a run recipe: which E-step strategy, which plan format, and its per-question budget."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from forethought.config import StrictModel
from forethought.plans import IMPLEMENTED


class SamplerConfig(StrictModel):
    """How training trajectories are drawn for one iteration (see METHODS.md for what each kind is)."""

    kind: Literal["rejection", "star", "pps", "lepa"] = "rejection"
    plan_format: Literal["none", "natural", "code", "steps"] = "none"
    trials: int = Field(5, ge=1)        # max trials per question (rejection: samples; star: 1 + rationalizations; lepa: 1 + reflections)
    max_accepted: int = Field(1, ge=1)  # K: keep at most this many correct trajectories per question (star, lepa: 1)
    temperature: float = Field(0.5, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(256, ge=1)       # per solution
    plan_max_new_tokens: int = Field(128, ge=1)  # per plan and per reflection
    reject_truncated: bool = True       # a correct answer in a plan/solution cut off by its token limit is not kept:
                                        # training on it would teach the model to ramble
    dedupe: bool = True                 # drop accepted trajectories whose (plan, solution) repeats one already kept
    chunk_size: int = Field(32, ge=1)   # questions advanced together per engine call
    demos: int = Field(0, ge=0)         # worked demonstrations (task.demos) shown as earlier chat turns while
                                        # sampling, never in training text: they teach a weak model the format
    max_tokens: int | None = Field(None, ge=1)  # budget: generated tokens per iteration; no engine call starts once
                                        # they are spent (the call in flight finishes: the overshoot is at most one
                                        # call). A run carries what an iteration leaves unspent (or overshot) to the next

    @field_validator("plan_format")
    @classmethod
    def _implemented(cls, value: str) -> str:
        if value not in IMPLEMENTED:
            raise ValueError(f"plan format '{value}' is not implemented yet; usable now: {', '.join(IMPLEMENTED)}")
        return value

    @model_validator(mode="after")
    def _one_per_question(self) -> SamplerConfig:
        """STaR and LEPA keep one trajectory per question: more would mean hints or reflections before a failure."""
        why = {"star": "STaR gives the gold hint only after its unhinted try failed",
               "lepa": "LEPA's trials are one chain, each reflecting on the failure before it"}
        if self.kind in why and self.max_accepted > 1:
            raise ValueError(f"sampler.max_accepted must be 1 with sampler.kind={self.kind} (got {self.max_accepted}): "
                             f"{why[self.kind]}")
        return self
