"""Self-training runs: a typed recipe, a resumable run directory, and the sample -> train -> evaluate loop."""

from __future__ import annotations

from pathlib import Path

from forethought.config import load_config


def run_recipe(recipe: str | Path, overrides: list[str] = (), *, progress: bool = True) -> Path:
    """Load a YAML recipe with dotted overrides and run (or resume) it; returns the run directory."""
    from forethought.runs.config import RunConfig
    from forethought.runs.loop import Runner

    cfg = load_config(RunConfig, recipe, list(overrides))
    return Runner(cfg, progress=progress).run()
