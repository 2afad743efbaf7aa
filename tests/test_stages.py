"""The one stage runner: config snapshot and its check on resume, manifest, atomic outputs, engine lifecycle; and
every pipeline (`run`, `search`, `cpl`, `codeplan`) going through it."""

from __future__ import annotations

import json
import signal
import time
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from forethought.config import StrictModel, load_config
from forethought.engines.base import Completion, Sample
from forethought.engines.settings import EngineSettings
from forethought.errors import UserError
from forethought.runs import stages as stages_module
from forethought.runs.stages import StageRunner, changed_keys


class Inner(StrictModel):
    c_puct: float = 1.5
    names: list[str] = ["a"]


class Toy(StrictModel):
    search: Inner = Inner()
    rounds: int = 1
    output: str


class FakeEngine:
    """Records which models were opened and closed, in order."""

    def __init__(self, log: list, model: str):
        self.log, self.model = log, model
        log.append(("open", model))

    def close(self):
        self.log.append(("close", self.model))


@pytest.fixture
def engine_log(monkeypatch):
    log: list = []
    monkeypatch.setattr(stages_module, "get_engine", lambda kind, model, **o: FakeEngine(log, model))
    return log


def test_changed_keys_are_dotted_and_growable_counts_may_only_grow():
    old = {"search": {"c_puct": 1.5, "iterations": 8}, "rounds": 1, "output": "a"}
    assert changed_keys(old, {**old, "search": {"c_puct": 2.0, "iterations": 8}}) == ["search.c_puct"]
    assert changed_keys(old, {**old, "output": "b"}) == []  # where the run lives is not part of what it did
    assert changed_keys(old, {**old, "rounds": 2}, growable=("rounds",)) == []
    assert changed_keys(old, {**old, "rounds": 0}, growable=("rounds",)) == ["rounds"]
    assert changed_keys(old, {**old, "rounds": 2}) == ["rounds"]
    assert changed_keys(old, {**old, "extra": {"x": 1}}) == ["extra.x"]


def test_config_snapshot_refuses_a_changed_recipe_and_allows_growth(tmp_path):
    root = tmp_path / "run"
    StageRunner(root, Toy(output=str(root)), growable=("rounds",))
    snapshot = (root / "config.yaml").read_text()
    assert yaml.safe_load(snapshot)["search"]["c_puct"] == 1.5
    with pytest.raises(UserError, match=r"differs in: search\.c_puct"):
        StageRunner(root, Toy(search=Inner(c_puct=2.0), output=str(root)), growable=("rounds",))
    with pytest.raises(UserError, match=r"differs in: search\.names"):
        StageRunner(root, Toy(search=Inner(names=["a", "b"]), output=str(root)), growable=("rounds",))
    assert (root / "config.yaml").read_text() == snapshot  # a refused resume changes nothing
    StageRunner(root, Toy(rounds=2, output=str(root)), growable=("rounds",))  # more rounds: allowed
    assert yaml.safe_load((root / "config.yaml").read_text())["rounds"] == 2
    with pytest.raises(UserError, match="differs in: rounds"):  # and then fewer is a change
        StageRunner(root, Toy(rounds=1, output=str(root)), growable=("rounds",))


def test_a_setting_added_since_the_snapshot_is_no_change_at_its_default(tmp_path):
    root = tmp_path / "run"
    StageRunner(root, Toy(output=str(root)))
    snapshot = yaml.safe_load((root / "config.yaml").read_text())
    del snapshot["search"]["c_puct"]  # as written by a version that did not have the setting
    (root / "config.yaml").write_text(yaml.safe_dump(snapshot))
    StageRunner(root, Toy(output=str(root)))  # at its default: resumes
    with pytest.raises(UserError, match=r"differs in: search\.c_puct"):
        StageRunner(root, Toy(search=Inner(c_puct=2.0), output=str(root)))


def test_a_folder_that_is_not_a_run_directory_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="holds no config.yaml"):
        StageRunner(tmp_path, Toy(output=str(tmp_path)))
    assert (tmp_path / "notes.txt").read_text() == "mine" and not (tmp_path / "config.yaml").exists()


