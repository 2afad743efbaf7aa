"""M-step learners: fine-tune a model on the E-step's accepted samples (SFT here; preference learners beside it).

`train(kind, ...)` is the one entry point callers use: it runs the `sft`, `step_apo` or `value` learner in this
process when `cfg.distributed.processes == 1`, and under `accelerate launch` otherwise (learners/distributed.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from forethought.learners.common import TrainStats

__all__ = ["train"]


def train(
    kind: Literal["sft", "step_apo", "value"],
    model: str | Path,
    rows: list[dict],
    output_dir: Path,
    cfg,
    *,
    seed: int,
    max_steps: int | None = None,
    progress: bool = True,
) -> TrainStats:
    """Train learner `kind` (cfg: SFTConfig, StepAPOConfig or ValueConfig) from `model` on `rows`, saving a
    checkpoint to `output_dir` atomically; in-process for `cfg.distributed.processes == 1`, else under
    `accelerate launch` with `cfg.batch_size` as the global batch. `max_steps` overrides `cfg.max_steps`."""
    from forethought.learners.distributed import launch_training, learner

    config_class, train_one, _ = learner(kind)
    if not isinstance(cfg, config_class):
        raise TypeError(f"learner kind {kind!r} takes a {config_class.__name__}, got {type(cfg).__name__}")
    if cfg.distributed.processes == 1:
        return train_one(model, rows, output_dir, cfg, seed=seed, max_steps=max_steps, progress=progress)
    return launch_training(model, rows, output_dir, cfg, seed=seed, max_steps=max_steps, progress=progress,
                           kind=kind)
