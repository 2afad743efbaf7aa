"""A study with `parallel: N` runs its stages N at a time in child processes: the same results as one after another,
evaluations of the untrained model still copied (the copying arm waits for the one it copies), transfer
evaluations after their arm, slots owning their devices or their share of the threads, a failed arm reported by
name while the others finish, and no child left behind when the study process is killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from forethought.errors import UserError
from forethought.study import Study, load_study
from forethought.study.parallel import log_path, next_ready, slot_env
from test_study import write_study

TRANSFER = {"harder": {"name": "synthetic/arithmetic", "options": {"difficulty": 2, "test_size": 4}}}


def arms(rest_over: dict | None = None) -> list[dict]:
    """Two arms with the same iteration-0 evaluation (none, rest), one with its own (longer), and a trained arm."""
    return [
        {"name": "none", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0, "eval.max_new_tokens": 8}},
        {"name": "longer", "recipe": "quickstart_rest_em", "overrides": {"iterations": 0, "eval.max_new_tokens": 12}},
        {"name": "rest", "recipe": "quickstart_rest_em",
         "overrides": {"eval.max_new_tokens": 8, "sampler.chunk_size": 4, "sampler.max_new_tokens": 8,
                       "learner.max_steps": 1,
                       "learner.lora": None, "learner.batch_size": 4, "iterations": 1, **(rest_over or {})}},
    ]


def study_file(tmp_path: Path, name: str, model: Path | None, **over) -> Path:
    settings = {"budget": 64, "transfer": TRANSFER, "arms": arms(), **over}
    if model is not None:
        settings["model"] = str(model)
    return write_study(tmp_path / f"{name}.yaml", tmp_path / name, **settings)


def run(path: Path, progress: bool = False) -> dict:
    cfg, source = load_study(path)
    return Study(cfg, source, progress=progress).run()


def strip(study, roots: tuple[str, ...]):
    """study.json without what differs between two runs of the same study (seconds, where it lives)."""
    if isinstance(study, dict):
        return {k: strip(v, roots) for k, v in study.items()
                if k not in ("seconds", "source", "output", "table_markdown")}
    if isinstance(study, list):
        return [strip(v, roots) for v in study]
    if isinstance(study, str):
        for r in roots:
            study = study.replace(r, "")
    return study


# ---------------------------------------------------------------- scheduling, without running anything


def test_next_ready_keeps_study_order_and_never_stalls():
    waiting = {"b"}
    assert next_ready(["a", "b", "c"], lambda n: n not in waiting, nothing_running=False) == "a"
    assert next_ready(["b", "c"], lambda n: n not in waiting, nothing_running=False) == "c"
    assert next_ready(["b"], lambda n: n not in waiting, nothing_running=False) is None  # waits while others run
    assert next_ready(["b"], lambda n: n not in waiting, nothing_running=True) == "b"  # nothing left to wait for
    assert next_ready([], lambda n: True, nothing_running=True) is None


def test_slots_own_their_device_or_their_share_of_the_threads():
    env = slot_env(1, 2, ["0", "2,3"], 16, base={"PATH": "/bin"})
    assert env == {"PATH": "/bin", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert slot_env(0, 3, [], 16, base={})["OMP_NUM_THREADS"] == "5"
    assert slot_env(0, 4, [], 2, base={})["OMP_NUM_THREADS"] == "1"


def test_stages_wait_for_the_evaluation_they_copy_and_transfers_for_their_arm(tmp_path):
    cfg, source = load_study(study_file(tmp_path, "s", None, seeds=[0, 1]))
    study = Study(cfg, source, progress=False)

    class Stages:
        def __init__(self, done):
            self.finished = set(done)

        def done(self, name):
            return name in self.finished

    def ready(stage, done=()):
        return all(wait(Stages(done)) for wait in study.waits_for(stage))

    assert ready("arms/none/seed_0") and ready("arms/longer/seed_0")  # first of their evaluation inputs
    for stage in ("arms/none/seed_1", "arms/rest/seed_0", "arms/rest/seed_1"):  # greedy: none/seed_0's evaluation
        assert not ready(stage)
    assert not ready("arms/longer/seed_1")
    assert not ready("transfer/rest/seed_0/harder") and ready("transfer/rest/seed_0/harder", {"arms/rest/seed_0"})
    evaluated = tmp_path / "s" / "arms" / "none" / "seed_0"  # once none/seed_0's evaluation is finished
    (evaluated / "iter_000" / "eval").mkdir(parents=True)
    for name in ("summary.json", "records.jsonl"):
        (evaluated / "iter_000" / "eval" / name).write_text("{}")
    (evaluated / "manifest.json").write_text(json.dumps({"stages": {"iter_000/eval": "done"}, "seconds": {}}))
    assert ready("arms/rest/seed_0") and ready("arms/none/seed_1") and not ready("arms/longer/seed_1")


def test_the_parent_writes_a_childs_seconds_while_it_runs_and_counts_a_killed_attempt(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from forethought.config import StrictModel
    from forethought.runs.stages import StageRunner
    from forethought.study import parallel

    class Toy(StrictModel):
        output: str

    root = tmp_path / "study"
    stages = StageRunner(root, Toy(output="x"))
    stages.running("arms/a/seed_0", SimpleNamespace(seconds=5.0, paused=0.0))  # a killed study's last heartbeat
    seen = []
    record = stages.running
    monkeypatch.setattr(stages, "running", lambda name, watch: (seen.append(watch.seconds), record(name, watch)))
    monkeypatch.setattr(parallel, "HEARTBEAT_S", 0.2)
    monkeypatch.setattr(parallel, "_start", lambda study, name, slot, env: parallel._Child(
        name, slot, subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"]), tmp_path / "log"))
    study = SimpleNamespace(cfg=SimpleNamespace(parallel=2, devices=[], ray_address=None), stages=stages,
                            waits_for=lambda n: [],
                            say=lambda m: None)
    parallel.run_parallel(study, [("arms/a/seed_0", None)], after_stage=lambda: None)
    manifest = json.loads((root / "manifest.json").read_text())
    assert seen and 0 < seen[0] < 1.5  # written while the child ran
    assert manifest["stages"] == {"arms/a/seed_0": "done"} and manifest["running"] == {}
    assert 6.4 <= manifest["seconds"]["arms/a/seed_0"] < 9  # 5 s of the killed attempt + about 1.5 s of this one


# ---------------------------------------------------------------- end to end on the tiny model


@pytest.fixture(scope="module")
def serial(tmp_path_factory, tiny_model_dir):
    """The study run one stage after another, with the threads each parallel child gets: (its directory, study)."""
    tmp = tmp_path_factory.mktemp("serial")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        return tmp / "serial", run(study_file(tmp, "serial", tiny_model_dir))


def test_parallel_study_equals_the_serial_one(tmp_path, tiny_model_dir, serial, capsys):
    parallel = run(study_file(tmp_path, "par", tiny_model_dir, parallel=2), progress=True)
    events = [line.split()[1:3] for line in capsys.readouterr().out.splitlines() if line.startswith("study: ")]
    at = {(verb, stage): k for k, (verb, stage) in enumerate(events)}
    # none and longer (each evaluates the untrained model its own way) run side by side; rest waits for a slot and
    # for none's evaluation, which it copies; each transfer evaluation starts after its arm ends
    assert at["started", "arms/longer/seed_0"] < at["finished", "arms/none/seed_0"]
    assert at["started", "arms/rest/seed_0"] > min(at["finished", "arms/none/seed_0"],
                                                   at["finished", "arms/longer/seed_0"])
    for arm in ("none", "longer", "rest"):
        assert at["started", f"transfer/{arm}/seed_0/harder"] > at["finished", f"arms/{arm}/seed_0"]
    root = tmp_path / "par"
    assert strip(parallel, (str(root),)) == strip(serial[1], (str(serial[0]),))
    assert parallel["complete"]
    manifest = json.loads((root / "manifest.json").read_text())
    stages = ["arms/none/seed_0", "arms/longer/seed_0", "arms/rest/seed_0", "transfer/none/seed_0/harder",
              "transfer/longer/seed_0/harder", "transfer/rest/seed_0/harder"]
    assert all(manifest["stages"][s] == "done" for s in stages) and len(manifest["stages"]) == len(stages)
    assert all(manifest["seconds"][s] > 0 and manifest["peak_rss_mb"][s] > 50 for s in stages)  # the children's
    assert all(log_path(root, s).is_file() for s in stages)
    # rest waited for none's evaluation of the untrained model and copied it, as in the serial study
    reused = json.loads((root / "arms" / "rest" / "seed_0" / "manifest.json").read_text())["reused"]
    assert reused["iter_000/eval"]["from"] == "arms/none/seed_0"
    # a finished parallel study runs nothing again
    before = (root / "manifest.json").read_text()
    assert strip(run(study_file(tmp_path, "par", tiny_model_dir, parallel=2)), ()) == strip(parallel, ())
    assert (root / "manifest.json").read_text() == before


def test_a_study_on_ray_runs_every_stage_as_a_ray_task_and_equals_the_serial_one(tmp_path, tiny_model_dir, serial,
                                                                                  monkeypatch, capsys):
    pytest.importorskip("ray", reason="Ray is in the test extra: pip install -e '.[test]'")
    from forethought.study import parallel

    def local_child(*args):
        raise AssertionError("a stage started as a child of the study process, not as a Ray task")

    monkeypatch.setattr(parallel, "_start", local_child)
    monkeypatch.chdir(tmp_path)  # the study file and its output as relative paths: the tasks run where it started
    path = study_file(Path("."), "onray", tiny_model_dir, parallel=2, ray_address="local", stage_cpus=1)
    study = run(path, progress=True)
    root = tmp_path / "onray"
    assert strip(study, ("onray",)) == strip(serial[1], (str(serial[0]),))
    manifest = json.loads((root / "manifest.json").read_text())
    assert len(manifest["stages"]) == 6 and set(manifest["stages"].values()) == {"done"}
    assert all(manifest["seconds"][s] > 0 and manifest["peak_rss_mb"][s] > 50 for s in manifest["stages"])
    started = [line for line in capsys.readouterr().out.splitlines() if line.startswith("study: started")]
    assert len(started) == 6 and all("on Ray" in line for line in started)
    import ray

    assert not ray.is_initialized()  # the study ended the Ray it started
    # a task runs its stage in the directory the study started from, wherever its worker process stands
    monkeypatch.chdir("/")
    code, rss = parallel._ray_stage(["onray.yaml", "onray", "arms/none/seed_0"], str(tmp_path / "again.log"), 1,
                                    str(tmp_path))
    assert code == 0, (tmp_path / "again.log").read_text()[-1000:]


def test_a_failed_arm_is_named_and_the_others_finish(tmp_path, tiny_model_dir):
    missing = tmp_path / "no-such-model"
    path = study_file(tmp_path, "fail", None, parallel=2, arms=[
        {"name": "none", "recipe": "quickstart_rest_em",
         "overrides": {"iterations": 0, "eval.max_new_tokens": 8, "model": str(tiny_model_dir)}},
        {"name": "broken", "recipe": "quickstart_rest_em",
         "overrides": {"iterations": 0, "eval.max_new_tokens": 8, "model": str(missing)}},
    ])
    with pytest.raises(UserError, match=r"study stages failed: arms/broken/seed_0 \(exit 2; .*broken__seed_0\.log"):
        run(path)
    manifest = json.loads((tmp_path / "fail" / "manifest.json").read_text())["stages"]
    assert manifest == {"arms/none/seed_0": "done", "transfer/none/seed_0/harder": "done"}  # broken's transfer waits
    assert "no-such-model" in log_path(tmp_path / "fail", "arms/broken/seed_0").read_text()


def _children(root: Path) -> list[int]:
    """Live processes running a stage of the study in `root`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().split(") ")[-1][0]
            except OSError:
                continue
            if b"forethought.study.parallel" in cmd and str(root).encode() in cmd and state != "Z":
                found.append(int(entry.name))
    return found


@pytest.mark.skipif(sys.platform != "linux", reason="children die with the study through Linux's PR_SET_PDEATHSIG")
def test_killing_the_study_kills_its_children_and_it_resumes(tmp_path, tiny_model_dir):
    path = study_file(tmp_path, "killed", tiny_model_dir, parallel=2)
    root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "forethought.cli", "study", str(path), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while len(_children(root)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert len(_children(root)) == 2, "two stages should be running"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    while _children(root) and time.time() < deadline:
        time.sleep(0.2)
    assert _children(root) == []
    done = subprocess.run([sys.executable, "-m", "forethought.cli", "study", str(path), "--quiet"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    study = json.loads((root / "study.json").read_text())
    assert study["complete"] and all(a["finished"] for a in study["arms"].values())
