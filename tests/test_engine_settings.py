"""The recipe's engine block: per-kind keys, replica keys, fixed servers in self-training runs, and clear errors for
engines whose optional dependency is missing (vLLM on a CPU machine)."""

from __future__ import annotations

import importlib.util

import pytest

from forethought.config import validate
from forethought.engines import get_engine
from forethought.engines.server import render_command
from forethought.engines.settings import EngineSettings
from forethought.errors import UserError
from forethought.runs.config import RunConfig


def _engine(**data) -> EngineSettings:
    return validate(EngineSettings, data, "recipe.yaml")


def test_options_hold_only_the_kinds_settings():
    assert _engine().options() == {"batch_size": 64, "device": None, "dtype": None, "trust_remote_code": False,
                                   "prefill_tokens": None, "shared_kv": None, "continuous": False,
                                   "packed_weights": False}
    opts = _engine(kind="openai", base_urls=["http://a:8000/v1", "http://b:8000/v1"], api_key_env="K",
                   replicas=2, replica_cpus=2).options()
    assert opts["base_urls"] == ["http://a:8000/v1", "http://b:8000/v1"] and opts["api_key_env"] == "K"
    assert opts["replicas"] == 2 and opts["replica_cpus"] == 2 and "batch_size" not in opts
    vllm = _engine(kind="vllm", tensor_parallel_size=2, dtype="bfloat16").options()
    assert vllm["tensor_parallel_size"] == 2 and vllm["enable_sleep_mode"] is True and "replicas" not in vllm


@pytest.mark.parametrize("data, message", [
    ({"kind": "hf", "base_urls": ["http://a/v1"]}, "base_urls does not apply to engine.kind=hf"),
    ({"kind": "openai"}, "needs either base_urls"),
    ({"kind": "openai", "base_urls": ["http://a/v1"], "launch": "vllm serve {model}"}, "not both"),
    ({"kind": "openai", "base_urls": ["a:8000"]}, "must start with http"),
    ({"kind": "vllm", "batch_size": 8}, "batch_size does not apply to engine.kind=vllm"),
    ({"kind": "openai", "base_urls": ["http://a/v1"], "shared_kv": True}, "shared_kv does not apply"),
    ({"prefill_tokens": 0}, "'prefill_tokens': Input should be greater than or equal to 1"),
    ({"replicas": 0}, "'replicas': Input should be greater than or equal to 1"),
    ({"replica_gpus": 1}, "need replicas > 1"),
    ({"kind": "sglang"}, "valid values: hf, openai, vllm"),
    ({"replica": 2}, "unknown key 'replica'"),
])
def test_bad_engine_blocks_name_the_key(data, message):
    with pytest.raises(UserError, match=message):
        _engine(**data)


def test_a_fixed_server_cannot_follow_self_training(tmp_path):
    from forethought.runs.loop import Runner

    cfg = validate(RunConfig, {"method": "rest_em", "task": {"name": "synthetic/arithmetic"}, "output": str(tmp_path),
                               "engine": {"kind": "openai", "base_urls": ["http://127.0.0.1:9/v1"]}}, "recipe")
    with pytest.raises(UserError, match="set engine.launch"):
        Runner(cfg, progress=False)


def test_launch_templates_fill_placeholders():
    command = render_command("{python} -m srv --name {name} --port {port}", "my/model", host="h", port=8123)
    assert command[1:] == ["-m", "srv", "--name", "my/model", "--port", "8123"]
    with pytest.raises(UserError, match="unknown placeholder"):
        render_command("serve {modle}", "x", host="h", port=1)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_vllm_without_vllm_is_a_clear_user_error():
    with pytest.raises(UserError, match=r"forethought\[vllm\]"):
        get_engine("vllm", "smollm2-135m")


def test_openai_engine_needs_servers_and_a_set_key(monkeypatch):
    with pytest.raises(UserError, match="needs either engine.base_urls"):
        get_engine("openai", "m")
    monkeypatch.delenv("FT_UNSET_KEY", raising=False)
    with pytest.raises(UserError, match=r"\$FT_UNSET_KEY, which is not set"):
        get_engine("openai", "m", base_urls=["http://127.0.0.1:9/v1"], api_key_env="FT_UNSET_KEY")


@pytest.mark.parametrize("env, expected", [("1", 1), ("3", 3), ("", None), ("many", None), ("0", None)])
def test_cpu_generation_honours_omp_num_threads(tiny_model_dir, monkeypatch, env, expected):
    """A user who sets OMP_NUM_THREADS (to share the machine) gets that many torch threads; otherwise (unset or not
    a positive number) the engine takes the physical cores."""
    import torch

    from forethought.engines.hf import HFEngine, physical_cores

    saved = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", env)
    try:
        torch.set_num_threads(7)
        HFEngine(str(tiny_model_dir), device="cpu", batch_size=2)
        assert torch.get_num_threads() == (expected or physical_cores())
    finally:
        torch.set_num_threads(saved)
