"""The Task interface (load rows as Examples, verify outputs) and the helpers every task family shares."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from forethought.errors import UserError
from forethought.jsonl import read_text

LETTERS = string.ascii_uppercase
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation"}


@dataclass(frozen=True)
class Example:
    """One question with its gold answer, ready to prompt a model and to check its output."""

    id: str
    question: str
    gold: str
    choices: tuple[str, ...] = ()
    reference: str | None = None
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Demo:
    """A worked demonstration (question, anticipatory plan, solution) shown to a weak model while it samples."""

    question: str
    plan: str
    solution: str


class Task:
    """A named set of questions with checkable answers; subclasses implement `_local` and `_hub`."""

    name: str = ""
    answer_type: str = "exact"
    default_split: str = "test"
    splits: tuple[str, ...] = ("test",)
    hub_id: str | None = None
    hub_config: str | None = None

    def load(self, data: str | Path | None = None, split: str | None = None, limit: int | None = None) -> list[Example]:
        """Read `split` (default: the evaluation split) from a local path, or from the Hub when `data` is None."""
        split = self._split(split)
        if data is None:
            rows = self._hub(split)
        else:
            path = Path(data).expanduser()
            if not path.exists():
                raise UserError(f"{self.name}: data path not found: {path}")
            rows = self._local(path, split)
        return list(islice(rows, limit) if limit is not None else rows)

    def _split(self, split: str | None) -> str:
        """Resolve a split name (aliases like 'val' accepted) or raise naming the task's splits."""
        if split is None:
            return self.default_split
        if split not in self.splits and SPLIT_ALIASES.get(split) in self.splits:
            split = SPLIT_ALIASES[split]
        if split not in self.splits:
            raise UserError(f"task '{self.name}' has no split '{split}'; its splits are: {', '.join(self.splits)}")
        return split

    def _local(self, path: Path, split: str) -> Iterator[Example]:
        raise NotImplementedError

    def _hub(self, split: str) -> Iterator[Example]:
        raise UserError(f"task '{self.name}' has no Hugging Face Hub source; pass --data PATH to a local copy")

    def verify(self, output: str, example: Example):
        """Check one model output against the example's gold answer."""
        return self.verify_batch([output], [example])[0]

    def verify_batch(self, outputs: Sequence[str], examples: Sequence[Example]) -> list:
        """Check many outputs at once (math equivalence runs in a worker pool)."""
        from forethought.verify import verify_batch

        if len(outputs) != len(examples):
            raise ValueError(f"{len(outputs)} outputs for {len(examples)} examples")
        num_choices = [len(ex.choices) or None for ex in examples] if self.answer_type == "choice" else None
        return verify_batch(self.answer_type, list(outputs), [ex.gold for ex in examples], num_choices=num_choices)

    def fewshot(self) -> str | None:
        """Few-shot text to put before each question, or None when the task has none."""
        return None

    def demos(self, k: int) -> list[Demo]:
        """`k` worked demonstrations disjoint from the task's questions; tasks without any say so."""
        raise UserError(f"task '{self.name}' has no worked demonstrations; set sampler.demos: 0")

    def __repr__(self) -> str:
        return f"<Task {self.name} ({self.answer_type})>"


# ---------------------------------------------------------------- shared helpers


def render_choices(question: str, choices: Sequence[str]) -> str:
    """The question followed by its options, one per line: "A) ...", "B) ..."."""
    return question.rstrip() + "\n" + "\n".join(f"{LETTERS[i]}) {c}" for i, c in enumerate(choices))


def choice_example(id: str, question: str, choices: Sequence[str], gold_index: int, **meta) -> Example:
    """A multiple-choice Example whose gold is the letter of option `gold_index`."""
    choices = tuple(str(c).strip() for c in choices)
    return Example(id=id, question=render_choices(question, choices), gold=LETTERS[gold_index],
                   choices=choices, meta=meta)


def require(row: dict, key: str, where: str):
    """row[key], or a UserError "WHERE: field 'key' is missing"."""
    if not isinstance(row, dict) or key not in row or row[key] is None:
        raise UserError(f"{where}: field '{key}' is missing")
    return row[key]


def gold_index(value, n: int, where: str, field_name: str) -> int:
    """Validate a 0-based option index (int or digit string) against `n` options."""
    try:
        i = int(value)
    except (TypeError, ValueError):
        i = -1
    if not 0 <= i < n:
        raise UserError(f"{where}: field '{field_name}' must be an option index 0..{n - 1}, got {value!r}")
    return i


def read_json(path: Path):
    """Parse a whole JSON file, or raise naming the file."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None


def split_file(path: Path, split: str, layout: dict[str, Sequence[str]], task: str) -> Path:
    """The file holding `split`: `path` itself if it is a file, else the first of layout[split] found under it."""
    if path.is_file():
        return path
    for rel in layout.get(split, ()):
        if (path / rel).is_file():
            return path / rel
    present = [s for s, rels in layout.items() if any((path / r).is_file() for r in rels)]
    looked = f" (looked for {' or '.join(layout[split])})" if layout.get(split) else ""
    raise UserError(f"{task}: split '{split}' not found under {path}{looked}; "
                    f"splits present there: {', '.join(present) or 'none'}")


def load_hub(hub_id: str, config: str | None, split: str):
    """A `datasets.Dataset` from the Hub, failing fast with one clear UserError when offline or unknown."""
    import datasets
    import huggingface_hub
    from huggingface_hub import constants

    advice = "pass --data PATH to a local copy"
    if not constants.HF_HUB_OFFLINE:
        # Probe once with a short timeout: datasets' own downloads retry for ~25 s when the Hub is unreachable.
        try:
            huggingface_hub.HfApi().dataset_info(hub_id, timeout=5)
        except huggingface_hub.errors.RepositoryNotFoundError:
            raise UserError(f"no dataset '{hub_id}' on the Hugging Face Hub (or it is private or gated); {advice}") from None
        except Exception as e:  # connection refused, DNS failure, timeout...
            raise UserError(
                f"could not load {hub_id} from the Hugging Face Hub (offline?); {advice} "
                f"(or set HF_HUB_OFFLINE=1 to use a cached copy). Cause: {type(e).__name__}: {e}") from None
    try:
        return datasets.load_dataset(hub_id, config, split=split)
    except Exception as e:
        cause = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        if isinstance(e, ConnectionError) or constants.HF_HUB_OFFLINE:
            raise UserError(f"could not load {hub_id} from the Hugging Face Hub (offline?); {advice}. "
                            f"Cause: {cause}") from None
        raise UserError(f"could not load {hub_id} (configuration {config!r}, split '{split}') from the Hugging Face "
                        f"Hub; {advice}. Cause: {cause}") from None