def test_stages_run_once_record_seconds_and_statuses(tmp_path):
    runner = StageRunner(tmp_path / "run", Toy(output="x"))
    calls = []
    assert runner.stage("a", lambda: calls.append("a"))
    assert runner.stage("b", lambda: "skipped")
    assert not runner.stage("a", lambda: calls.append("again"))
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"] == {"a": "done", "b": "skipped"} and set(manifest["seconds"]) == {"a", "b"}
    assert manifest["machine"] == {"a": stages_module.machine(), "b": stages_module.machine()}
    assert "CPUs" in stages_module.machine()
    assert calls == ["a"]
    again = StageRunner(tmp_path / "run", Toy(output="x"))  # a resumed run reads the manifest back
    assert again.done("a") and again.done("b") and not again.done("c")


def test_a_failed_stage_is_not_marked_and_runs_again(tmp_path):
    runner = StageRunner(tmp_path / "run", Toy(output="x"))

    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        runner.stage("a", boom)
    assert not runner.done("a") and "a" in runner.seconds
    assert runner.stage("a", lambda: None) and runner.done("a")


def test_an_output_renamed_into_place_marks_its_stage_and_partials_are_removed(tmp_path):
    runner = StageRunner(tmp_path / "run", Toy(output="x"))
    out = tmp_path / "run" / "r1" / "sft" / "checkpoint"
    stale = out.parent / ".checkpoint.partial-abc"
    stale.mkdir(parents=True)
    ran = []
    runner.stage("r1/sft", lambda: (ran.append(1), out.mkdir())[0], output=out)
    assert ran == [1] and not stale.exists()
    runner.mark("r1/sft", "pending")  # as if killed after the rename, before the manifest was written
    assert not runner.stage("r1/sft", lambda: ran.append(2), output=out)
    assert ran == [1] and runner.done("r1/sft")


def test_the_engine_is_reused_per_model_and_closed_before_training(tmp_path, engine_log):
    runner = StageRunner(tmp_path / "run", Toy(output="x"), engine_settings=EngineSettings())
    with runner:
        runner.stage("sample", lambda: runner.engine("base"))
        runner.stage("eval", lambda: runner.engine("base"))
        runner.stage("train", lambda: engine_log.append(("train",)), trains=True)
        runner.stage("eval2", lambda: runner.engine("trained"))
    assert engine_log == [("open", "base"), ("close", "base"), ("train",), ("open", "trained"),
                          ("close", "trained")]


# ---------------------------------------------------------------- the pipelines use it


def _cpl_recipe(tmp_path: Path, model: Path, **extra) -> Path:
    recipe = {
        "model": str(model), "task": {"name": "synthetic/arithmetic", "options": {"difficulty": 1},
                                      "train_limit": 2, "eval_limit": 2},
        "engine": {"batch_size": 8},
        "search": {"iterations": 1, "root_children": 2, "children": 2, "max_new_tokens": 8},
        "rounds": 1, "output": str(tmp_path / "run"), **extra,
    }
    path = tmp_path / "cpl.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "forethought.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def test_search_and_cpl_resumed_with_a_changed_setting_exit_2_naming_it(tmp_path, tiny_model_dir):
    recipe = _cpl_recipe(tmp_path, tiny_model_dir)
    first = _cli("search", str(recipe), "--quiet")
    assert first.returncode == 0, first.stderr[-2000:]
    trees = (tmp_path / "run" / "r1" / "trees.jsonl").read_text()
    for command in ("search", "cpl"):
        changed = _cli(command, str(recipe), "search.c_puct=2.0", "--quiet")
        assert changed.returncode == 2, changed.stderr[-2000:]
        assert "search.c_puct" in changed.stderr and "Traceback" not in changed.stderr + changed.stdout
        assert len(changed.stderr.strip().splitlines()) == 1
    again = _cli("search", str(recipe), "--quiet")  # unchanged: resumes (here: nothing left to do)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "run" / "r1" / "trees.jsonl").read_text() == trees
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["stages"] == {"r1/search": "done"} and manifest["seconds"]["r1/search"] > 0


