"""GSM8K: grade-school math word problems with a numeric answer after '#### '."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from forethought.errors import UserError
from forethought.jsonl import read_jsonl
from forethought.tasks.base import Example, Task, split_file, load_hub, require

_FINAL = re.compile(r"\n?####\s*(-?[\d,]*\.?\d+)\s*$")
_CALC = re.compile(r"<<[^>]*>>")


def parse_answer(answer: str, where: str) -> tuple[str, str]:
    """(gold number without commas, worked solution ending "The answer is X.") from a GSM8K answer field."""
    m = _FINAL.search(answer)
    if not m:
        raise UserError(f"{where}: field 'answer' does not end with '#### <number>'")
    gold = m.group(1).replace(",", "")
    steps = _CALC.sub("", answer[: m.start()]).strip()
    return gold, (steps + "\n" if steps else "") + f"The answer is {gold}."


class GSM8K(Task):
    """GSM8K (openai/gsm8k): splits train and test; gold is the final number."""

    name = "gsm8k"
    answer_type = "number"
    default_split = "test"
    splits = ("train", "test")
    hub_id, hub_config = "openai/gsm8k", "main"

    def _rows(self, rows: Iterable[tuple[str, dict]], split: str) -> Iterator[Example]:
        for i, (where, row) in enumerate(rows):
            question = require(row, "question", where)
            gold, reference = parse_answer(require(row, "answer", where), where)
            yield Example(id=f"gsm8k/{split}/{i}", question=question.strip(), gold=gold, reference=reference)

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, {s: [f"{s}.jsonl"] for s in self.splits}, self.name)
        return self._rows(((f"{file} line {n}", row) for n, row in read_jsonl(file)), split)

    def _hub(self, split: str) -> Iterator[Example]:
        ds = load_hub(self.hub_id, self.hub_config, split)
        return self._rows(((f"{self.hub_id} {split} row {i}", row) for i, row in enumerate(ds)), split)
