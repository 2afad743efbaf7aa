"""Custom tasks described by a YAML file (lm-evaluation-harness style): data files, field names, answer type."""

from __future__ import annotations

import csv
import json
import re
import string
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, model_validator

from forethought.config import read_yaml, validate
from forethought.errors import UserError
from forethought.jsonl import read_jsonl, read_text, utf8
from forethought.tasks.base import LETTERS, Example, Task, load_hub, render_choices

AnswerType = Literal["number", "math", "choice", "yesno", "exact"]


class CustomTaskConfig(BaseModel):
    """The keys of a custom task YAML file."""

    model_config = ConfigDict(extra="forbid")
    name: str
    data: str | None = None                  # jsonl/json/csv file relative to the YAML file, or a Hub id
    splits: dict[str, str] | None = None     # split name -> file (or Hub split name when `data` is a Hub id)
    hub_config: str | None = None            # Hub dataset configuration, when `data` is a Hub id
    records: str | None = None               # key (dotted path allowed) of a .json object that holds the records
    question_field: str = "question"         # every *_field may be a dotted path: answer.value, choices.text
    gold_field: str = "answer"               # also a mapping answer -> score: the highest-scored answer is the gold
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


def lookup(row, path: str):
    """A field by name or dotted path ("answer.value", "choices.text", "answers.0"); KeyError(path) when absent.

    A key that itself holds dots is found first, so {"a.b": 1} still gives 1 for "a.b"."""
    if isinstance(row, dict) and path in row:
        return row[path]
    value = row
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise KeyError(path)
    return value


def _record_lists(doc, prefix: str = "", depth: int = 3) -> list[str]:
    """Dotted paths under a JSON object that hold lists of objects (candidates for `records`)."""
    found = []
    if isinstance(doc, dict) and depth:
        for key, value in doc.items():
            if isinstance(value, list) and value and all(isinstance(r, dict) for r in value):
                found.append(prefix + str(key))
            else:
                found += _record_lists(value, f"{prefix}{key}.", depth - 1)
    return found


def _records_at(doc, records: str, file: Path) -> list:
    """The list of records at dotted path `records` of a parsed JSON document, or a UserError naming the key."""
    value, seen = doc, []
    for part in records.split("."):
        if not isinstance(value, dict) or part not in value:
            under = f" under '{'.'.join(seen)}'" if seen else ""
            raise UserError(f"{file}: records '{records}' not found (no key '{part}'{under})")
        value = value[part]
        seen.append(part)
    if not isinstance(value, list) or not all(isinstance(r, dict) for r in value):
        raise UserError(f"{file}: records '{records}' is a {type(value).__name__}, not a list of objects")
    return value


def _read_json_rows(file: Path, records: str | None) -> Iterator[tuple[str, dict]]:
    """A .json file: one JSON document (a list of objects, or an object holding them under `records`), or JSON Lines
    saved under a .json name (detected: a complete first value followed by more data)."""
    try:
        doc = json.loads(read_text(file))
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise UserError(f"{file} line {e.lineno}: not valid JSON ({e.msg})") from None
        if records:
            raise UserError(f"{file} holds JSON Lines (one record per line); remove `records: {records}`")
        yield from ((f"{file} line {n}", row) for n, row in read_jsonl(file))
        return
    if records:
        doc = _records_at(doc, records, file)
    elif isinstance(doc, dict):
        keys = _record_lists(doc)
        hint = f" (lists of objects under: {', '.join(keys)})" if keys else ""
        raise UserError(f"{file}: a JSON object, not a list of records; "
                        f"set `records:` to the key that holds them{hint}")
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise UserError(f"{file}: expected a JSON list of objects")
    yield from ((f"{file} item {i}", row) for i, row in enumerate(doc))


def _read_rows(file: Path, records: str | None = None) -> Iterator[tuple[str, dict]]:
    """(location, row) pairs from a .jsonl, .json (see _read_json_rows) or .csv (with a header) file."""
    if not file.is_file():
        raise UserError(f"file not found: {file}")
    if records and file.suffix != ".json":
        raise UserError(f"{file}: `records: {records}` applies to .json files only; remove it for a "
                        f"{file.suffix or 'suffix-less'} file")
    if file.suffix == ".jsonl":
        yield from ((f"{file} line {n}", row) for n, row in read_jsonl(file))
    elif file.suffix == ".json":
        yield from _read_json_rows(file, records)
    elif file.suffix == ".csv":
        with utf8(file), file.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield f"{file} line {reader.line_num}", row
    else:
        raise UserError(f"{file}: unsupported file type '{file.suffix}'; use .jsonl, .json or .csv")


_LABELLED = re.compile(r"\s*(?:\((?P<p>[A-Za-z])\)|(?P<b>[A-Za-z])[).:])\s*(?P<text>\S.*)", re.DOTALL)


