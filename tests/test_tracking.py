"""Experiment tracking (tracking.py): a tiny run with every backend, offline, read back from each backend's files;
resume appends to the same runs; a missing package is one clear error naming the extra."""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
from pathlib import Path

import pytest

# trackio fixes its database folder when first imported: a folder of this test session, not the user's cache
os.environ.setdefault("TRACKIO_DIR", tempfile.mkdtemp(prefix="trackio-test-"))

from forethought.errors import UserError  # noqa: E402
from forethought.runs import run_recipe  # noqa: E402
from forethought.tracking import (BACKENDS, Tracker, example_rows, stage_step, trainer_report_to,  # noqa: E402
                                  trainer_run_args)
from test_runs import warm_model, write_recipe  # noqa: E402,F401 (fixtures)

AVAILABLE = [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


@pytest.fixture
def offline(monkeypatch):
    for key in ("WANDB_MODE", "WANDB_PROJECT", "WANDB_DIR", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME",
                "TRACKIO_PROJECT", "FORETHOUGHT_REPORT_TO", "FORETHOUGHT_RUN_NAME", "TENSORBOARD_LOGGING_DIR"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("TRACKIO_PROJECT", f"ft-test-{os.getpid()}")


def tb_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def tb_texts(folder: Path) -> dict[str, list[tuple[int, str]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


@pytest.mark.slow
@pytest.mark.skipif(len(AVAILABLE) < len(BACKENDS), reason="needs the tensorboard, wandb, mlflow and trackio extras")
def test_run_tracked_in_every_backend_and_resumed(tmp_path, warm_model, ones_task, offline):  # noqa: F811
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iterations=1,
                          report_to=list(BACKENDS))
    root = run_recipe(recipe, progress=False)
    track = root / "tracking"
    ids = json.loads((track / "ids.json").read_text())
    metrics = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]

    # TensorBoard: the run's scalars (iteration metrics at step = iteration, stage seconds), the examples table,
    # and the learner's loss curve in the training stage's own folder
    scalars = tb_scalars(track / "tensorboard" / "run")
    assert [s for s, _ in scalars["iter/accuracy"]] == [0, 1]
    assert [v for _, v in scalars["iter/accuracy"]] == pytest.approx([m["accuracy"] for m in metrics])
    assert scalars["iter/sample_acceptance"][0] == (1, pytest.approx(metrics[1]["sample_acceptance"]))
    manifest = json.loads((root / "manifest.json").read_text())
    for stage in ("sample", "train", "eval"):
        step, value = scalars[f"stage_seconds/{stage}"][-1]
        assert step == 1 and value == pytest.approx(manifest["seconds"][f"iter_001/{stage}"], abs=1e-3)
    table = dict(tb_texts(track / "tensorboard" / "run")["examples/text_summary"])[1]
    assert "| question | plan | reflection | solution | verdict |" in table and "accepted" in table
    loss = tb_scalars(track / "tensorboard" / "iter_001" / "train")["train/loss"]
    assert len(loss) == 2  # learner.max_steps: 2, logged every step

    # MLflow, a file store in the run directory: metrics by iteration, the table artifact, the training child run
    from mlflow.tracking import MlflowClient

    m = ids["mlflow"]
    assert m["uri"] == (track / "mlruns").resolve().as_uri()
    client = MlflowClient(m["uri"])
    assert [x.step for x in client.get_metric_history(m["run_id"], "iter/accuracy")] == [0, 1]
    assert client.get_metric_history(m["run_id"], "stage_seconds/train")[0].step == 1
    art = [a.path for a in client.list_artifacts(m["run_id"], "examples")]
    assert "examples/step_001.json" in art
    children = client.search_runs([m["experiment_id"]], f"tags.mlflow.parentRunId = '{m['run_id']}'")
    assert len(children) == 1 and children[0].data.tags["forethought.stage"] == "iter_001/train"
    assert len(client.get_metric_history(children[0].info.run_id, "loss")) == 2

    # W&B offline: one run folder under the run directory holding the logged keys and the Trainer's loss
    runs = list((track / "wandb").glob(f"offline-run-*-{ids['wandb']}"))
    assert len(runs) == 1
    records = next(runs[0].glob("*.wandb")).read_bytes()  # the history records (protobuf) hold the keys as text;
    for key in ("iter/accuracy", "iter/sample_acceptance", "stage_seconds/train", "train/loss"):  # wandb has no
        assert key.encode() in records, key  # Python reader of its offline files since its core moved to Go
    tables = list((runs[0] / "files" / "media" / "table").glob("examples_*.table.json"))
    assert len(tables) == 1
    assert json.loads(tables[0].read_text())["columns"] == ["question", "plan", "reflection", "solution", "verdict"]

    # trackio's local database: the run's metrics and a run per training stage with its loss
    from trackio.sqlite_storage import SQLiteStorage

    project = os.environ["TRACKIO_PROJECT"]
    logs = SQLiteStorage.get_logs(project, ids["trackio"])
    assert [r["iter/accuracy"] for r in logs if "iter/accuracy" in r] == pytest.approx([m["accuracy"] for m in metrics])
    train_logs = SQLiteStorage.get_logs(project, f"{ids['trackio']}/iter_001/train")
    assert sum("train/loss" in r for r in train_logs) == 2

    # resumed with one more iteration: the same W&B, MLflow and trackio runs carry on
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", iterations=2,
                          report_to=list(BACKENDS))
    run_recipe(recipe, progress=False)
    assert json.loads((track / "ids.json").read_text()) == ids
    assert [x.step for x in client.get_metric_history(m["run_id"], "iter/accuracy")] == [0, 1, 2]
    assert [s for s, _ in tb_scalars(track / "tensorboard" / "run")["iter/accuracy"]] == [0, 1, 2]
    assert len(list((track / "wandb").glob(f"offline-run-*-{ids['wandb']}"))) == 2  # one per attempt, one id
    assert len([r for r in SQLiteStorage.get_logs(project, ids["trackio"]) if "iter/accuracy" in r]) == 3


def test_a_missing_package_names_the_extra(tmp_path, monkeypatch, warm_model, ones_task):  # noqa: F811
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(UserError, match=r"report_to: mlflow needs the mlflow extra: pip install 'forethought\[mlflow\]'"):
        Tracker(tmp_path / "t", ["tensorboard", "mlflow"])
    recipe = write_recipe(tmp_path / "r.yaml", warm_model, ones_task, tmp_path / "run", report_to=["mlflow"])
    with pytest.raises(UserError, match="forethought\\[mlflow\\]"):
        run_recipe(recipe, progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything is written


def test_unknown_backend_is_refused_by_the_recipe(tmp_path, ones_task):  # noqa: F811
    recipe = write_recipe(tmp_path / "r.yaml", "m", ones_task, tmp_path / "run", report_to=["neptune"])
    with pytest.raises(UserError, match="report_to"):
        run_recipe(recipe, progress=False)


def test_learner_report_to_adds_the_runs_backends(monkeypatch):
    monkeypatch.delenv("FORETHOUGHT_REPORT_TO", raising=False)
    monkeypatch.delenv("FORETHOUGHT_RUN_NAME", raising=False)
    assert trainer_report_to("none") == "none" and trainer_run_args() == {}
    assert trainer_report_to(["wandb"]) == ["wandb"]
    monkeypatch.setenv("FORETHOUGHT_REPORT_TO", "tensorboard,wandb")
    monkeypatch.setenv("FORETHOUGHT_RUN_NAME", "run/iter_001/train")
    assert trainer_report_to("none") == ["tensorboard", "wandb"]
    assert trainer_report_to("wandb") == ["wandb", "tensorboard"]
    assert trainer_run_args()["run_name"] == "run/iter_001/train"


def test_stage_steps_and_example_rows():
    assert stage_step("iter_002/train") == ("train", 2)
    assert stage_step("r1/search") == ("search", 1)
    assert stage_step("eval/base") == ("eval/base", 0)
    records = [{"question": "q", "plan": "p", "reflection": None, "solution": "s", "accepted": ok,
                "rejected_reason": None if ok else "wrong_answer"} for ok in (True, False, True)]
    rows = example_rows(records, per_kind=1)
    assert [r["verdict"] for r in rows] == ["accepted", "rejected: wrong_answer"]
    assert rows[0] == {"question": "q", "plan": "p", "reflection": "", "solution": "s", "verdict": "accepted"}
    rollout = example_rows([{"question_id": "7", "completion": "c", "correct": False, "reward": 0.0}])
    assert rollout == [{"question": "7", "plan": "", "reflection": "", "solution": "c", "verdict": "wrong (reward 0.0)"}]


@pytest.mark.skipif("tensorboard" not in AVAILABLE, reason="needs the tensorboard extra")
@pytest.mark.parametrize("pipeline", ["cpl", "codeplan"])
def test_cpl_and_codeplan_evaluations_reach_the_tracker(tmp_path, monkeypatch, offline, pipeline):
    """report_to in a cpl or codeplan recipe: each evaluation's summary and example records land in TensorBoard."""
    import forethought.evaluate
    from forethought.config import load_config

    class Result:
        summary = {"accuracy": 0.25, "n": 4}
        records = [{"id": "q1", "prompt": "p", "plan": None, "output": "The answer is 3.", "extracted": "3",
                    "gold": "3", "correct": True}]

        def write(self, out):
            Path(out).mkdir(parents=True, exist_ok=True)

    monkeypatch.setattr(forethought.evaluate, "evaluate", lambda engine, task, examples, **kw: Result())
    monkeypatch.setattr("forethought.runs.stages.get_engine", lambda kind, model, **o: object())
    recipe = tmp_path / "r.yaml"
    root = tmp_path / "run"
    if pipeline == "cpl":
        from forethought.cpl import CplConfig as Config, CplRun as Run

        recipe.write_text(f"task: {{name: synthetic/arithmetic}}\nreport_to: [tensorboard]\noutput: {root}\n")
    else:
        from forethought.codeplan import CodePlanConfig as Config, CodePlanRun as Run

        recipe.write_text("annotate: {input: c.jsonl}\neval: {task: synthetic/arithmetic}\n"
                          f"report_to: [tensorboard]\noutput: {root}\n")
    run = Run(load_config(Config, recipe), progress=False)
    with run.stages:
        if pipeline == "cpl":
            run.evaluate("some-model", "base")
        else:
            run.evaluate("none", "some-model")
    name = "base" if pipeline == "cpl" else "none"
    scalars = tb_scalars(root / "tracking" / "tensorboard" / "run")
    assert [v for _, v in scalars[f"eval/{name}/accuracy"]] == [0.25]
    assert any(tag.startswith("examples") for tag in tb_texts(root / "tracking" / "tensorboard" / "run"))
