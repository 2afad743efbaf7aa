"""GRPO learner: rewards from the task's verifier and plan checks, config errors, a two-step CLI run on the tiny
model (rollouts from the updated weights, tokens counted like sampling tokens), and SIGKILL-and-resume."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from forethought.config import load_config
from forethought.errors import UserError
from forethought.learners.rewards import RewardSettings, TaskReward, split_completion
from forethought.runs.config import RunConfig
from forethought.tasks import get_task
from forethought.tasks.base import Example
from conftest import ONES_QUESTIONS, warm_tiny_model
from test_runs import _kill_when  # the SIGKILL helper the run-loop test uses

pytest.importorskip("trl")


def _reward(answer_type="number", plan_format="none", **settings) -> TaskReward:
    task = get_task({"number": "synthetic/arithmetic", "math": "math"}[answer_type])
    return TaskReward(task, plan_format, RewardSettings(**settings), [])


EX = Example(id="q1", question="Tom has 3 apples and buys 4 more. How many apples?", gold="7")


def test_reward_correct_wrong_unparseable():
    r = _reward()
    parts = r.score(["3 + 4 = 7. The answer is 7.", "The answer is 8.", "I do not know."], [EX] * 3)
    assert [p.reward for p in parts] == [1.0, 0.0, 0.0]
    assert [p.extracted for p in parts] == ["7", "8", None]
    assert parts[0].well_formed is None and not parts[0].leaked


def test_reward_code_plan_format_and_leak():
    r = _reward(plan_format="code", format=0.5, leak_penalty=1.0)
    good = "total = apples + bought\n```\n3 + 4 = 7. The answer is 7."
    unclosed = "total = apples + bought\n3 + 4 = 7. The answer is 7."  # the block never closes: no answer read
    empty_plan = "```\nThe answer is 7."
    leaking = "answer = 7\n```\nThe answer is 7."
    parts = r.score([good, unclosed, empty_plan, leaking], [EX] * 4)
    assert [p.correct for p in parts] == [True, False, True, True]
    assert [p.well_formed for p in parts] == [True, False, False, True]
    assert [p.leaked for p in parts] == [False, True, False, True]  # unclosed: the "plan" runs on to the answer
    assert [p.reward for p in parts] == [1.5, -1.0, 1.0, 0.5]


def test_reward_steps_plan_format_and_leak():
    r = _reward(plan_format="steps", format=0.25, leak_penalty=0.5)
    good = "\n<step>Plan 1: add the apples bought.</step>\n</plan>\n<solution>3 + 4 = 7. The answer is 7."
    no_close = "\n<step>Plan 1: add.</step>\n<solution>The answer is 7."  # plan not closed before the answer
    stray = "\n<step>Plan 1: add.</step> and more text\n</plan>\n<solution>The answer is 7."
    no_solution = "\n<step>Plan 1: add.</step>\n</plan> The answer is 7."  # scored as in eval: the whole reply
    leaking = "\n<step>Plan 1: the answer is 7.</step>\n</plan>\n<solution>The answer is 7."
    parts = r.score([good, no_close, stray, no_solution, leaking], [EX] * 5)
    assert [p.well_formed for p in parts] == [True, False, False, False, True]
    assert [p.correct for p in parts] == [True] * 5
    assert [p.leaked for p in parts] == [False, False, False, False, True]
    assert [p.reward for p in parts] == [1.25, 1.0, 1.0, 1.0, 0.75]
    assert split_completion(good, "steps")[1].strip().startswith("3 + 4")


FAKE_WORKER = """
import json, sys, time
print("ready", flush=True)
for line in sys.stdin:
    gold, pred = json.loads(line)
    if "sleep" in pred:
        time.sleep(600)
    print("1" if gold == pred else "0", flush=True)
