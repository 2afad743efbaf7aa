"""Tasks: questions with checkable answers, by registry name or from a custom YAML file."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from pathlib import Path

from forethought.errors import UserError
from forethought.tasks.base import Example, Task
from forethought.tasks.bbh import BBH_SUBTASKS, BBHTask
from forethought.tasks.boolq import BoolQ
from forethought.tasks.choice import MMLU, PIQA, CommonsenseQA, HellaSwag, MMLUStem, arc, openbookqa
from forethought.tasks.custom import CustomTask
from forethought.tasks.gsm8k import GSM8K
from forethought.tasks.mathtasks import math500, math_full
from forethought.tasks.synthetic import arithmetic, coin_flip, last_letters

__all__ = ["Example", "Task", "get_task", "list_tasks"]

_REGISTRY: dict[str, Callable[..., Task]] = {
    "gsm8k": GSM8K,
    "math": math_full,
    "math500": math500,
    "arc_challenge": lambda: arc("challenge"),
    "arc_easy": lambda: arc("easy"),
    "openbookqa": openbookqa,
    "mmlu": MMLU,
    "mmlu_stem": MMLUStem,
    "piqa": PIQA,
    "hellaswag": HellaSwag,
    "commonsenseqa": CommonsenseQA,
    "boolq": BoolQ,
    "bbh": BBHTask,
    **{f"bbh/{name}": (lambda name=name: BBHTask(name)) for name in BBH_SUBTASKS},
    "synthetic/arithmetic": arithmetic,
    "synthetic/last_letters": last_letters,
    "synthetic/coin_flip": coin_flip,
}


def list_tasks() -> list[str]:
    """Names of all built-in tasks."""
    return list(_REGISTRY)


def get_task(name: str, **options) -> Task:
    """A task by registry name, or from a custom task .yaml file; `options` (e.g. difficulty=2, seed=0) configure it."""
    if name.endswith((".yaml", ".yml")) or Path(name).is_file():
        if options:
            raise UserError(f"custom task {name} takes no options (got {', '.join(options)}); "
                            f"put settings in the YAML file")
        return CustomTask.from_yaml(name)
    factory = _REGISTRY.get(name)
    if factory is None:
        near = difflib.get_close_matches(name, list(_REGISTRY), n=4, cutoff=0.5)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        raise UserError(f"unknown task '{name}'; {hint}`forethought tasks` lists all tasks "
                        f"(or pass a path to a custom task .yaml)")
    params = inspect.signature(factory).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if options and not takes_any:
        raise UserError(f"task '{name}' takes no options (got {', '.join(options)})")
    return factory(**options)
