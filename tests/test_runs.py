"""Self-training runs end to end on a tiny model: two iterations, resume after SIGKILL, config checks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from forethought.errors import UserError
from forethought.runs import run_recipe
from forethought.runs.config import RunLearner
from conftest import warm_tiny_model

@pytest.fixture(scope="module")
def warm_model(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny random model after 12 full fine-tuning steps toward 'The answer is 1.'."""
    return warm_tiny_model(tiny_model_dir, tmp_path_factory.mktemp("warm") / "model", max_steps=12)


def write_recipe(path: Path, model: Path, task: Path, output: Path, **extra) -> Path:
    recipe = {
        "method": "rest",
        "model": str(model),
        "task": {"name": str(task), "train_limit": 12, "eval_limit": 6},
        "engine": {"batch_size": 8},
        "sampler": {"kind": "rejection", "trials": 4, "max_accepted": 2, "temperature": 1.0,
                    "max_new_tokens": 16, "chunk_size": 2},
        "learner": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3},
        "eval": {"max_new_tokens": 12},
        "iterations": 2,
        "output": str(output),
    }
    for key, value in extra.items():
        recipe[key] = value
    path.write_text(yaml.safe_dump(recipe))
    return path


def strip_seconds(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_two_iterations_end_to_end(tmp_path, warm_model, ones_task):
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run")
    root = run_recipe(recipe, progress=False)

    metrics = read_lines(root / "metrics.jsonl")
    assert [m["iteration"] for m in metrics] == [0, 1, 2]
    for m in metrics:
        assert {"iteration", "accuracy", "ci95", "acceptance_rate", "tokens_generated", "seconds"} <= set(m)
        assert 0.0 <= m["ci95"][0] <= m["accuracy"] <= m["ci95"][1] <= 1.0
    assert metrics[0]["acceptance_rate"] is None and metrics[0]["tokens_generated"] == 0
    for m in metrics[1:]:  # paired change against the untrained model on the same questions
        assert m["delta_vs_base"] == pytest.approx(m["accuracy"] - metrics[0]["accuracy"])
        assert m["delta_ci95"][0] <= m["delta_vs_base"] <= m["delta_ci95"][1]

    samples = read_lines(root / "iter_001" / "samples.jsonl")
    ids = [s["id"] for s in samples]
    assert len(ids) == len(set(ids))
    accepted = [s for s in samples if s["accepted"]]
    assert accepted, "the warmed-up model should get some answers right"
    per_q = {}
    for s in samples:
        per_q.setdefault(s["question_id"], []).append(s)
    assert len(per_q) == 12 and all(len(v) <= 4 for v in per_q.values())
    assert all(sum(s["accepted"] for s in v) <= 2 for v in per_q.values())
    assert metrics[1]["trials"] == len(samples) and metrics[1]["accepted"] == len(accepted)
    assert metrics[1]["tokens_generated"] == sum(s["tokens_out"] for s in samples)
    assert metrics[2]["cumulative_tokens"] == metrics[1]["tokens_generated"] + metrics[2]["tokens_generated"]

    train = read_lines(root / "iter_001" / "train.jsonl")
    assert len(train) == len(accepted)
    assert train[0]["messages"][-1]["role"] == "assistant"
    assert (root / "iter_001" / "checkpoint" / "model.safetensors").exists()
    manifest = json.loads((root / "manifest.json").read_text())
    assert all(v in ("done", "skipped") for v in manifest["stages"].values())
    assert len(manifest["stages"]) == 7
    assert yaml.safe_load((root / "config.yaml").read_text())["sampler"]["trials"] == 4

    # running the finished run again does nothing and changes nothing
    before = (root / "metrics.jsonl").read_text(), (root / "iter_002" / "samples.jsonl").read_text()
    run_recipe(recipe, progress=False)
    assert ((root / "metrics.jsonl").read_text(), (root / "iter_002" / "samples.jsonl").read_text()) == before


def test_changed_config_is_refused_and_nothing_is_lost(tmp_path, warm_model, ones_task):
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iterations=0)
    root = run_recipe(recipe, progress=False)
    before = (root / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=r"different config \(differs in: sampler\.trials\)"):
        run_recipe(recipe, ["sampler.trials=3"], progress=False)
    assert (root / "metrics.jsonl").read_text() == before


def test_star_step_schedule():
    cfg = RunLearner(star_base_steps=40)
    assert [cfg.steps(i) for i in range(1, 6)] == [40, 48, 58, 69, 83]
    assert RunLearner(max_steps=7).steps(3) == 7
    assert RunLearner().steps(1) is None
    with pytest.raises(ValueError):
        cfg.steps(0)


def test_more_iterations_resume_a_finished_run(tmp_path, warm_model, ones_task):
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iterations=0)
    root = run_recipe(recipe, progress=False)
    base_eval = (root / "iter_000" / "eval" / "records.jsonl").read_text()
    run_recipe(recipe, ["iterations=1"], progress=False)
    assert (root / "iter_000" / "eval" / "records.jsonl").read_text() == base_eval  # not redone
    assert [m["iteration"] for m in read_lines(root / "metrics.jsonl")] == [0, 1]
    with pytest.raises(UserError, match="differs in: iterations"):
        run_recipe(recipe, ["iterations=0"], progress=False)