"""


def test_reward_math_timeout_scores_zero_without_hanging(tmp_path, monkeypatch):
    from forethought.verify import _mathpool

    script = tmp_path / "worker.py"
    script.write_text(FAKE_WORKER)
    pool = _mathpool.MathPool(size=2, command=(sys.executable, str(script)))
    monkeypatch.setattr(_mathpool, "_POOL", pool)
    monkeypatch.setattr(_mathpool, "get_pool", lambda: pool)
    from forethought.verify import mathexpr

    monkeypatch.setattr(mathexpr, "get_pool", lambda: pool)
    r = _reward("math", verify_timeout=0.5)
    ex = Example(id="m", question="x?", gold="\\frac{1}{2}")
    start = time.monotonic()
    try:
        parts = r.score(["So \\boxed{\\text{sleep}}", "So \\boxed{\\frac{1}{2}}", "So \\boxed{3}"], [ex] * 3)
    finally:
        pool.close()
    assert time.monotonic() - start < 5
    assert [p.reward for p in parts] == [0.0, 1.0, 0.0]


def test_config_errors(tmp_path):
    base = {"method": "grpo", "task": {"name": "synthetic/arithmetic"}, "output": str(tmp_path / "o")}

    def load(learner, **extra):
        path = tmp_path / "r.yaml"
        path.write_text(yaml.safe_dump({**base, "learner": {"kind": "grpo", **learner}, **extra}))
        return load_config(RunConfig, path, [])

    assert load({"loss_type": "dr_grpo", "beta": 0.04}).learner.loss_type == "dr_grpo"
    with pytest.raises(UserError, match="unknown key 'learner.grpo.num_generaions'|num_generaions"):
        load({"num_generaions": 4})
    with pytest.raises(UserError, match="loss_type"):
        load({"loss_type": "ppo"})
    with pytest.raises(UserError, match="natural is not supported by the GRPO learner"):
        load({"plan_format": "natural"})
    with pytest.raises(UserError, match="processes must be 1"):
        load({"distributed": {"processes": 2}})
    with pytest.raises(UserError, match="rewards.format"):
        load({"rewards": {"format": 0.5}})


def test_sampler_section_in_a_grpo_run_is_refused(tmp_path):
    from forethought.runs.loop import Runner

    cfg = RunConfig.model_validate({"method": "grpo", "task": {"name": "synthetic/arithmetic"},
                                    "sampler": {"kind": "rejection"}, "learner": {"kind": "grpo"},
                                    "output": str(tmp_path / "o")})
    with pytest.raises(UserError, match="no sampling stage"):
        Runner(cfg, progress=False)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- end to end on the tiny model

@pytest.fixture(scope="module")
def warm_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random model after a few SFT steps toward 'The answer is 1.' (so rewards are not all equal)."""
    return warm_tiny_model(tiny_model_dir, tmp_path_factory.mktemp("warm") / "model", max_steps=6)


def write_recipe(path: Path, model: Path, task: Path, output: Path, **learner) -> Path:
    recipe = {
        "method": "grpo", "model": str(model),
        "task": {"name": str(task), "train_limit": 8, "eval_limit": 6},
        "engine": {"batch_size": 16},
        "learner": {"kind": "grpo", "num_generations": 4, "questions_per_step": 2, "steps_per_iteration": 1,
                    "learning_rate": 1e-3, "lora": None, "max_completion_length": 12, "save_steps": 1, **learner},
        "eval": {"max_new_tokens": 12},
        "iterations": 2, "output": str(output),
    }
    path.write_text(yaml.safe_dump(recipe))
    return path


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _logprob(model_dir: Path, prompt_ids: list[int], completion_ids: list[int]) -> float:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt_ids) - 1:-1]
    return float(torch.log_softmax(logits, -1).gather(1, torch.tensor(completion_ids)[:, None]).sum())


