"""Prompt/response pairs streamed from a JSONL file or a Hugging Face Hub dataset, resumable from a saved position.

Nothing is held beyond the current line: a JSONL file is read line by line from a byte offset, a Hub dataset is
streamed (`streaming=True`) and skips the records already done.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from forethought.errors import UserError


@dataclass(frozen=True)
class Position:
    """Where reading resumes: the next record's 0-based index and, for a file, its byte offset and line number."""

    index: int = 0
    offset: int = 0
    line: int = 0


@dataclass(frozen=True)
class Pair:
    """One corpus record: its index, prompt, reference response and, when the corpus gives one, its final answer."""

    index: int
    prompt: str
    response: str
    answer: str | None


@dataclass(frozen=True)
class Fields:
    """Which fields of a corpus record hold the prompt, the response and (optionally) the final answer."""

    prompt: str = "prompt"
    response: str = "response"
    answer: str | None = None


def read_pairs(source: str, fields: Fields, start: Position = Position(), *, split: str = "train",
               config: str | None = None) -> Iterator[tuple[Pair, Position]]:
    """Yield (pair, position after it) from `source` (a JSONL path, else a Hub dataset id), starting at `start`."""
    path = Path(source).expanduser()
    if path.is_file():
        return _file_pairs(path, fields, start)
    if path.exists():
        raise UserError(f"--input {source} is a directory; give a JSONL file or a Hub dataset id")
    if source.count("/") != 1 or source.startswith((".", "/", "~")) or source.endswith((".jsonl", ".json")):
        raise UserError(f"file not found: {source} (nor is it a Hub dataset id like owner/name)")
    return _hub_pairs(source, fields, start, split, config)


def _pair(row, index: int, fields: Fields, where: str) -> Pair:
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(row).__name__}")
    values = []
    for option, key in (("--prompt-field", fields.prompt), ("--response-field", fields.response),
                        ("--answer-field", fields.answer)):
        if key is None:
            values.append(None)
            continue
        if key not in row or row[key] is None:
            raise UserError(f"{where}: field '{key}' is missing (choose the field with {option})")
        value = row[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and option == "--answer-field":
            value = str(value)
        if not isinstance(value, str):
            raise UserError(f"{where}: field '{key}' must be a string, got {type(value).__name__}")
        values.append(value)
    return Pair(index, *values)


def _file_pairs(path: Path, fields: Fields, start: Position) -> Iterator[tuple[Pair, Position]]:
    with path.open("rb") as f:
        size = path.stat().st_size
        if start.offset > size:
            raise UserError(f"{path} is shorter than when annotation stopped ({size} < {start.offset} bytes); "
                            "the corpus changed: annotate into a new --output")
        f.seek(start.offset)
        index, offset, line = start.index, start.offset, start.line
        for raw in f:
            offset += len(raw)
            line += 1
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise UserError(f"{path} line {line}: not valid JSON ({getattr(e, 'msg', e)})") from None
            pair = _pair(row, index, fields, f"{path} line {line}")
            index += 1
            yield pair, Position(index, offset, line)


def _hub_pairs(hub_id: str, fields: Fields, start: Position, split: str,
               config: str | None) -> Iterator[tuple[Pair, Position]]:
    import datasets
    import huggingface_hub
    from huggingface_hub import constants

    advice = "give a local JSONL file with --input"
    try:
        if not constants.HF_HUB_OFFLINE:
            huggingface_hub.HfApi().dataset_info(hub_id, timeout=5)
        stream = datasets.load_dataset(hub_id, config, split=split, streaming=True)
    except huggingface_hub.errors.RepositoryNotFoundError:
        raise UserError(f"no dataset '{hub_id}' on the Hugging Face Hub (or it is private or gated); {advice}") from None
    except Exception as e:  # offline, DNS, bad config or split
        cause = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        raise UserError(f"could not stream {hub_id} (configuration {config!r}, split '{split}') from the Hugging Face "
                        f"Hub; {advice}. Cause: {cause}") from None
    index = start.index
    for row in stream.skip(start.index) if start.index else stream:
        pair = _pair(row, index, fields, f"{hub_id} {split} row {index}")
        index += 1
        yield pair, Position(index)