def test_a_lost_checkpoint_trains_again_only_when_a_stage_left_needs_it(tmp_path, warm_model, ones_task, capsys):
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iterations=1)
    root = run_recipe(recipe, progress=False)
    checkpoint, manifest = root / "iter_001" / "checkpoint", root / "manifest.json"
    finished = (root / "metrics.jsonl").read_text()
    shutil.rmtree(checkpoint)  # a finished run without its weights: nothing to redo
    run_recipe(recipe, progress=False)
    assert not checkpoint.exists() and (root / "metrics.jsonl").read_text() == finished
    assert "runs again" not in capsys.readouterr().err
    state = json.loads(manifest.read_text())  # as if copied to another machine before its evaluation ended
    state["stages"]["iter_001/eval"] = "pending"
    manifest.write_text(json.dumps(state))
    run_recipe(recipe, progress=False)
    assert checkpoint.is_dir() and "stage iter_001/train runs again" in capsys.readouterr().err
    state = json.loads(manifest.read_text())
    assert state["stages"]["iter_001/train"] == "done" and state["stages"]["iter_001/eval"] == "done"


def test_unknown_recipe_key_is_a_clear_error(tmp_path, warm_model, ones_task):
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iteratons=2)
    with pytest.raises(UserError, match="unknown key 'iteratons'"):
        run_recipe(recipe, progress=False)
    assert not (tmp_path / "run").exists()


def _run_cli(recipe: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "forethought.cli", "run", str(recipe), "--quiet"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"run finished before the kill point: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("kill point never reached")


@pytest.mark.slow
def test_sigkill_during_sampling_and_training_then_resume_matches(tmp_path, warm_model, ones_task):
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    # sampling slowed down to one question per engine call so a kill lands in the middle of it
    common = dict(iterations=1)
    reference = write_recipe(tmp_path / "ref.yaml", warm_model, ones_task, tmp_path / "ref", **common)
    run_recipe(reference, progress=False)

    killed = write_recipe(tmp_path / "k.yaml", warm_model, ones_task, tmp_path / "k", **common)
    raw = yaml.safe_load(killed.read_text())
    raw["sampler"]["chunk_size"] = 1
    (tmp_path / "ref2.yaml").write_text(yaml.safe_dump({**raw, "output": str(tmp_path / "ref2")}))
    killed.write_text(yaml.safe_dump(raw))
    run_recipe(tmp_path / "ref2.yaml", progress=False)  # same recipe, uninterrupted

    root = tmp_path / "k"
    samples = root / "iter_001" / "samples.jsonl"

    def mid_sampling():
        return samples.exists() and samples.read_text().count("\n") >= 3

    _kill_when(_run_cli(killed, env), mid_sampling)
    manifest = json.loads((root / "manifest.json").read_text())
    assert "iter_001/sample" not in manifest["stages"], "the kill should land during sampling"
    with open(samples, "a") as f:  # a line cut in half by the kill
        f.write('{"id": "half')

    def mid_training():
        return any(root.glob("iter_001/.checkpoint.partial-*"))

    _kill_when(_run_cli(killed, env), mid_training)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stages"].get("iter_001/sample") == "done"
    assert "iter_001/train" not in manifest["stages"], "the kill should land during training"

    proc = _run_cli(killed, env)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]

    ref = tmp_path / "ref2"
    got = strip_seconds(read_lines(samples))
    want = strip_seconds(read_lines(ref / "iter_001" / "samples.jsonl"))
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in want)
    assert sorted(got, key=lambda r: r["id"]) == sorted(want, key=lambda r: r["id"])
    assert strip_seconds(read_lines(root / "metrics.jsonl")) == strip_seconds(read_lines(ref / "metrics.jsonl"))
    assert not any(root.glob("iter_001/.checkpoint.partial-*"))
    # chunking changes nothing in what is sampled
    assert sorted(strip_seconds(read_lines(tmp_path / "ref" / "iter_001" / "samples.jsonl")),
                  key=lambda r: r["id"]) == sorted(want, key=lambda r: r["id"])


def test_a_run_evaluation_resumes_from_its_finished_chunks(tmp_path, warm_model, ones_task, monkeypatch):
    """The run loop evaluates through a chunks file in the iteration's eval folder: a kill after the first chunk
    (engine batch 2: 3 chunks) leaves it, the rerun generates only the other chunks, and the records equal an
    uninterrupted run's; the file is gone once the evaluation is written."""
    from forethought import evaluate as evaluate_module

    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iterations=0,
                          engine={"batch_size": 2})
    answered, real = [], evaluate_module._ANSWER["none"]

    def dies_after_one_chunk(engine, task, examples, s):
        if answered:
            raise KeyboardInterrupt
        answered.append(len(examples))
        return real(engine, task, examples, s)

    monkeypatch.setitem(evaluate_module._ANSWER, "none", dies_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        run_recipe(recipe, progress=False)
    partial = tmp_path / "run" / "iter_000" / "eval" / "answers.partial.jsonl"
    assert [len(r["ids"]) for r in read_lines(partial)] == [2]

    def counts(engine, task, examples, s):
        answered.append(len(examples))
        return real(engine, task, examples, s)

    monkeypatch.setitem(evaluate_module._ANSWER, "none", counts)
    run_recipe(recipe, progress=False)
    assert answered == [2, 2, 2] and not partial.exists()
    run_recipe(write_recipe(tmp_path / "w.yaml", warm_model, ones_task, tmp_path / "whole", iterations=0,
                            engine={"batch_size": 2}), progress=False)
    got, want = (read_lines(tmp_path / d / "iter_000" / "eval" / "records.jsonl") for d in ("run", "whole"))
    assert got == want