def test_two_step_grpo_run_through_the_cli(tmp_path, warm_model, ones_task):
    from forethought.engines.base import Request
    from forethought.engines.hf import HFEngine
    from forethought.learners.grpo import rollout_messages
    from forethought.report.compare import compare_runs

    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run")
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, "-m", "forethought.cli", "run", str(recipe), "--quiet"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "run"
    metrics = read_lines(root / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    manifest = json.loads((root / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"iter_000/eval", "iter_001/train", "iter_001/eval", "iter_002/train",
                                       "iter_002/eval"}
    rollouts = {t: read_lines(root / f"iter_{t:03d}" / "rollouts.jsonl") for t in (1, 2)}
    for t, rows in rollouts.items():
        assert len(rows) == 2 * 4 and {r["step"] for r in rows} == {t}  # 2 questions x G=4, one step each
        assert all(r["tokens"] == len(r["token_ids"]) for r in rows)
        assert metrics[t]["tokens_generated"] == sum(r["tokens"] for r in rows)
        assert metrics[t]["trials"] == 8 and metrics[t]["accepted"] == sum(r["correct"] for r in rows)
        assert 0 <= metrics[t]["ci95"][0] <= metrics[t]["accuracy"] <= metrics[t]["ci95"][1] <= 1
        assert metrics[t]["delta_ci95"][0] <= metrics[t]["delta_vs_base"] <= metrics[t]["delta_ci95"][1]
    assert metrics[2]["cumulative_tokens"] == metrics[1]["tokens_generated"] + metrics[2]["tokens_generated"]
    assert any(r["correct"] for r in rollouts[1]) and not all(r["correct"] for r in rollouts[1])

    # A rollout of step 2 was drawn from the weights after optimizer step 1 (= iter_001's checkpoint), not the base.
    task = get_task(str(ones_task))
    questions = {ex.id: ex for ex in task.load(None, split="train")}
    engine = HFEngine(str(warm_model))
    checked = 0
    for row in rollouts[2]:
        messages, _ = rollout_messages(questions[row["question_id"]].question, "number", "none")
        prompt = engine.encode(Request(messages=messages))
        after = _logprob(root / "iter_001" / "checkpoint", prompt, row["token_ids"])
        before = _logprob(warm_model, prompt, row["token_ids"])
        assert row["logprob_sum"] == pytest.approx(after, abs=2e-3)
        assert abs(row["logprob_sum"] - before) > 1e-2, "the step-2 rollout matches the base model's weights"
        checked += 1
    assert checked == 8
    for row in rollouts[1]:  # and step 1's rollouts came from the base model
        messages, _ = rollout_messages(questions[row["question_id"]].question, "number", "none")
        prompt = engine.encode(Request(messages=messages))
        assert row["logprob_sum"] == pytest.approx(_logprob(warm_model, prompt, row["token_ids"]), abs=2e-3)

    # prompt tokens: each question's prompt, prefilled once for its G rollouts, is counted once; a study reports them
    for rows in rollouts.values():
        for q in {r["question_id"] for r in rows}:
            messages, _ = rollout_messages(questions[q].question, "number", "none")
            counted = [r["tokens_in"] for r in rows if r["question_id"] == q]
            assert sorted(counted) == [0, 0, 0, len(engine.encode(Request(messages=messages)))]
    from forethought.study.results import run_points

    points = run_points(root)
    assert [p["prompt_tokens"] for p in points] == [
        0, sum(r["tokens_in"] for r in rollouts[1]), sum(r["tokens_in"] for t in (1, 2) for r in rollouts[t])]

    row = compare_runs([root])[0]
    assert row["generated_tokens"] == metrics[2]["cumulative_tokens"] and row["sampler"] == "grpo rollouts"
    assert [t for t, _ in row["curve"]] == [0, metrics[1]["cumulative_tokens"], metrics[2]["cumulative_tokens"]]
    # only the last iteration's TRL checkpoint is kept (the next iteration would resume there)
    assert [p.name for p in (root / "grpo_trainer").glob("checkpoint-*")] == ["checkpoint-2"]


@pytest.mark.slow
def test_sigkill_mid_iteration_resumes_from_the_last_checkpoint(tmp_path, warm_model, ones_task):
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    opts = dict(steps_per_iteration=4, save_steps=2)
    ref = write_recipe(tmp_path / "ref.yaml", warm_model, ones_task, tmp_path / "ref", **opts)
    recipe = write_recipe(tmp_path / "k.yaml", warm_model, ones_task, tmp_path / "k", **opts)
    for r in (ref, recipe):
        raw = yaml.safe_load(r.read_text())
        raw["iterations"] = 1
        r.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-m", "forethought.cli", "run"]
    assert subprocess.run([*cmd, str(ref), "--quiet"], env=env, capture_output=True).returncode == 0

    root = tmp_path / "k"
    rollouts = root / "iter_001" / "rollouts.jsonl"

    def after_step_3_rollouts():  # checkpoint-2 saved, step 3's rollouts written, step 4 not done
        return (root / "grpo_trainer" / "checkpoint-2" / "trainer_state.json").is_file() and rollouts.is_file() \
            and any(json.loads(x).get("step") == 3 for x in rollouts.read_text().splitlines() if x.endswith("}"))

    proc = subprocess.Popen([*cmd, str(recipe), "--quiet"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    _kill_when(proc, after_step_3_rollouts, timeout=300)
    assert not (root / "iter_001" / "checkpoint").exists()
    assert "iter_001/train" not in json.loads((root / "manifest.json").read_text())["stages"]
    with open(rollouts, "a") as f:
        f.write('{"step": 3, "half')  # a line cut in half by the kill

    done = subprocess.run([*cmd, str(recipe), "--quiet"], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = json.loads((root / "iter_001" / "train_stats.json").read_text())
    assert stats["resumed_from"] == 2  # from its last checkpoint, not from scratch

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    got, want = read_lines(rollouts), read_lines(tmp_path / "ref" / "iter_001" / "rollouts.jsonl")
    assert [r["step"] for r in got] == [1] * 8 + [2] * 8 + [3] * 8 + [4] * 8
    for a, b in zip(got, want):
        assert (a["question_id"], a["token_ids"], a["reward"]) == (b["question_id"], b["token_ids"], b["reward"])
        assert a["logprob_sum"] == pytest.approx(b["logprob_sum"], abs=1e-3)
    assert strip(read_lines(root / "metrics.jsonl")) == strip(read_lines(tmp_path / "ref" / "metrics.jsonl"))


def test_lora_rollouts_decode_merged_and_leave_the_policy_unmerged(tiny_model_dir):
    """With LoRA the rollout merges the adapter for decoding (one matmul per layer) and unmerges it afterwards: the
    samples are the policy's (their log-probabilities equal the adapter model's), the weights come back as they were,
    and the adapter is merged while the engine decodes."""
    from types import SimpleNamespace

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forethought.engines.hf import HFEngine
    from forethought.learners.common import LoraSettings, lora_config
    from forethought.learners.grpo import GRPOConfig, make_rollout, rollout_messages

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           lora_config(LoraSettings(r=4, alpha=8, dropout=0.0)))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)  # a trained adapter: it changes the policy
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = SimpleNamespace(model=model, processing_class=tokenizer, state=SimpleNamespace(global_step=3),
                              accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    cfg = GRPOConfig(kind="grpo", num_generations=3, max_completion_length=6, lora=LoraSettings(r=4, alpha=8))
    merged_while_decoding = []
    generate = HFEngine.generate

    def spy(self, *args, **kwargs):
        merged_while_decoding.append([m.merged for m in model.modules() if hasattr(m, "merged")])
        return generate(self, *args, **kwargs)

    messages, _ = rollout_messages(ONES_QUESTIONS[0], "number", "none")
    HFEngine.generate = spy
    try:
        out = make_rollout(cfg, seed=0, stop=(), engine_options={"batch_size": 8})([messages] * 3, trainer)
    finally:
        HFEngine.generate = generate
    assert merged_while_decoding and all(all(m) for m in merged_while_decoding)
    assert not any(m.merged for m in model.modules() if hasattr(m, "merged"))
    after = model.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    assert len(out["completion_ids"]) == 3
    model.eval()
    for prompt, completion, logprob in zip(out["prompt_ids"], out["completion_ids"], out["logprob_sum"]):
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():  # the unmerged adapter model: the policy TRL trains
            logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1]
        expected = float(torch.log_softmax(logits, -1).gather(1, torch.tensor(completion)[:, None]).sum())
        assert logprob == pytest.approx(expected, abs=2e-3)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([out["prompt_ids"][0] + out["completion_ids"][0]])
    with torch.no_grad():
        assert not torch.allclose(base(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-3)


def _loss_inputs():
    """A micro-batch of 4 rollouts: rows 0 and 2 of advantage 0, row 0 the longest (so kept rows need fewer
    completion columns), row 1 left-padded in its prompt."""
    import torch

    g = torch.Generator().manual_seed(0)
    prompt_ids = torch.randint(5, 200, (4, 5), generator=g)
    prompt_mask = torch.ones((4, 5), dtype=torch.long)
    prompt_mask[1, :2] = 0
    completion_ids = torch.randint(5, 200, (4, 6), generator=g)
    completion_mask = (torch.arange(6)[None] < torch.tensor([6, 3, 4, 2])[:, None]).long()
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.tensor([0.0, 1.3, 0.0, -0.8]),
            "num_items_in_batch": completion_mask.sum().float(), "old_per_token_logps": None}


def test_rollouts_of_zero_advantage_leave_the_loss_and_gradient_unchanged(tiny_model_dir, tmp_path):
    """With skip_zero_advantage (dapo, beta 0) the rows whose advantage is 0 never reach the model, and the loss and
    every gradient are those of TRL's own loss on the whole micro-batch; with none left, one row keeps a zero
    gradient (as TRL would give) rather than none."""
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forethought.learners.grpo import GRPOConfig, _trainer_class, _trl_args

    cfg = GRPOConfig(kind="grpo", num_generations=2, questions_per_step=2, lora=None, max_completion_length=6)
    trainer = _trainer_class()(
        model=AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
        reward_funcs=[lambda completions, **_: [0.0] * len(completions)],
        args=_trl_args(cfg, tmp_path / "trainer", seed=0, max_steps=1, progress=False, cuda=False, row_tokens=16),
        train_dataset=datasets.Dataset.from_list([{"prompt": "Say 1."}] * 2),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    model = trainer.model
    model.train()
    seen = []
    model.register_forward_pre_hook(lambda _, args, kwargs: seen.append(tuple(kwargs["input_ids"].shape)),
                                    with_kwargs=True)

    def loss_and_grads(skip: bool, **change):
        trainer.skip_zero_advantage = skip
        model.zero_grad(set_to_none=True)
        loss = trainer._compute_loss(model, {**_loss_inputs(), **change})
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full_loss, full = loss_and_grads(False)
    kept_loss, kept = loss_and_grads(True)
    assert seen == [(4, 11), (2, 8)]  # rows 1 and 3 only, completion columns trimmed to their longest (3)
    assert full_loss != 0 and kept_loss == pytest.approx(full_loss, rel=1e-5, abs=1e-7)
    assert full.keys() == kept.keys() and any(g.abs().sum() > 0 for g in full.values())
    for name in full:
        assert torch.allclose(kept[name], full[name], rtol=1e-4, atol=1e-7), name

    zero_loss, zero = loss_and_grads(True, advantages=torch.zeros(4))
    assert seen[-1][0] == 1 and zero_loss == 0
    assert zero.keys() == full.keys() and all(not g.any() for g in zero.values())


def test_skip_zero_advantage_only_where_it_is_exact():
    from forethought.learners.grpo import GRPOConfig, skips_zero_advantage

    assert skips_zero_advantage(GRPOConfig(kind="grpo"))  # dapo, beta 0: on by default
    assert not skips_zero_advantage(GRPOConfig(kind="grpo", loss_type="grpo"))  # per-row mean: the default yields
    assert not skips_zero_advantage(GRPOConfig(kind="grpo", beta=0.04))  # the KL term has a gradient on every row
    assert not skips_zero_advantage(GRPOConfig(kind="grpo", skip_zero_advantage=False))
    for change in ({"loss_type": "grpo"}, {"loss_type": "dr_grpo"}, {"beta": 0.04}):
        with pytest.raises(ValueError, match="learner.skip_zero_advantage"):
            GRPOConfig(kind="grpo", skip_zero_advantage=True, **change)


def test_rollouts_honour_the_engine_settings(tiny_model_dir):
    """engine.prefill_tokens, shared_kv and continuous reach the rollout engine as they reach the evaluation's."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forethought.engines.hf import HFEngine
    from forethought.learners.grpo import GRPOConfig, make_rollout, rollout_messages

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    trainer = SimpleNamespace(model=model, processing_class=AutoTokenizer.from_pretrained(tiny_model_dir),
                              state=SimpleNamespace(global_step=0), accelerator=SimpleNamespace(unwrap_model=lambda m: m))
    seen = []
    generate = HFEngine.generate

    def spy(self, *args, **kwargs):
        packed = any("_packed_weight" in vars(m) for m in self.model.modules())
        seen.append((self.prefill_tokens, self.shared_kv, self.continuous, packed))
        return generate(self, *args, **kwargs)

    options = {"batch_size": 4, "prefill_tokens": 77, "shared_kv": False, "continuous": True, "packed_weights": True}
    HFEngine.generate = spy
    try:
        make_rollout(GRPOConfig(kind="grpo", num_generations=2, max_completion_length=4, lora=None), seed=0, stop=(),
                     engine_options=options)([rollout_messages(ONES_QUESTIONS[0], "number", "none")[0]] * 2, trainer)
    finally:
        HFEngine.generate = generate
    assert seen == [(77, False, True, True)]
    assert not any("_packed_weight" in vars(m) for m in model.modules())  # unpacked before the weights change


def test_a_grpo_run_hands_its_recipes_engine_settings_to_the_rollouts(tmp_path, tiny_model_dir, ones_task,
                                                                      monkeypatch):
    import forethought.runs.loop as loop

    recipe = yaml.safe_load(write_recipe(tmp_path / "r.yaml", tiny_model_dir, ones_task, tmp_path / "run").read_text())
    recipe["engine"] = {"batch_size": 16, "prefill_tokens": 77, "shared_kv": False, "continuous": True,
                        "packed_weights": True}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    seen = []
    monkeypatch.setattr(loop, "train_grpo_iteration", lambda *a, **k: seen.append(k["engine_options"]) or {})
    loop.Runner(load_config(RunConfig, tmp_path / "r.yaml", []), progress=False).train_grpo(1)
    assert seen == [{"batch_size": 16, "prefill_tokens": 77, "shared_kv": False, "continuous": True,
                     "packed_weights": True}]


def test_cpu_grpo_training_scores_log_probs_in_narrow_tiles(tiny_model_dir, ones_task, tmp_path, monkeypatch):
    """On CPU, TRL's fused LM head scores at most CPU_LOGPROB_TILE tokens per tile while GRPO trains (its default,
    4,096 tokens, held several [tokens, vocabulary] fp32 temporaries: see BENCHMARKS.md, Memory)."""
    from trl.kernels import chunked_logprob

    import forethought.learners.grpo as grpo
    from forethought.learners.common import CPU_LOGPROB_TILE

    monkeypatch.setattr(chunked_logprob, "TOKEN_CHUNK_SIZE", 4096)
    seen = []

    class Stop(Exception):
        pass

    class Recording:
        def __init__(self, **kwargs):
            seen.append(chunked_logprob.TOKEN_CHUNK_SIZE)
            raise Stop

    monkeypatch.setattr(grpo, "_trainer_class", lambda: Recording)
    task = get_task(str(ones_task))
    with pytest.raises(Stop):
        grpo.train_grpo_iteration(tiny_model_dir, task, task.load(None, split="train")[:2],
                                  grpo.GRPOConfig(kind="grpo", num_generations=2, questions_per_step=2, grad_accum=1,
                                                  max_completion_length=4, lora=None),
                                  iteration=1, iterations=1, trainer_dir=tmp_path / "t", output_dir=tmp_path / "o",
                                  rollouts_path=tmp_path / "r.jsonl", seed=0, engine_options={"batch_size": 4})
    assert seen == [CPU_LOGPROB_TILE]


def test_cpu_micro_batches_bound_the_tokens_and_train_the_same_step(warm_model, ones_task, tmp_path, monkeypatch):
    """On CPU a step's completions are trained in micro-batches of at most CPU_TRAIN_TOKENS tokens (a forward keeps
    every layer's activations: 8 completions of 160 tokens held 2.7 GB); the step's weights are those of the
    configured split (bnpo, normalised per micro-batch, keeps its split)."""
    import torch
    from safetensors.torch import load_file

    import forethought.learners.grpo as grpo

    cfg = grpo.GRPOConfig(kind="grpo", num_generations=4, questions_per_step=4, grad_accum=2, temperature=1.0,
                          max_completion_length=8, lora=None, learning_rate=1e-3, steps_per_iteration=1)
    assert grpo.cpu_micro_batch(cfg, row_tokens=100) == (4, 4)  # 5 rows of 100 fit in 512; 4 divide the 8
    assert grpo.cpu_micro_batch(cfg, row_tokens=600) == (1, 16)
    assert grpo.cpu_micro_batch(cfg, row_tokens=10) == (8, 2)  # never coarser than configured
    assert grpo.cpu_micro_batch(cfg.model_copy(update={"loss_type": "bnpo"}), row_tokens=600) == (8, 2)

    task = get_task(str(ones_task))
    questions = task.load(None, split="train")[:4]
    seen = []
    original = grpo._trl_args

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        seen.append((out.per_device_train_batch_size, out.gradient_accumulation_steps))
        return out

    monkeypatch.setattr(grpo, "_trl_args", spy)

    def train(name: str, tokens: int) -> dict:
        monkeypatch.setattr(grpo, "CPU_TRAIN_TOKENS", tokens)
        grpo.train_grpo_iteration(warm_model, task, questions, cfg, iteration=1, iterations=1,
                                  trainer_dir=tmp_path / name / "trainer", output_dir=tmp_path / name / "model",
                                  rollouts_path=tmp_path / name / "rollouts.jsonl", seed=0,
                                  engine_options={"batch_size": 16}, progress=False)
        return load_file(tmp_path / name / "model" / "model.safetensors")

    whole, split = train("whole", 10**6), train("split", 1)
    assert seen == [(8, 2), (1, 16)]
    assert (tmp_path / "whole" / "rollouts.jsonl").read_text() == (tmp_path / "split" / "rollouts.jsonl").read_text()
    base = load_file(Path(warm_model) / "model.safetensors")
    moved = max((whole[k] - base[k]).abs().max().item() for k in base)
    assert moved > 1e-4, "the step should change the weights"
    for k in base:  # the same step up to summation order (1% of it: AVX2 and AVX-512 kernels round differently)
        torch.testing.assert_close(split[k], whole[k], rtol=0, atol=moved * 1e-2)
