"""MATH (Hendrycks, full 5,000-problem test) and MATH-500: competition math with LaTeX answers."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from forethought.errors import UserError
from forethought.jsonl import read_jsonl
from forethought.tasks.base import Example, Task, load_hub, require, split_file

MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")


def last_boxed(text: str) -> str | None:
    """Contents of the last \\boxed{...} (or \\fbox{...}) in `text`, braces matched; None if there is none."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    rest = text[start + (6 if text.startswith("\\boxed", start) else 5):]
    if rest.startswith(" ") and not rest.lstrip().startswith("{"):  # "\boxed 5"
        return re.split(r"[\s$]", rest.strip(), maxsplit=1)[0] or None
    if not rest.startswith("{"):
        return None
    depth = 0
    for i, ch in enumerate(rest):
        depth += (ch == "{") - (ch == "}")
        if depth == 0:
            return rest[1:i].strip()
    return None


def _level(value) -> int | None:
    m = re.search(r"\d+", str(value))
    return int(m.group()) if m else None


class MathTask(Task):
    """Hendrycks MATH: gold is the `answer` field, else the last \\boxed{} of `solution`; reference is the solution."""

    answer_type = "math"

    def __init__(self, name: str, files: dict[str, list[str]], hub_id: str, hub_configs: Iterable[str | None]):
        self.name, self.files, self.hub_id, self.hub_configs = name, files, hub_id, list(hub_configs)
        self.splits = tuple(files)

    def _rows(self, rows: Iterable[tuple[str, dict]], split: str) -> Iterator[Example]:
        for i, (where, row) in enumerate(rows):
            problem = require(row, "problem", where)
            solution = require(row, "solution", where)
            gold = row.get("answer") or last_boxed(solution)
            if not gold:
                raise UserError(f"{where}: field 'answer' is missing and 'solution' has no \\boxed{{}} answer")
            uid = row.get("unique_id")
            id = f"{self.name}/{uid.removesuffix('.json')}" if uid else f"{self.name}/{split}/{i}"
            meta = {"subject": row.get("subject") or row.get("type"), "level": _level(row.get("level"))}
            yield Example(id=id, question=problem.strip(), gold=str(gold).strip(), reference=solution, meta=meta)

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, self.files, self.name)
        return self._rows(((f"{file} line {n}", row) for n, row in read_jsonl(file)), split)

    def _hub(self, split: str) -> Iterator[Example]:
        def rows():
            for config in self.hub_configs:
                ds = load_hub(self.hub_id, config, split)
                yield from ((f"{self.hub_id} {config or ''} {split} row {i}", row) for i, row in enumerate(ds))
        return self._rows(rows(), split)


def math_full() -> MathTask:
    """MATH: the full test split (5,000 problems; contains all of MATH-500) and the train split (7,500; Hub or a
    local train.jsonl of the same format, e.g. for self-training)."""
    return MathTask("math", {"train": ["train.jsonl", "full_train/train.jsonl", "math/full_train/train.jsonl"],
                             "test": ["full_test/test.jsonl", "math/full_test/test.jsonl", "test.jsonl"]},
                    "EleutherAI/hendrycks_math", MATH_SUBJECTS)


def math500() -> MathTask:
    """MATH-500, the 500-problem test subset of "Let's Verify Step by Step"."""
    return MathTask("math500", {"test": ["math500/test.jsonl", "math/math500/test.jsonl", "test.jsonl"]},
                    "HuggingFaceH4/MATH-500", [None])
