"""Typed configuration: pydantic models that reject unknown keys, loaded from YAML with dotted overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from forethought.errors import UserError
from forethought.jsonl import check_output_dir, read_text

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are an error, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _output_dir(value: str) -> str:
    try:
        check_output_dir(value, "")
    except UserError as e:
        raise ValueError(str(e)) from None
    return value


# A run's output directory: refused when it is a file or cannot be written, before any work is done.
OutputDir = Annotated[str, AfterValidator(_output_dir)]


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ["learner.learning_rate=1e-5", ...] to a nested dict; values are parsed as YAML scalars."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"override '{item}' must look like section.key=value")
        set_dotted(data, key.strip(), yaml.safe_load(raw), f"override '{item}'")
    return data


def set_dotted(data: dict, key: str, value, label: str) -> None:
    """data["a"]["b"] = value for key "a.b", creating missing sections; `label` names the override in errors."""
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise UserError(f"{label}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def describe_errors(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One readable message for a pydantic error, naming each bad key by its dotted path."""
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            allowed = f" (allowed keys: {', '.join(model.model_fields)})" if len(e["loc"]) == 1 else ""
            problems.append(f"unknown key '{where}'{allowed}")
        elif e["type"] == "missing":
            problems.append(f"key '{where}' is missing")
        elif e["type"] == "literal_error":
            expected = e["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
            problems.append(f"'{where}' is {e['input']!r}; valid values: {expected}")
        else:
            msg = e["msg"].removeprefix("Value error, ")
            named = not where or msg.startswith(f"{where}.")  # a section's own check already names its keys
            problems.append(msg if named else f"'{where}': {msg}")
    return f"{source}: " + "; ".join(problems)


def validate(model: type[M], data: dict, source: str) -> M:
    """Build `model` from `data`, turning validation errors into one UserError that names the keys."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise UserError(describe_errors(e, model, source)) from None


def read_yaml(path: str | Path):
    """Parse a YAML file; a missing file, bytes that are not UTF-8 or bad YAML is a one-line UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    text = read_text(path)
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise UserError(f"{path}{where}: not valid YAML ({problem})") from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or bad YAML is a UserError naming the file."""
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def load_config(model: type[M], path: str | Path, overrides: list[str] = ()) -> M:
    """Load a YAML recipe into `model`, applying dotted `key=value` overrides first."""
    return validate(model, apply_overrides(load_yaml(path), list(overrides)), str(path))
