"""BoolQ: yes/no questions about a Wikipedia passage (the passage stays in the question)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from forethought.errors import UserError
from forethought.tasks.base import Example, Task, load_hub, split_file
from forethought.tasks.choice import read_foundry


class BoolQ(Task):
    """BoolQ from llm-foundry's dev file (`query` "Passage: ...\\nQuestion: ...?", choices ["no", "yes"])."""

    name = "boolq"
    answer_type = "yesno"
    default_split = "validation"
    splits = ("train", "validation")
    hub_id, hub_config = "google/boolq", None

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, {"validation": ["llm-foundry/boolq.jsonl", "boolq.jsonl"]}, self.name)
        for id, query, choices, gold in read_foundry(file, self.name, split):
            answer = str(choices[gold]).strip().lower()
            if answer not in ("yes", "no"):
                raise UserError(f"{file} row {id.rsplit('/', 1)[1]}: gold option is {answer!r}, expected yes or no")
            yield Example(id=id, question=query.strip(), gold=answer)

    def _hub(self, split: str) -> Iterator[Example]:
        for i, row in enumerate(load_hub(self.hub_id, self.hub_config, split)):
            question = f"Passage: {row['passage'].strip()}\nQuestion: {row['question'].strip().rstrip('?')}?"
            yield Example(id=f"boolq/{split}/{i}", question=question, gold="yes" if row["answer"] else "no")