def test_codeplan_resumed_with_a_changed_setting_exits_2_naming_it(tmp_path):
    root = tmp_path / "run"
    recipe = tmp_path / "codeplan.yaml"
    recipe.write_text("annotate: {input: corpus.jsonl}\neval: {task: synthetic/arithmetic}\n"
                      f"output: {root}\n")
    from forethought.codeplan import CodePlanConfig

    StageRunner(root, load_config(CodePlanConfig, recipe))  # the snapshot a first run leaves
    changed = _cli("codeplan", str(recipe), "learner.learning_rate=0.5", "--quiet")
    assert changed.returncode == 2 and "learner.learning_rate" in changed.stderr, changed.stderr[-2000:]
    assert "Traceback" not in changed.stderr + changed.stdout


def test_settings_that_mean_nothing_outside_the_run_loop_are_refused(tmp_path):
    from forethought.codeplan import CodePlanConfig
    from forethought.cpl import CplConfig

    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: {name: synthetic/arithmetic}\noutput: x\n")
    for key in ("sft.restart_from_base=true", "sft.star_base_steps=40", "search.seed=3"):
        with pytest.raises(UserError, match=f"unknown key '{key.split('=')[0]}'"):
            load_config(CplConfig, recipe, [key])
    recipe.write_text("annotate: {input: c.jsonl}\neval: {task: synthetic/arithmetic}\noutput: x\n")
    with pytest.raises(UserError, match="unknown key 'learner.star_step_growth'"):
        load_config(CodePlanConfig, recipe, ["learner.star_step_growth=2"])


class SeedRecorder:
    """A scripted engine that answers every request with a wrong solution and records the requests' seeds."""

    name = "seeds"

    def __init__(self):
        self.seeds = []

    def generate(self, requests, *, progress=True):
        self.seeds += [r.seed for r in requests]
        return [Completion([Sample("<solution>The answer is -1.</solution>", 5, "stop", logprob_mean=-1.0)] * r.n, 9)
                for r in requests]


def test_the_recipe_seed_reaches_the_search(tmp_path, monkeypatch):
    from forethought.cpl import CplConfig, CplRun

    seeds = {}
    for seed in (0, 1):
        engine = SeedRecorder()
        monkeypatch.setattr(stages_module, "get_engine", lambda kind, model, **o: engine)
        (tmp_path / str(seed)).mkdir()
        cfg = load_config(CplConfig, _cpl_recipe(tmp_path / str(seed), Path("unused"), seed=seed))
        run = CplRun(cfg, progress=False)
        with run.stages:
            run.search(1, cfg.model, None)
        seeds[seed] = engine.seeds
    assert seeds[0] and len(seeds[0]) == len(seeds[1]) and set(seeds[0]).isdisjoint(seeds[1])


def test_training_closes_the_sampling_engine_first_in_a_run(tmp_path, monkeypatch):
    """The run loop's train stage goes through the runner: the engine that sampled is closed before training."""
    from forethought.runs import loop

    log: list = []

    class Scripted(FakeEngine):
        name = "scripted"

        def generate(self, requests, *, progress=True):
            return [Completion([Sample("The answer is 1.", 4, "stop")] * r.n, 3) for r in requests]

    monkeypatch.setattr(stages_module, "get_engine", lambda kind, model, **o: Scripted(log, model))

    def fake_train(kind, model, rows, output_dir, cfg, **kw):
        log.append(("train", kind, str(model)))
        Path(output_dir).mkdir(parents=True)
        from forethought.learners.sft import TrainStats

        return TrainStats(steps=1, train_loss=0.0, trained_tokens=1, seconds=0.0, tokens_per_second=0.0)

    monkeypatch.setattr(loop, "train", fake_train)
    data = tmp_path / "ones.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}", "answer": "1"}) + "\n" for i in range(3)))
    (tmp_path / "ones.yaml").write_text("name: ones\nsplits: {train: ones.jsonl, test: ones.jsonl}\n"
                                        "question_field: question\ngold_field: answer\nanswer_type: number\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"method": "rest", "model": "base", "task": {"name": str(tmp_path / "ones.yaml")},
                                      "iterations": 1, "output": str(tmp_path / "run")}))
    from forethought.runs import run_recipe

    run_recipe(recipe, progress=False)
    assert log.index(("close", "base")) < log.index(("train", "sft", "base"))
    assert log[-2:] == [("open", str(tmp_path / "run" / "iter_001" / "checkpoint")),
                        ("close", str(tmp_path / "run" / "iter_001" / "checkpoint"))]


