"""Multiple-choice benchmarks (ARC, OpenBookQA, MMLU, MMLU-STEM, PIQA, HellaSwag, CommonsenseQA); gold is a letter."""

from __future__ import annotations

import bz2
import csv
import re
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

from forethought.errors import UserError
from forethought.jsonl import read_jsonl, read_text, utf8
from forethought.tasks.base import (LETTERS, Example, Task, choice_example, gold_index, load_hub, read_json, require,
                                    split_file)

MMLU_STEM_SUBJECTS = (
    "abstract_algebra", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
    "college_mathematics", "college_physics", "computer_security", "conceptual_physics", "electrical_engineering",
    "elementary_mathematics", "high_school_biology", "high_school_chemistry", "high_school_computer_science",
    "high_school_mathematics", "high_school_physics", "high_school_statistics", "machine_learning")


def read_foundry(file: Path, name: str, split: str) -> Iterator[tuple[str, str, list, int]]:
    """llm-foundry ICL rows (`query`, `choices`, `gold` index) as (id, query, choices, gold index)."""
    for i, (n, row) in enumerate(read_jsonl(file)):
        where = f"{file} line {n}"
        choices = require(row, "choices", where)
        if not isinstance(choices, list) or len(choices) < 2:
            raise UserError(f"{where}: field 'choices' must be a list of at least two options")
        yield (f"{name}/{split}/{i}", str(require(row, "query", where)),
               choices, gold_index(require(row, "gold", where), len(choices), where, "gold"))


def parse_instruction(text: str, where: str) -> tuple[str, list[str]]:
    """Question and options from an LLM-Adapters `instruction`: "...: Q<blank line>Answer1: a Answer2: b<blank line>..."."""
    body = text.split("\n\nAnswer format:")[0]
    body = re.sub(r"^Please choose the correct answer to the question:\s*", "", body)
    question, sep, options = body.rpartition("\n\nAnswer1: ")
    if not sep:
        raise UserError(f"{where}: field 'instruction' has no 'Answer1: ...' options")
    return question.strip(), [o.strip() for o in re.split(r"\s*Answer\d+: ", "Answer1: " + options)[1:]]


class ScienceQA(Task):
    """ARC-Challenge, ARC-Easy and OpenBookQA: test from llm-foundry jsonl, train from LLM-Adapters json."""

    answer_type = "choice"
    splits = ("train", "validation", "test")

    def __init__(self, name: str, layout: dict[str, list[str]], hub_id: str, hub_config: str):
        self.name, self.layout, self.hub_id, self.hub_config = name, layout, hub_id, hub_config

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, self.layout, self.name)
        if file.suffix == ".jsonl":
            for id, query, choices, gold in read_foundry(file, self.name, split):
                yield choice_example(id, query.removeprefix("Question:").strip(), choices, gold)
            return
        rows = read_json(file)
        if not isinstance(rows, list):
            raise UserError(f"{file}: expected a JSON list of objects with 'instruction' and 'answer'")
        for i, row in enumerate(rows):
            where = f"{file} item {i}"
            question, choices = parse_instruction(require(row, "instruction", where), where)
            m = re.fullmatch(r"answer(\d+)", str(require(row, "answer", where)).strip())
            gold = gold_index(int(m.group(1)) - 1 if m else None, len(choices), where, "answer")
            yield choice_example(f"{self.name}/{split}/{i}", question, choices, gold)

    def _hub(self, split: str) -> Iterator[Example]:
        for i, row in enumerate(load_hub(self.hub_id, self.hub_config, split)):
            labels = list(row["choices"]["label"])
            question = row.get("question") or row.get("question_stem")
            yield choice_example(f"{self.name}/{split}/{i}", question, row["choices"]["text"],
                                 labels.index(row["answerKey"]), source_id=row.get("id"))


def arc(level: str) -> ScienceQA:
    """ARC-Challenge (`level`="challenge") or ARC-Easy ("easy")."""
    folder = f"ARC-{level.capitalize()}"
    return ScienceQA(f"arc_{level}", {
        "test": [f"llm-foundry/arc_{level}.jsonl", f"arc_{level}.jsonl"],
        "train": [f"llm-adapters/{folder}/train.json", f"{folder}/train.json"],
    }, "allenai/ai2_arc", folder)


def openbookqa() -> ScienceQA:
    """OpenBookQA (main)."""
    return ScienceQA("openbookqa", {"test": ["llm-foundry/openbook_qa.jsonl", "openbook_qa.jsonl"],
                                    "train": ["llm-adapters/train.json", "train.json"]},
                     "allenai/openbookqa", "main")


