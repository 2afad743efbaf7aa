"""The typed study file: arms (a recipe plus dotted overrides each), one generated-token budget for every arm,
seeds, the task every arm trains and is evaluated on, transfer tasks, and the baseline arm."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from forethought.config import OutputDir, StrictModel
from forethought.runs.config import EvalSettings, TaskSettings
from forethought.tracking import Backend

ARM_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class ArmConfig(StrictModel):
    """One arm: a `run` or `cpl` recipe (a file, or a built-in recipe's name) and overrides on top of it."""

    name: str = Field(pattern=ARM_NAME)
    recipe: str
    kind: Literal["run", "cpl"] | None = None  # default: run when the recipe has a `method`, else cpl
    overrides: dict[str, Any] = {}  # dotted key -> value, e.g. {sampler.kind: star, iterations: 0}
    note: str = ""  # one line for the table (what the arm is)


class TransferTask(StrictModel):
    """An extra evaluation task: every arm's final model is also evaluated on it (no training on it)."""

    name: str  # a built-in task or a custom task .yaml
    data: str | None = None
    options: dict = {}
    split: str | None = None  # default: the task's test split
    limit: int | None = Field(None, ge=1)


class StudyConfig(StrictModel):
    """Arms compared at one budget of generated tokens (sampling, search or rollouts; evaluation not counted)."""

    budget: int = Field(ge=1)  # generated tokens per arm and seed, split over its iterations in equal shares
    seeds: list[int] = Field([0], min_length=1)
    model: str | None = None  # when set, every arm uses this model
    task: TaskSettings  # every arm trains on this task and is evaluated on its eval split
    eval: EvalSettings | None = None  # when set, every arm evaluates with these settings
    transfer: dict[str, TransferTask] = {}  # label -> extra evaluation task of every arm's final model
    baseline: str  # the arm every other arm is compared with (paired, over the same test questions)
    arms: list[ArmConfig] = Field(min_length=1)
    # stages (arm x seed runs, transfer evaluations) at a time, each in its own process (study/parallel.py)
    parallel: int = Field(1, ge=1)
    devices: list[str] = []  # CUDA devices for the worker slots: slot k gets CUDA_VISIBLE_DEVICES=devices[k]
    # stages as Ray tasks on this cluster ("auto", "ray://host:10001"; "local": a Ray started here), each asking
    # for stage_cpus CPUs and stage_gpus GPUs; the study directory must be on a filesystem every node shares
    ray_address: str | None = None
    stage_cpus: float = Field(1.0, gt=0)
    stage_gpus: float = Field(0.0, ge=0)
    report_to: list[Backend] = []  # when set, every arm's run is tracked there (tracking.py)
    output: OutputDir

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds {seeds} repeat a seed")
        return seeds

    @model_validator(mode="after")
    def _arms(self) -> StudyConfig:
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise ValueError(f"arm names repeat: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        if self.devices and self.parallel > len(self.devices):
            raise ValueError(f"parallel is {self.parallel} but devices lists {len(self.devices)}: every worker slot "
                             "needs its own device (list more devices or lower parallel)")
        if self.ray_address is None and (self.stage_cpus, self.stage_gpus) != (1.0, 0.0):
            raise ValueError("stage_cpus and stage_gpus are the resources of a stage run on Ray: set ray_address "
                             "(\"local\", \"auto\" or \"ray://HOST:10001\") or remove them")
        if self.ray_address is not None and self.devices:
            raise ValueError("devices pins worker slots to this machine's GPUs; on Ray (ray_address) every stage "
                             "gets stage_gpus GPUs from the cluster instead: remove devices")
        if self.baseline not in names:
            raise ValueError(f"baseline '{self.baseline}' is not an arm (arms: {', '.join(names)})")
        return self
