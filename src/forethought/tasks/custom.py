"""Custom tasks described by a YAML file (lm-evaluation-harness style): data files, field names, answer type."""

from __future__ import annotations

import csv
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

from forethought.config import validate
from forethought.errors import UserError
from forethought.jsonl import read_jsonl
from forethought.tasks.base import LETTERS, Example, Task, load_hub, read_json, render_choices

AnswerType = Literal["number", "math", "choice", "yesno", "exact"]


class CustomTaskConfig(BaseModel):
    """The keys of a custom task YAML file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    data: str | None = None                  # jsonl/json/csv file relative to the YAML file, or a Hub id
    splits: dict[str, str] | None = None     # split name -> file (or Hub split name when `data` is a Hub id)
    hub_config: str | None = None            # Hub dataset configuration, when `data` is a Hub id
    question_field: str = "question"
    gold_field: str = "answer"
    choices_field: str | None = None
    answer_type: AnswerType
    prompt_template: str | None = None       # e.g. "Context: {context}\nQuestion: {question}"
    id_field: str | None = None
    default_split: str | None = None
    fewshot: str | None = None               # text to put before each question

    @model_validator(mode="after")
    def _data_or_splits(self):
        if not self.data and not self.splits:
            raise ValueError("give `data` (one file or Hub id) or `splits` (split name -> file)")
        if self.answer_type == "choice" and not self.choices_field:
            raise ValueError("answer_type 'choice' needs `choices_field` (the field holding the list of options)")
        return self


def _read_rows(file: Path) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs from a .jsonl, .json (list of objects) or .csv (with a header) file."""
    if not file.is_file():
        raise UserError(f"file not found: {file}")
    if file.suffix == ".jsonl":
        yield from ((f"{file} line {n}", row) for n, row in read_jsonl(file))
    elif file.suffix == ".json":
        rows = read_json(file)
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise UserError(f"{file}: expected a JSON list of objects")
        yield from ((f"{file} item {i}", row) for i, row in enumerate(rows))
    elif file.suffix == ".csv":
        with file.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield f"{file} line {reader.line_num}", row
    else:
        raise UserError(f"{file}: unsupported file type '{file.suffix}'; use .jsonl, .json or .csv")


def _gold_letter(gold, choices: list[str], where: str, field: str) -> str:
    """A choice gold given as option text, letter or 0-based index, turned into its letter."""
    text = str(gold).strip()
    if text in choices:
        return LETTERS[choices.index(text)]
    if len(text) == 1 and text.upper() in LETTERS[: len(choices)] and text in string.ascii_letters:
        return text.upper()
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(choices):
        return LETTERS[int(text)]
    raise UserError(f"{where}: field '{field}' is {gold!r}: not an option text, a letter "
                    f"A-{LETTERS[len(choices) - 1]} or an index 0-{len(choices) - 1}")


def _gold_text(gold, answer_type: str, where: str, field: str) -> str:
    """A non-choice gold as text, checked against its answer type ("1,000" -> "1000", True -> "yes")."""
    from forethought.verify import normalize_gold

    text = ("yes" if gold else "no") if isinstance(gold, bool) else str(gold).strip()
    try:
        normal = normalize_gold(answer_type, text)
    except UserError:
        raise UserError(f"{where}: field '{field}' is {gold!r}: not a valid {answer_type} answer") from None
    return normal if answer_type in ("number", "yesno") else text


class CustomTask(Task):
    """A task defined by a YAML file; see CustomTaskConfig for the keys."""

    def __init__(self, config: CustomTaskConfig, root: Path):
        self.config, self.root = config, root
        self.name, self.answer_type = config.name, config.answer_type
        if config.splits:
            self.splits = tuple(config.splits)
        elif self._is_local(config.data):  # one file: one split
            self.splits = (config.default_split or "test",)
        else:  # a Hub id: its usual splits
            self.splits = ("train", "validation", "test")
        self.default_split = config.default_split or next(
            (s for s in ("test", "validation", "train") if s in self.splits), self.splits[0])
        if config.default_split and config.default_split not in self.splits:
            raise UserError(f"custom task '{self.name}': default_split '{config.default_split}' is not one of "
                            f"its splits: {', '.join(self.splits)}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> CustomTask:
        """Read and validate a task YAML file."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise UserError(f"custom task file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise UserError(f"{path}: not valid YAML ({e})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: expected a mapping of keys (name, data, question_field, ...)")
        config = validate(CustomTaskConfig, raw, str(path))
        return cls(config, path.parent)

    def _is_local(self, ref: str) -> bool:
        return (self.root / ref).exists() or Path(ref).suffix in (".jsonl", ".json", ".csv")

    def load(self, data: str | Path | None = None, split: str | None = None, limit: int | None = None) -> list[Example]:
        """Read a split from the files the YAML names (or from `data`, a file that overrides them)."""
        split = self._split(split)
        c = self.config
        if data is not None:
            rows = _read_rows(Path(data).expanduser())
        else:
            ref = c.splits[split] if c.splits else c.data
            if c.data and not self._is_local(c.data):  # a Hub id; `splits` then maps to Hub split names
                ds = load_hub(c.data, c.hub_config, ref if c.splits else split)
                rows = ((f"{c.data} {split} row {i}", row) for i, row in enumerate(ds))
            else:
                rows = _read_rows(self.root / ref)
        out = []
        for i, (where, row) in enumerate(rows):
            if limit is not None and len(out) >= limit:
                break
            out.append(self._example(row, i, split, where))
        return out

    def _field(self, row: dict, key: str, where: str):
        if key not in row or row[key] is None or row[key] == "":
            raise UserError(f"{where}: field '{key}' is missing")
        return row[key]

    def _example(self, row: dict, i: int, split: str, where: str) -> Example:
        c = self.config
        if c.prompt_template:
            try:
                question = c.prompt_template.format(**row)
            except KeyError as e:
                raise UserError(f"{where}: field '{e.args[0]}' (used in prompt_template) is missing") from None
            except (IndexError, ValueError) as e:
                raise UserError(f"prompt_template of task '{self.name}' is malformed ({e}); "
                                f"use {{field}} for fields and {{{{ }}}} for literal braces") from None
        else:
            question = str(self._field(row, c.question_field, where))
        gold = self._field(row, c.gold_field, where)
        choices: tuple[str, ...] = ()
        if c.choices_field:
            raw = self._field(row, c.choices_field, where)
            if not isinstance(raw, list) or len(raw) < 2:
                raise UserError(f"{where}: field '{c.choices_field}' must be a list of at least two options")
            choices = tuple(str(x).strip() for x in raw)
            question = render_choices(question, choices)
        if c.answer_type == "choice":
            gold = _gold_letter(gold, list(choices), where, c.gold_field)
        else:
            gold = _gold_text(gold, c.answer_type, where, c.gold_field)
        id = str(self._field(row, c.id_field, where)) if c.id_field else f"{self.name}/{split}/{i}"
        return Example(id=id, question=question.strip(), gold=gold, choices=choices)

    def fewshot(self) -> str | None:
        """The YAML's `fewshot` text, if any."""
        return self.config.fewshot