class MMLU(Task):
    """MMLU from the original headerless CSVs (question, A, B, C, D, answer letter), one file per subject."""

    name = "mmlu"
    answer_type = "choice"
    splits = ("dev", "validation", "test")
    hub_id, hub_config = "cais/mmlu", "all"
    _dirs = {"dev": "dev", "validation": "val", "test": "test"}

    def _files(self, path: Path, split: str) -> list[Path]:
        if path.is_file():
            return [path]
        d = self._dirs[split]
        for folder in (path / d, path):
            files = sorted(folder.glob(f"*_{d}.csv"))
            if files:
                return files
        present = [s for s, d2 in self._dirs.items() if any((path / d2).glob("*.csv"))]
        raise UserError(f"mmlu: split '{split}' not found under {path} (looked for {d}/*_{d}.csv); "
                        f"splits present there: {', '.join(present) or 'none'}")

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        for file in self._files(path, split):
            subject = re.sub(r"_(dev|val|test)$", "", file.stem)
            with utf8(file), file.open(encoding="utf-8", newline="") as f:
                reader = csv.reader(f)
                for i, row in enumerate(reader):
                    where = f"{file} line {reader.line_num}"
                    if len(row) != 6 or row[5].strip() not in ("A", "B", "C", "D"):
                        raise UserError(f"{where}: expected 6 columns (question, A, B, C, D, answer letter A-D), "
                                        f"got {len(row)} columns")
                    yield choice_example(f"mmlu/{split}/{subject}/{i}", row[0], row[1:5],
                                         LETTERS.index(row[5].strip()), subject=subject)

    def _hub(self, split: str) -> Iterator[Example]:
        counts: dict[str, int] = {}
        for row in load_hub(self.hub_id, self.hub_config, split):
            i = counts[row["subject"]] = counts.get(row["subject"], -1) + 1
            yield choice_example(f"mmlu/{split}/{row['subject']}/{i}", row["question"], row["choices"],
                                 int(row["answer"]), subject=row["subject"])


class MMLUStem(Task):
    """MMLU-STEM: the 3,018 MMLU test questions of 18 STEM subjects (jsonl with `choices` and an index `answer`)."""

    name = "mmlu_stem"
    answer_type = "choice"
    splits = ("test",)
    hub_id, hub_config = "cais/mmlu", "all"

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, {"test": ["mmlu_stem/test.jsonl", "test.jsonl"]}, self.name)
        for i, (n, row) in enumerate(read_jsonl(file)):
            where = f"{file} line {n}"
            choices = require(row, "choices", where)
            gold = gold_index(require(row, "answer", where), len(choices), where, "answer")
            subject = row.get("type") or row.get("subject")
            yield choice_example(f"mmlu_stem/{split}/{i}", require(row, "question", where), choices, gold,
                                 subject=subject)

    def _hub(self, split: str) -> Iterator[Example]:
        rows = (r for r in load_hub(self.hub_id, self.hub_config, split) if r["subject"] in MMLU_STEM_SUBJECTS)
        for i, row in enumerate(rows):
            yield choice_example(f"mmlu_stem/{split}/{i}", row["question"], row["choices"], int(row["answer"]),
                                 subject=row["subject"])


def _piqa_question(goal: str) -> str:
    return f"Goal: {goal.strip()}\nWhich solution achieves the goal better?"


class PIQA(Task):
    """PIQA physical commonsense: valid.jsonl (goal, sol1, sol2) with line-aligned valid-labels.lst."""

    name = "piqa"
    answer_type = "choice"
    default_split = "validation"
    splits = ("train", "validation")
    hub_id, hub_config = "baber/piqa", None

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        prefix = {"train": "train", "validation": "valid"}[split]
        file = split_file(path, split, {s: [f"{p}.jsonl"] for s, p in (("train", "train"), ("validation", "valid"))},
                          self.name)
        labels_file = file.with_name(file.name.replace(".jsonl", "-labels.lst")) if path.is_file() \
            else file.with_name(f"{prefix}-labels.lst")
        if not labels_file.is_file():
            raise UserError(f"piqa: labels file {labels_file} not found (it must sit beside {file.name})")
        labels = read_text(labels_file).split()
        for i, (n, row) in enumerate(read_jsonl(file)):
            where = f"{file} line {n}"
            if i >= len(labels):
                raise UserError(f"{labels_file}: has {len(labels)} labels but {file.name} has more rows (line {n})")
            choices = [require(row, "sol1", where), require(row, "sol2", where)]
            gold = gold_index(labels[i], 2, f"{labels_file} line {i + 1}", "label")
            yield choice_example(f"piqa/{split}/{i}", _piqa_question(require(row, "goal", where)), choices, gold)

    def _hub(self, split: str) -> Iterator[Example]:
        for i, row in enumerate(load_hub(self.hub_id, self.hub_config, split)):
            yield choice_example(f"piqa/{split}/{i}", _piqa_question(row["goal"]), [row["sol1"], row["sol2"]],
                                 int(row["label"]))