def test_run_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0600); the published file must get 0666 less the umask, so that a
    run directory shared with a group or copied by another user stays readable."""
    from forethought.jsonl import write_json, write_jsonl

    mask = os.umask(0)
    os.umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    write_jsonl(tmp_path / "b.jsonl", [{"x": 1}])
    for name in ("a.json", "b.jsonl"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~mask


def test_the_stopwatch_leaves_out_a_gap_that_means_the_process_was_stopped():
    now = iter([0.0, 10.0, 20.0, 900.0, 910.0])
    watch = stages_module.Stopwatch(beat=10.0, clock=lambda: next(now))
    assert [watch.tick() for _ in range(4)] == [10.0, 20.0, 30.0, 40.0]  # 20 -> 900: one beat counted
    assert watch.paused == 870.0


_SLOW_STAGE = """
import sys, time
from forethought.config import StrictModel
from forethought.runs import stages
stages.HEARTBEAT_S, stages.STOPPED_S = 0.1, 0.5

class Slow(StrictModel):
    output: str

stages.StageRunner(sys.argv[1], Slow(output="x")).stage("slow", lambda: time.sleep(float(sys.argv[2])))
"""


class Slow(StrictModel):
    output: str


def _start_slow(root: Path, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _SLOW_STAGE, str(root), str(seconds)])


def _wait_running(root: Path, at_least: float, proc: subprocess.Popen) -> None:
    """Until the running stage's heartbeat has written `at_least` seconds to the manifest."""
    for _ in range(600):
        path = root / "manifest.json"
        running = json.loads(path.read_text()).get("running", {}) if path.is_file() else {}
        if running.get("slow", {}).get("seconds", 0) >= at_least:
            return
        assert proc.poll() is None, "the stage ended before its heartbeat was seen"
        time.sleep(0.05)
    raise AssertionError(f"no heartbeat of {at_least} s in the manifest")


def test_a_killed_stage_keeps_its_seconds_so_far_and_they_count_when_it_runs_again(tmp_path):
    root = tmp_path / "run"
    proc = _start_slow(root, 60)
    try:
        _wait_running(root, 0.5, proc)
    finally:
        proc.kill()
        proc.wait()
    runner = StageRunner(root, Slow(output="x"))
    assert not runner.done("slow")
    assert runner.stage("slow", lambda: None)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["seconds"]["slow"] >= 0.5 and manifest["running"] == {}


def test_time_a_stage_was_stopped_is_left_out_of_its_seconds(tmp_path):
    root = tmp_path / "run"
    proc = _start_slow(root, 4.0)
    _wait_running(root, 0.3, proc)
    proc.send_signal(signal.SIGSTOP)
    time.sleep(2.5)
    proc.send_signal(signal.SIGCONT)
    assert proc.wait(timeout=60) == 0
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["stages"]["slow"] == "done"
    assert manifest["paused_seconds"]["slow"] >= 2.0  # the stop, about 2.5 s
    assert manifest["seconds"]["slow"] <= 2.5  # 4 s of sleep less the stop, plus about one heartbeat


def test_elapsed_counts_earlier_attempts_and_the_running_one(tmp_path):
    runner = StageRunner(tmp_path / "run", Toy(output="x"))
    runner.add_seconds("a", 5.0)  # an earlier attempt
    seen = []
    runner.stage("a", lambda: (time.sleep(0.3), seen.append(runner.elapsed("a"))))
    assert 5.3 <= seen[0] < 6.5
    assert runner.elapsed("a") == runner.seconds["a"] >= 5.3  # once it ended: what the manifest says
