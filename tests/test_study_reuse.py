"""A study evaluates the untrained model once per set of identical evaluation inputs: later arms (and seeds, when
the evaluation is greedy) get a copy of the first one's iteration-0 evaluation, which the run loop then treats as
its own (metrics line, paired deltas); arms whose plan format, eval settings, engine or (sampled) seed differ
evaluate themselves; a study killed around a copy resumes to the same results. Scripted engines, no training."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from forethought.config import set_dotted
from forethought.runs.config import RunConfig
from forethought.study import Study, load_study
from forethought.study.reuse import EVAL_STAGE, eval_key
from forethought.tasks import get_task
from test_study import AnswerEngine, write_study

ARMS = [
    {"name": "none", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0}},
    {"name": "grpo", "recipe": "quickstart_grpo", "overrides": {"iterations": 0}},  # same inputs, another recipe
    {"name": "lepa", "recipe": "quickstart", "overrides": {"iterations": 0, "sampler.demos": 0}},  # natural plans
    {"name": "lepa_code", "recipe": "quickstart",  # code plans, otherwise as lepa
     "overrides": {"iterations": 0, "sampler.demos": 0, "sampler.plan_format": "code"}},
    {"name": "longer", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0, "eval.max_new_tokens": 64}},
    {"name": "sampled", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0, "eval.temperature": 0.7}},
]
# (arm, seed) that evaluate themselves with seeds [0, 1]: the first of each set of inputs; the sampled arm's seeds
# differ (its requests are seeded), the greedy arms' seed 1 reuses seed 0
EVALUATED = [("none", 0), ("lepa", 0), ("lepa_code", 0), ("longer", 0), ("sampled", 0), ("sampled", 1)]
REUSED = {("none", 1): "none/seed_0", ("grpo", 0): "none/seed_0", ("grpo", 1): "none/seed_0",
          ("lepa", 1): "lepa/seed_0", ("lepa_code", 1): "lepa_code/seed_0", ("longer", 1): "longer/seed_0"}
SLOW = 1.0  # seconds per engine call: an evaluation's time shows in its arm's seconds, a copy's does not


class SlowAnswerEngine(AnswerEngine):
    def generate(self, requests, *, progress=True):
        time.sleep(SLOW)
        return super().generate(requests, progress=progress)


@pytest.fixture
def study_runner(tmp_path, tiny_model_dir, monkeypatch):
    """run(output, arms, reuse=True, fail=None) -> (study.json, evaluations run: [(arm, seed)])."""
    task = get_task("synthetic/arithmetic", train_size=16, test_size=8)
    golds = {e.question: e.gold for split in ("train", "test") for e in task.load(split=split)}
    import forethought.runs.loop as loop

    original = loop.evaluate

    def run(output: Path, arms=ARMS, seeds=(0, 1), reuse=True, fail=None):
        evaluated: list = []

        def counting(engine, task, examples, **kw):
            evaluated.append(current[0])
            if fail == ("evaluate", *current[0]):
                raise RuntimeError("killed")
            return original(engine, task, examples, **kw)

        monkeypatch.setattr(loop, "evaluate", counting)
        monkeypatch.setattr("forethought.runs.stages.get_engine", lambda kind, model, **o: SlowAnswerEngine(golds))
        path = write_study(tmp_path / f"{output.name}.yaml", output, budget=100, seeds=list(seeds),
                           model=str(tiny_model_dir), arms=arms)
        cfg, source = load_study(path)
        study = Study(cfg, source, progress=False)
        current = [None]
        run_arm = study.run_arm

        def tracked(name, seed):
            current[0] = (name, seed)
            run_arm(name, seed)

        monkeypatch.setattr(study, "run_arm", tracked)
        if not reuse:
            monkeypatch.setattr(study, "reusable_eval", lambda name, seed: None)
        return study.run(), evaluated

    return run


def _arm(root: Path, name: str, seed: int) -> Path:
    return root / "arms" / name / f"seed_{seed}"


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def _no_seconds(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("seconds", "tokens_per_second")}


def test_identical_iteration0_evaluations_run_once_and_copies_read_as_their_own(tmp_path, study_runner):
    study, evaluated = study_runner(tmp_path / "reused")
    assert sorted(evaluated) == sorted(EVALUATED)
    reference, evaluated_all = study_runner(tmp_path / "all", reuse=False)  # every arm evaluates itself
    assert len(evaluated_all) == len(ARMS) * 2
    root, ref = tmp_path / "reused", tmp_path / "all"
    for arm in ARMS:
        for seed in (0, 1):
            d, r = _arm(root, arm["name"], seed), _arm(ref, arm["name"], seed)
            # the same records, summary and metrics line as evaluating itself gives (times aside; a copy's
            # summary is the evaluation that ran, so it names the seed that ran it)
            assert (d / "iter_000/eval/records.jsonl").read_text() == (r / "iter_000/eval/records.jsonl").read_text()
            summary, own = (json.loads((x / "iter_000/eval/summary.json").read_text()) for x in (d, r))
            assert _no_seconds({**summary, "seed": 0}) == _no_seconds({**own, "seed": 0})
            metrics, own_metrics = _lines(d / "metrics.jsonl"), _lines(r / "metrics.jsonl")
            assert [_no_seconds(m) for m in metrics] == [_no_seconds(m) for m in own_metrics]
            assert ("reward_mean" in metrics[0]) == (arm["name"] == "grpo")  # the arm's own loop wrote it
            manifest = json.loads((d / "manifest.json").read_text())
            assert manifest["stages"] == {EVAL_STAGE: "done"}
            entry = study["arms"][arm["name"]]["seeds"][str(seed)]
            source = REUSED.get((arm["name"], seed))
            if source is None:
                assert "reused" not in manifest and "reused" not in entry
                assert metrics[0]["seconds"] >= SLOW and entry["seconds"] >= SLOW
                continue
            origin = json.loads((root / "arms" / source / "manifest.json").read_text())
            reused = manifest["reused"][EVAL_STAGE]
            assert reused["from"] == f"arms/{source}" and reused["seconds"] == origin["seconds"][EVAL_STAGE] >= SLOW
            assert entry["reused"] == manifest["reused"]
            # seconds are what the arm spent: the copy, not the evaluation again
            assert metrics[0]["seconds"] < SLOW and entry["seconds"] < SLOW
    # the table and pooled results are those of evaluating every arm
    strip = lambda a: {k: v for k, v in a["final"].items() if k != "seconds"}  # noqa: E731
    assert {n: strip(a) for n, a in study["arms"].items()} == {n: strip(a) for n, a in reference["arms"].items()}


def _cfg(**over) -> RunConfig:
    data = {"method": "rest_em", "model": "m", "task": {"name": "synthetic/arithmetic", "eval_limit": 8},
            "engine": {"kind": "hf", "batch_size": 64}, "sampler": {"plan_format": "none"},
            "eval": {"temperature": 0.0, "max_new_tokens": 96}, "iterations": 1, "seed": 0, "output": "out"}
    for key, value in over.items():
        if value is None:
            data.pop(key)
        else:
            set_dotted(data, key.replace("__", "."), value, key)
    return RunConfig.model_validate(data)


@pytest.mark.parametrize("over", [
    {"model": "other"}, {"task__eval_limit": 9}, {"task__eval_split": "train"}, {"task__data": "d"},
    {"task__options": {"difficulty": 2}}, {"task__name": "synthetic/letters"}, {"eval__max_new_tokens": 64},
    {"eval__temperature": 0.5}, {"eval__top_p": 0.9}, {"eval__n": 4}, {"eval__fewshot": True},
    {"sampler__plan_format": "natural"}, {"sampler__plan_format": "code"}, {"engine__batch_size": 8},
    {"engine__dtype": "bfloat16"}, {"engine__prefill_tokens": 512}, {"engine__shared_kv": False},
    {"engine__continuous": True}, {"engine__device": "cuda"},
    {"method": "grpo", "learner": {"kind": "grpo", "plan_format": "code"}, "sampler": None},
])
def test_the_key_changes_with_every_input_that_changes_outputs(over):
    assert eval_key(_cfg(**over)) != eval_key(_cfg())


@pytest.mark.parametrize("over", [
    {"seed": 3}, {"iterations": 0}, {"method": "star"}, {"sampler__trials": 7}, {"learner__learning_rate": 0.1},
    {"eval__plan_max_new_tokens": 7},  # unused without a plan
    {"output": "elsewhere"}, {"report_to": ["tensorboard"]},
    {"method": "grpo", "learner": {"kind": "grpo", "plan_format": "none"}, "sampler": None},
])
def test_the_key_ignores_what_does_not_change_iteration0(over):
    assert eval_key(_cfg(**over)) == eval_key(_cfg())


def test_the_seed_and_plan_budget_count_where_they_change_outputs():
    for sampled in ({"eval__temperature": 0.7}, {"eval__n": 3}):
        assert eval_key(_cfg(seed=1, **sampled)) != eval_key(_cfg(**sampled))
    natural = {"sampler__plan_format": "natural"}
    assert eval_key(_cfg(eval__plan_max_new_tokens=7, **natural)) != eval_key(_cfg(**natural))
    assert eval_key(_cfg(sampler__plan_format="code")) != eval_key(_cfg(**natural))
    served = {"engine": {"kind": "openai", "base_urls": ["http://x"]}}
    assert eval_key(_cfg(**served)) != eval_key(_cfg())
    assert eval_key(_cfg(engine={**served["engine"], "timeout": 5.0, "max_retries": 0})) == eval_key(_cfg(**served))
    assert eval_key(_cfg(engine={**served["engine"], "base_urls": ["http://y"]})) != eval_key(_cfg(**served))


THREE = ARMS[:3]  # none and grpo share iteration 0; lepa evaluates itself


@pytest.mark.parametrize("kill", ["copy", "record", "next_arm"])
def test_a_study_killed_around_a_copy_resumes_to_the_same_results(tmp_path, study_runner, monkeypatch, kill):
    reference, _ = study_runner(tmp_path / "ref", arms=THREE, seeds=(0,))
    out = tmp_path / "killed"
    import shutil

    import forethought.runs.loop as loop
    import forethought.study.reuse as reuse

    copytree, record = shutil.copytree, loop.Runner.record_iteration
    if kill == "copy":  # half a copy on disk
        def broken(src, dst, **kw):
            if ".partial-reuse" not in str(dst):
                return copytree(src, dst, **kw)
            Path(dst).mkdir(parents=True)
            shutil.copy(Path(src) / "records.jsonl", Path(dst) / "records.jsonl")
            raise RuntimeError("killed")
        monkeypatch.setattr(reuse.shutil, "copytree", broken)
    elif kill == "record":  # the copy in place, the manifest not yet marked
        def broken(self, t, result, eval_seconds=None):
            if eval_seconds is not None:  # the copy's, not an evaluation of its own
                raise RuntimeError("killed")
            return record(self, t, result, eval_seconds)
        monkeypatch.setattr(loop.Runner, "record_iteration", broken)
    with pytest.raises(RuntimeError, match="killed"):
        study_runner(out, arms=THREE, seeds=(0,), fail=("evaluate", "lepa", 0) if kill == "next_arm" else None)
    grpo = _arm(out, "grpo", 0)
    stages = json.loads((out / "manifest.json").read_text())["stages"]
    assert stages.get("arms/none/seed_0") == "done" and "arms/lepa/seed_0" not in stages
    assert (json.loads((grpo / "manifest.json").read_text())["stages"].get(EVAL_STAGE) == "done") == (
        kill == "next_arm")
    monkeypatch.setattr(reuse.shutil, "copytree", copytree)
    monkeypatch.setattr(loop.Runner, "record_iteration", record)
    none_manifest = (_arm(out, "none", 0) / "manifest.json").read_text()

    resumed, evaluated = study_runner(out, arms=THREE, seeds=(0,))
    assert evaluated == [("lepa", 0)]  # the copy is redone or kept; only lepa evaluates
    assert (_arm(out, "none", 0) / "manifest.json").read_text() == none_manifest
    assert not list(grpo.rglob(".*partial*"))
    manifest = json.loads((grpo / "manifest.json").read_text())
    assert manifest["stages"] == {EVAL_STAGE: "done"} and manifest["reused"][EVAL_STAGE]["from"] == "arms/none/seed_0"

    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in ("seconds", "source", "output", "table_markdown")}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x.replace(str(tmp_path / "ref"), "").replace(str(out), "") if isinstance(x, str) else x

    assert strip(resumed) == strip(reference)
    assert (grpo / "iter_000/eval/records.jsonl").read_text() == \
        (_arm(tmp_path / "ref", "grpo", 0) / "iter_000/eval/records.jsonl").read_text()