def strip_option_letters(options: Sequence[str]) -> tuple[str, ...]:
    """Options without the letters they already carry ("A)5", "(B) cat", "c. 9" -> "5", "cat", "9"), so that they
    are shown once; only when every option carries its own letter in order (A, B, C...), else unchanged."""
    matches = [_LABELLED.fullmatch(o) for o in options]
    if all(m and (m["p"] or m["b"]).upper() == LETTERS[i] for i, m in enumerate(matches)):
        return tuple(m["text"].strip() for m in matches)
    return tuple(options)


def _gold_from_scores(scores: dict, where: str, field: str) -> str:
    """A gold given as answer -> score (BIG-bench's target_scores): the one answer with the highest score."""
    for answer, score in scores.items():
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise UserError(f"{where}: field '{field}' maps {answer!r} to {score!r}; scores must be numbers")
    if not scores:
        raise UserError(f"{where}: field '{field}' is an empty mapping; give at least one answer -> score")
    best = max(scores.values())
    top = [a for a, s in scores.items() if s == best]
    if len(top) > 1:
        raise UserError(f"{where}: field '{field}' gives the highest score ({best}) to more than one answer: "
                        + ", ".join(repr(a) for a in top))
    return top[0]


def _gold_letter(gold, choices: list[str], where: str, field: str, shown: list[str] | None = None) -> str:
    """A choice gold given as option text (as in the data, or as shown without its letter), letter or 0-based
    index, turned into its letter."""
    text = str(gold).strip()
    for texts in (choices, shown or []):
        if text in texts:
            return LETTERS[texts.index(text)]
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


class _RowFormatter(string.Formatter):
    """str.format over a row where `{a.b}` is the dotted path a.b (not attribute b of a); missing -> KeyError."""

    def __init__(self, row: dict):
        self.row = row

    def get_field(self, field_name, args, kwargs):
        if not field_name:
            raise ValueError("a field name is needed inside {}")
        try:
            value = lookup(self.row, field_name)
        except KeyError:
            value = None
        if value is None:
            raise KeyError(field_name)
        return value, field_name


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
        raw = read_yaml(path)
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
            rows = _read_rows(Path(data).expanduser(), c.records)
        else:
            ref = c.splits[split] if c.splits else c.data
            if c.data and not self._is_local(c.data):  # a Hub id; `splits` then maps to Hub split names
                if c.records:
                    raise UserError(f"custom task '{self.name}': `records` applies to .json files, not to the Hub "
                                    f"dataset {c.data}; remove it")
                ds = load_hub(c.data, c.hub_config, ref if c.splits else split)
                rows = ((f"{c.data} {split} row {i}", row) for i, row in enumerate(ds))
            else:
                rows = _read_rows(self.root / ref, c.records)
        out = []
        for i, (where, row) in enumerate(rows):
            if limit is not None and len(out) >= limit:
                break
            out.append(self._example(row, i, split, where))
        return out

    def _field(self, row: dict, key: str, where: str):
        try:
            value = lookup(row, key)
        except KeyError:
            value = None
        if value is None or value == "":
            raise UserError(f"{where}: field '{key}' is missing")
        return value

    def _prompt(self, row: dict, where: str) -> str:
        """The prompt_template filled from the row (fields by name or dotted path); a field the row lacks is one
        error naming the field and the row."""
        try:
            return _RowFormatter(row).format(self.config.prompt_template)
        except KeyError as e:
            have = ", ".join(map(str, row)) or "no fields"
            raise UserError(f"{where}: field '{e.args[0]}' (used in prompt_template) is missing; "
                            f"the row has: {have}") from None
        except (IndexError, ValueError, AttributeError) as e:
            raise UserError(f"prompt_template of task '{self.name}' is malformed ({e}); "
                            f"use {{field}} for fields and {{{{ }}}} for literal braces") from None

    def _example(self, row: dict, i: int, split: str, where: str) -> Example:
        c = self.config
        if c.prompt_template:
            question = self._prompt(row, where)
        else:
            question = str(self._field(row, c.question_field, where))
        gold = self._field(row, c.gold_field, where)
        if isinstance(gold, dict):
            gold = _gold_from_scores(gold, where, c.gold_field)
        choices: tuple[str, ...] = ()
        given: list[str] = []
        if c.choices_field:
            raw = self._field(row, c.choices_field, where)
            if isinstance(raw, dict):  # answer -> score: the answers are the options
                raw = list(raw)
            if not isinstance(raw, list) or len(raw) < 2:
                raise UserError(f"{where}: field '{c.choices_field}' must be a list of at least two options")
            given = [str(x).strip() for x in raw]
            choices = strip_option_letters(given)
            question = render_choices(question, choices)
        if c.answer_type == "choice":
            gold = _gold_letter(gold, given, where, c.gold_field, shown=list(choices))
        else:
            gold = _gold_text(gold, c.answer_type, where, c.gold_field)
        id = str(self._field(row, c.id_field, where)) if c.id_field else f"{self.name}/{split}/{i}"
        return Example(id=id, question=question.strip(), gold=gold, choices=choices)

    def fewshot(self) -> str | None:
        """The YAML's `fewshot` text, if any."""
        return self.config.fewshot
