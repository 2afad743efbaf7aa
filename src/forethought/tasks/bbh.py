"""BIG-Bench Hard: 27 subtasks with exact-match targets and a 3-shot chain-of-thought prompt each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from forethought.errors import UserError
from forethought.jsonl import read_text
from forethought.tasks.base import Example, Task, load_hub, read_json, require, split_file

BBH_SUBTASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting")


def strip_canary(text: str) -> str:
    """A CoT prompt file without its canary header (the lines up to and including '-----')."""
    lines = text.splitlines()
    if "-----" in lines[:5]:
        lines = lines[lines.index("-----") + 1:]
    lines = [ln for ln in lines if "BENCHMARK DATA SHOULD NEVER APPEAR" not in ln and "canary GUID" not in ln]
    return "\n".join(lines).strip() + "\n"


class BBHTask(Task):
    """One BBH subtask (`bbh/<name>`), or all 27 concatenated (`bbh`); gold is the target string."""

    answer_type = "exact"
    splits = ("test",)
    hub_id = "lukaemon/bbh"

    def __init__(self, subtask: str | None = None):
        self.subtask = subtask
        self.name = f"bbh/{subtask}" if subtask else "bbh"
        self._prompt_file: Path | None = None

    def _subtasks(self) -> tuple[str, ...]:
        return (self.subtask,) if self.subtask else BBH_SUBTASKS

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        if path.is_file() and not self.subtask:
            raise UserError(f"bbh: {path} is one file; pass the BBH folder (with bbh/ and cot-prompts/) "
                            f"to load all 27 subtasks, or use the task bbh/{path.stem}")
        files = {sub: split_file(path, split, {"test": [f"bbh/{sub}.json", f"{sub}.json"]}, f"bbh/{sub}")
                 for sub in self._subtasks()}
        if self.subtask:  # cot-prompts/ sits beside the folder of task files (bbh/bbh/*.json, bbh/cot-prompts/*.txt)
            file = files[self.subtask]
            prompts = [r / "cot-prompts" / f"{self.subtask}.txt" for r in (file.parent.parent, file.parent)]
            self._prompt_file = next((p for p in prompts if p.is_file()), None)
        return self._rows(files)

    def _rows(self, files: dict[str, Path]) -> Iterator[Example]:
        for sub, file in files.items():
            examples = require(read_json(file), "examples", str(file))
            for i, row in enumerate(examples):
                where = f"{file} examples[{i}]"
                yield Example(id=f"bbh/{sub}/{i}", question=str(require(row, "input", where)).strip(),
                              gold=str(require(row, "target", where)).strip(), meta={"subtask": sub})

    def _hub(self, split: str) -> Iterator[Example]:
        self._prompt_file = None  # the Hub copy has no CoT prompts
        return self._hub_rows(split)

    def _hub_rows(self, split: str) -> Iterator[Example]:
        for sub in self._subtasks():
            for i, row in enumerate(load_hub(self.hub_id, sub, split)):
                yield Example(id=f"bbh/{sub}/{i}", question=row["input"].strip(), gold=row["target"].strip(),
                              meta={"subtask": sub})

    def fewshot(self) -> str | None:
        """The subtask's 3-shot CoT prompt from `cot-prompts/<name>.txt` beside the data last loaded, canary removed.

        None for `bbh` (all subtasks; use each example's meta["subtask"]) or when the data came from the Hub.
        """
        if not self.subtask or self._prompt_file is None:
            return None
        return strip_canary(read_text(self._prompt_file))