def _hellaswag_question(context: str) -> str:
    return f"Which ending completes this text most plausibly?\n\n{context.strip()} ..."


def _hellaswag_clean(text: str) -> str:
    """lm-evaluation-harness's HellaSwag preprocessing (drop WikiHow [step]-style markers)."""
    text = text.strip().replace(" [title]", ". ")
    return re.sub(r"\[.*?\]", "", text).replace("  ", " ")


class HellaSwag(Task):
    """HellaSwag validation in the bz2 six-line text format: context, gold label 0-3, four endings."""

    name = "hellaswag"
    answer_type = "choice"
    default_split = "validation"
    splits = ("train", "validation")
    hub_id, hub_config = "Rowan/hellaswag", None

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, {"validation": ["hellaswag_val_full.txt.bz2"],
                                        "train": ["hellaswag_train_full.txt.bz2"]}, self.name)
        opener = bz2.open if file.suffix == ".bz2" else open
        try:
            with utf8(file), opener(file, "rt", encoding="utf-8") as f:
                lines = (line.rstrip("\n") for line in f)
                for i, item in enumerate(iter(lambda: list(islice(lines, 6)), [])):
                    if len(item) < 6:
                        if item == [""]:  # the file's final newline
                            return
                        raise UserError(f"{file} line {6 * i + 1}: incomplete item ({len(item)} of 6 lines: "
                                        f"context, label, 4 endings)")
                    context, label, *endings = item
                    gold = gold_index(label, 4, f"{file} line {6 * i + 2}", "label")
                    yield choice_example(f"hellaswag/{split}/{i}", _hellaswag_question(context), endings, gold)
        except (OSError, EOFError) as e:  # bz2: "Invalid data stream", or a truncated download
            if file.suffix != ".bz2":
                raise
            raise UserError(f"{file}: not a complete bz2 file ({e}); download it again") from None

    def _hub(self, split: str) -> Iterator[Example]:
        for i, row in enumerate(load_hub(self.hub_id, self.hub_config, split)):
            context = row["activity_label"] + ": " + row["ctx_a"] + " " + row["ctx_b"].capitalize()
            yield choice_example(f"hellaswag/{split}/{i}", _hellaswag_question(_hellaswag_clean(context)),
                                 [_hellaswag_clean(e) for e in row["endings"]], int(row["label"]))


def _csqa(id: str, stem: str, labels: Iterable[str], texts: Iterable[str], answer: str, where: str,
          concept: str | None, source_id: str | None) -> Example:
    labels = list(labels)
    if answer not in labels:
        raise UserError(f"{where}: field 'answerKey' is {answer!r}, not one of the labels {labels}")
    return choice_example(id, stem, list(texts), labels.index(answer), concept=concept, source_id=source_id)


class CommonsenseQA(Task):
    """CommonsenseQA from the original release files (train_rand_split / dev_rand_split .jsonl)."""

    name = "commonsenseqa"
    answer_type = "choice"
    default_split = "validation"
    splits = ("train", "validation")
    hub_id, hub_config = "tau/commonsense_qa", None

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        file = split_file(path, split, {"train": ["train_rand_split.jsonl"],
                                        "validation": ["dev_rand_split.jsonl"]}, self.name)
        for i, (n, row) in enumerate(read_jsonl(file)):
            where = f"{file} line {n}"
            q = require(row, "question", where)
            choices = require(q, "choices", f"{where} question")
            yield _csqa(f"commonsenseqa/{split}/{i}", require(q, "stem", f"{where} question"),
                        [c["label"] for c in choices], [c["text"] for c in choices],
                        require(row, "answerKey", where), where, q.get("question_concept"), row.get("id"))

    def _hub(self, split: str) -> Iterator[Example]:
        for i, row in enumerate(load_hub(self.hub_id, self.hub_config, split)):
            yield _csqa(f"commonsenseqa/{split}/{i}", row["question"], row["choices"]["label"],
                        row["choices"]["text"], row["answerKey"], f"{self.hub_id} row {i}",
                        row.get("question_concept"), row.get("id"))
