"""The typed recipe of a self-training run: model, task, engine, sampler (E-step), learner (M-step), evaluation."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Discriminator, Field, Tag

from forethought.config import OutputDir, StrictModel
from forethought.engines.settings import EngineSettings
from forethought.learners.grpo import GRPOConfig
from forethought.learners.sft import SFTConfig
from forethought.samplers.config import SamplerConfig
from forethought.tracking import Backend


class RunLearner(SFTConfig):
    """The run loop's M-step: SFT plus its schedule across iterations (which model each starts from, how long)."""

    restart_from_base: bool = False  # ReST-EM / STaR: each iteration trains the base model; ReST / LEPA continue
    star_base_steps: int | None = Field(None, ge=1)  # STaR schedule: steps at iteration 1 (40 in the paper) ...
    star_step_growth: float = Field(1.2, gt=0)  # ... multiplied by this each iteration

    def steps(self, iteration: int) -> int | None:
        """Training steps for a 1-based iteration: STaR's round(base * growth**(iteration-1)) (40, 48, 58, 69, 83
        ...) when `star_base_steps` is set, else `max_steps` (None = train for `epochs`)."""
        if iteration < 1:
            raise ValueError(f"iterations count from 1, got {iteration}")
        if self.star_base_steps is None:
            return self.max_steps
        return max(1, round(self.star_base_steps * self.star_step_growth ** (iteration - 1)))


def _learner_kind(value) -> str:
    """The `learner.kind` a recipe names (sft when left out)."""
    return value.get("kind", "sft") if isinstance(value, dict) else getattr(value, "kind", "sft")


# `learner.kind: sft` (the default) is the EM loop's M-step; `learner.kind: grpo` is online RL (no sampling stage)
Learner = Annotated[Union[Annotated[RunLearner, Tag("sft")], Annotated[GRPOConfig, Tag("grpo")]],
                    Discriminator(_learner_kind)]


class TaskSettings(StrictModel):
    """Which task, where its data is, and how many questions to train and evaluate on."""

    name: str
    data: str | None = None
    options: dict = {}
    train_split: str = "train"
    eval_split: str | None = None
    train_limit: int | None = None
    eval_limit: int | None = None


class EvalSettings(StrictModel):
    """Held-out evaluation after every iteration (iteration 0 is the untrained model)."""

    temperature: float = 0.0
    top_p: float = 1.0
    n: int = 1
    max_new_tokens: int = 256
    plan_max_new_tokens: int = 128
    fewshot: bool = False


class RunConfig(StrictModel):
    """One run of sample -> train -> evaluate iterations."""

    method: str
    model: str = "smollm2-135m"
    task: TaskSettings
    engine: EngineSettings = EngineSettings()
    sampler: SamplerConfig = SamplerConfig()
    learner: Learner = RunLearner()
    eval: EvalSettings = EvalSettings()
    iterations: int = Field(2, ge=0)  # a finished run resumed with more iterations carries on
    seed: int = 0
    report_to: list[Backend] = []  # tracking backends (tracking.py): tensorboard, wandb, mlflow, trackio
    output: OutputDir
