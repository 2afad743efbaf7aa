"""The typed recipe of a self-training run: model, task, engine, sampler (E-step), learner (M-step), evaluation."""

from __future__ import annotations

from forethought.config import StrictModel
from forethought.engines.settings import EngineSettings
from forethought.learners.sft import SFTConfig
from forethought.samplers.config import SamplerConfig


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
    learner: SFTConfig = SFTConfig()
    eval: EvalSettings = EvalSettings()
    iterations: int = 2
    seed: int = 0
    output: str
