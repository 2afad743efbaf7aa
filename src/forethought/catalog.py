"""The recipes shipped inside the package (`src/forethought/recipes/*.yaml`; the repository's `recipes/` links there).

A recipe argument is a path when that file exists, otherwise the name of a built-in recipe: `quickstart`,
`quickstart.yaml` and `recipes/quickstart.yaml` (the form the recipe headers and the README use) all name
`recipes/quickstart.yaml` inside the installed package, so the documented commands work after `pip install
forethought` from any directory. Every `*.yaml` file in the folder is a built-in recipe; nothing is registered.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from forethought.errors import UserError

RECIPES_DIR = Path(__file__).resolve().parent / "recipes"
_COMMAND = re.compile(r"forethought (\w+) recipes/")


@dataclass(frozen=True)
class Recipe:
    name: str
    path: Path
    purpose: str  # the header's first line
    command: str  # the command its header shows (run, cpl, codeplan, search...)


def recipe_names() -> list[str]:
    return sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))


def recipes() -> list[Recipe]:
    """Every built-in recipe, by name."""
    return [describe(RECIPES_DIR / f"{name}.yaml") for name in recipe_names()]


def describe(path: Path) -> Recipe:
    header = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("#").strip())
    purpose = _first_sentence(header)
    command = next((m.group(1) for line in header if (m := _COMMAND.search(line))), "run")
    return Recipe(path.stem, path, purpose, command)


def _first_sentence(header: list[str]) -> str:
    """The header's opening sentence (it may wrap over lines; it ends before the first command line)."""
    lines = []
    for line in header:
        if not line or line.startswith("forethought "):
            break
        lines.append(line)
    text = " ".join(lines)
    end = re.search(r"(?<!\bal)[.!?](?=\s|$)", text)
    return text[: end.end()] if end else text


def builtin_name(spec: str) -> str:
    """'quickstart', 'quickstart.yaml' or 'recipes/quickstart.yaml' -> 'quickstart'."""
    name = spec.removeprefix("recipes/")
    return name[: -len(".yaml")] if name.endswith(".yaml") else name


def unknown(spec: str) -> UserError:
    return UserError(f"no recipe file '{spec}' and no built-in recipe named '{builtin_name(spec)}'; "
                     f"built-in recipes: {', '.join(recipe_names())} (see `forethought recipes`)")


def find(name: str) -> Path:
    """The built-in recipe called `name` (also NAME.yaml or recipes/NAME.yaml), or one error listing the names."""
    if "/" in builtin_name(name) or "\\" in name:  # a path elsewhere, not a name
        raise UserError(f"recipe file not found: {name} (built-in recipes: {', '.join(recipe_names())})")
    path = RECIPES_DIR / f"{builtin_name(name)}.yaml"
    if not path.is_file():
        raise unknown(name)
    return path


def resolve_recipe(recipe: str | Path) -> Path:
    """An existing file as it is; otherwise the built-in recipe of that name; otherwise one error listing them."""
    path = Path(recipe).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        raise UserError(f"recipe '{recipe}' is a directory; give a recipe .yaml file or a built-in recipe name")
    return find(str(recipe))


def copy(name: str, dest: str | Path, *, force: bool = False) -> Path:
    """Write built-in recipe `name` to `dest` (a file, or a folder to put NAME.yaml in) to edit; never overwrites
    an existing file unless `force`."""
    source = find(name)
    dest = Path(dest).expanduser()
    target = dest / source.name if dest.is_dir() else dest
    if target.exists() and not force:
        raise UserError(f"{target} already exists; choose another destination or pass --force to overwrite it")
    if not target.parent.is_dir():
        raise UserError(f"folder {target.parent} does not exist; create it or choose another destination")
    try:
        target.write_bytes(source.read_bytes())
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror}") from None
    return target
