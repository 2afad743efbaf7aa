"""Multi-process training: the SFT, Step-APO and value-model learners under `accelerate launch` with 2 CPU processes
(DDP over gloo) see disjoint halves of each global batch and end where single-process training with the same recipe
ends; `forethought.learners.train` picks in-process or launched training."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from forethought.errors import UserError
from forethought.learners import train
from forethought.learners.distributed import DistributedSettings, launch_flags, launch_training
from forethought.learners.sft import LoraSettings, SFTConfig, train_sft
from forethought.learners.step_apo import StepAPOConfig
from forethought.learners.value_model import ValueConfig, ValueModel

ROWS = [
    {"messages": [{"role": "user", "content": f"What is {a} + {b}? Plan first."},
                  {"role": "assistant", "content": f"Plan: add the numbers. {a} + {b} = {a + b}. The answer is {a + b}."}]}
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (9, 9)]
]


def _weights(path):
    return load_file(str(path / "model.safetensors"))


def test_two_processes_see_different_data_and_match_one_process(tiny_model_dir, tmp_path):
    cfg = SFTConfig(learning_rate=5e-3, max_steps=3, batch_size=8, max_length=128,
                    lora=LoraSettings(r=4, alpha=8, dropout=0.0), distributed=DistributedSettings(processes=2))
    one = cfg.model_copy(update={"distributed": DistributedSettings()})
    single = train_sft(tiny_model_dir, ROWS, tmp_path / "single", one, seed=3, progress=False, trace=True)
    multi = launch_training(tiny_model_dir, ROWS, tmp_path / "multi", cfg, seed=3, progress=False, trace=True)

    assert (single.processes, multi.processes) == (1, 2)
    assert single.steps == multi.steps == 3
    assert multi.trained_tokens == single.trained_tokens  # counted over both ranks
    for step in range(3):
        rank0, rank1 = set(multi.batches[0][step]), set(multi.batches[1][step])
        assert len(rank0) == len(rank1) == 4  # batch_size 8 is the global batch: 4 rows per process
        assert not rank0 & rank1  # the ranks saw different rows ...
        assert rank0 | rank1 == set(single.batches[0][step])  # ... that together are the single process's batch

    base, a, b = _weights(tiny_model_dir), _weights(tmp_path / "single"), _weights(tmp_path / "multi")
    moved = sum((a[k] - base[k]).norm() ** 2 for k in base) ** 0.5
    apart = sum((a[k] - b[k]).norm() ** 2 for k in base) ** 0.5
    assert moved > 1e-3  # training changed the weights ...
    assert apart < 1e-4 * moved  # ... and both runs changed them the same way (measured: 1e-7, float noise)
    assert multi.train_loss == pytest.approx(single.train_loss, rel=0.05)
    assert not list(tmp_path.glob(".multi.job-*"))  # the job folder is removed


PAIRS = [
    {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "prefix": "<plan>",
     "chosen": f"\n<step>Plan 1: add {i} twice</step>", "rejected": "\n<step>Plan 1: guess</step>",
     "q_chosen": 0.5 + 0.1 * i, "q_rejected": -0.5, "kind": "step", "question_id": str(i)}
    for i in range(8)
]
STATES = [{"messages": [{"role": "user", "content": "What is 3 + 4?"}], "prefix": f"<plan>\n<step>Plan 1: {t} {i}</step>",
           "q": q, "question_id": "q"} for i in range(4) for t, q in (("add the numbers", 0.8), ("guess wildly", -0.8))]


def _one_and_two(kind, model, rows, tmp_path, cfg):
    """The same recipe trained through `train` in one process and in two (the global batch unchanged)."""
    two = cfg.model_copy(update={"distributed": DistributedSettings(processes=2)})
    single = train(kind, model, rows, tmp_path / "single", cfg, seed=3, progress=False)
    multi = train(kind, model, rows, tmp_path / "multi", two, seed=3, progress=False)
    assert (single.processes, multi.processes) == (1, 2)
    assert single.steps == multi.steps == 2
    assert multi.trained_tokens == single.trained_tokens > 0  # counted over both ranks
    assert multi.train_loss == pytest.approx(single.train_loss, rel=1e-3)
    assert not list(tmp_path.glob(".multi.*")) and not list(tmp_path.glob(".single.*"))  # partial and job dirs gone
    base, a, b = _weights(model), _weights(tmp_path / "single"), _weights(tmp_path / "multi")
    moved = sum((a[k] - base[k]).norm() ** 2 for k in base if k in a) ** 0.5
    apart = sum((a[k] - b[k]).norm() ** 2 for k in a) ** 0.5
    assert moved > 1e-3  # training changed the weights ...
    assert apart < 1e-4 * moved  # ... and both runs changed them the same way
    return single, multi


def test_step_apo_two_processes_match_one_process(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = StepAPOConfig(learning_rate=5e-3, max_steps=2, batch_size=4, max_length=128, lora=None)
    _one_and_two("step_apo", tiny_model_dir, PAIRS, tmp_path, cfg)
    AutoModelForCausalLM.from_pretrained(tmp_path / "multi")  # a plain, loadable checkpoint


def test_value_model_two_processes_match_one_process(tiny_model_dir, tmp_path):
    cfg = ValueConfig(learning_rate=3e-3, max_steps=2, batch_size=4, max_length=128)
    _one_and_two("value", tiny_model_dir, STATES, tmp_path, cfg)
    states = [(r["messages"], r["prefix"]) for r in STATES]
    values = ValueModel.load(tmp_path / "multi", device="cpu").value(states)
    assert values == pytest.approx(ValueModel.load(tmp_path / "single", device="cpu").value(states), abs=1e-4)


def test_train_checks_kind_and_config(tiny_model_dir, tmp_path):
    with pytest.raises(TypeError, match="takes a StepAPOConfig"):
        train("step_apo", tiny_model_dir, PAIRS, tmp_path / "x", SFTConfig(), seed=0)
    with pytest.raises(UserError, match="unknown learner kind 'ppo'"):
        train("ppo", tiny_model_dir, PAIRS, tmp_path / "x", SFTConfig(), seed=0)
    two = ValueConfig(distributed=DistributedSettings(processes=2))
    with pytest.raises(UserError, match="no value targets"):  # the learner's own message, no processes started
        train("value", tiny_model_dir, [], tmp_path / "x", two, seed=0, progress=False)
    assert not list(tmp_path.iterdir())


def test_global_batch_must_split_evenly(tiny_model_dir, tmp_path):
    cfg = SFTConfig(batch_size=6, distributed=DistributedSettings(processes=4))
    with pytest.raises(UserError, match="batch_size=6 must be divisible"):
        launch_training(tiny_model_dir, ROWS, tmp_path / "out", cfg, seed=0, progress=False)


def test_launch_flags_per_strategy(tmp_path):
    ddp = launch_flags(DistributedSettings(processes=2), cuda=False, port=29555)
    assert "--multi_gpu" in ddp and ddp[ddp.index("--num_processes") + 1] == "2"
    assert ddp[ddp.index("--mixed_precision") + 1] == "no"
    fsdp = launch_flags(DistributedSettings(processes=8, strategy="fsdp"), cuda=True, port=1)
    assert "--use_fsdp" in fsdp and fsdp[fsdp.index("--mixed_precision") + 1] == "bf16"
    ds = launch_flags(DistributedSettings(processes=8, strategy="deepspeed", zero_stage=3), cuda=True, port=1)
    assert ds[ds.index("--zero_stage") + 1] == "3"
    config = tmp_path / "acc.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\n")
    assert launch_flags(DistributedSettings(processes=2, accelerate_config=str(config)), cuda=True, port=1)[:2] == \
        ["--config_file", str(config)]
    with pytest.raises(UserError, match="file not found"):
        launch_flags(DistributedSettings(processes=2, accelerate_config=str(tmp_path / "nope.yaml")), cuda=True, port=1)
