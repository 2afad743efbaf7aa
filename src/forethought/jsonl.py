"""Reading and writing JSON Lines, JSON and text files: line-numbered errors, atomic replacement, output checks."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from forethought.errors import UserError


def not_utf8(path: str | Path) -> UserError:
    """The error for a file that is not UTF-8 text, naming the file and the line of its first bad byte."""
    where = str(path)
    try:
        if Path(path).suffix == ".bz2":  # its bytes are compressed: no line to name
            raise OSError
        data = Path(path).read_bytes()
        data.decode("utf-8")
    except UnicodeDecodeError as e:  # the offset a text stream reports is within one chunk: find it in the file
        line = data.count(b"\n", 0, e.start) + 1
        where = f"{path} line {line}"
    except OSError:
        pass
    return UserError(f"{where}: not UTF-8 text (binary or another encoding); save it as UTF-8")


@contextmanager
def utf8(path: str | Path):
    """Turn a UnicodeDecodeError raised while `path` is read in this block into `not_utf8(path)`."""
    try:
        yield
    except UnicodeDecodeError:
        raise not_utf8(path) from None


def read_text(path: str | Path) -> str:
    """A whole UTF-8 text file; one that is not UTF-8 is a UserError naming it."""
    with utf8(path):
        return Path(path).read_text(encoding="utf-8")


def read_jsonl(path: str | Path, required: Iterable[str] = ()) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a bad line is a UserError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    required = tuple(required)
    with utf8(path), path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise UserError(f"{path} line {lineno}: expected a JSON object, got {type(obj).__name__}")
            for key in required:
                if key not in obj:
                    raise UserError(f"{path} line {lineno}: field '{key}' is missing")
            yield lineno, obj


def _writable_dir(path: Path, name: str) -> None:
    """Check that directory `path` exists or can be made, and that files can be written in it (without making it)."""
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise UserError(f"{name}: {p} is a file, not a directory; choose another path")
            try:  # the one sure test (permission bits do not bind root, and read-only mounts ignore them)
                tempfile.TemporaryFile(dir=p).close()
            except OSError as e:
                raise UserError(f"{name}: cannot write in {p} ({e.strerror or e}); choose a writable directory") from None
            return


def check_output_dir(path: str | Path, what: str = "--output") -> Path:
    """Fail early, naming `what`, if directory `path` could not be made or written in (it is not made here)."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{name} is an existing file; give a directory (new or existing)")
    _writable_dir(path, name)
    return path


def check_output_file(path: str | Path, what: str = "--output") -> Path:
    """Fail early, naming `what`, if file `path` could not be written (it is not written here)."""
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.is_dir():
        raise UserError(f"{name} is a directory; give a file path")
    _writable_dir(path.parent, name)
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; a run's files get the usual permissions
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_for_append(path: str | Path) -> IO[str]:
    """Open `path` for appending, first truncating a partial last line left by a killed writer."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        with path.open("r+b") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):
                f.truncate(end)
    return path.open("a", encoding="utf-8")


def append(f: IO[str], records: list[dict]) -> None:
    """Write `records` and make them durable before returning."""
    if records:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        f.flush()
        os.fsync(f.fileno())


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Write rows as JSON Lines, replacing `path` only once everything is written."""
    _atomic_write(Path(path), lambda f: f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_json(path: str | Path, obj) -> None:
    """Write pretty JSON, replacing `path` only once everything is written."""
    _atomic_write(Path(path), lambda f: f.write(json.dumps(obj, indent=2, ensure_ascii=False) + "\n"))
