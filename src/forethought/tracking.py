"""Experiment tracking: a recipe's `report_to: [tensorboard, wandb, mlflow, trackio]` (any subset; default none).

One Tracker per run directory, opened by the stage runner (runs/stages.py), logs into every chosen backend, all
local and offline by default:
  tensorboard  RUN/tracking/tensorboard/run (the run's own scalars and example tables), and one directory per
               training stage (RUN/tracking/tensorboard/iter_001/train ...) with the learner's loss curve
  wandb        one run, offline unless WANDB_MODE says otherwise, files under RUN/tracking/wandb
  mlflow       one run in a file store at RUN/tracking/mlruns unless MLFLOW_TRACKING_URI is set; each training
               stage is a child run (the learner's loss curve) of it
  trackio      one run in trackio's local database (TRACKIO_DIR, default ~/.cache/huggingface/trackio), project
               TRACKIO_PROJECT or "forethought"; each training stage logs its loss to a run named after it
What it logs: the pipeline's metrics (`log_metrics`, step = iteration or round), every stage's seconds when the
stage ends (`stage_seconds/...`), and tables of example trajectories (`log_table`). The learners' loss curves go
through transformers' own `report_to`: while a stage trains, `training(stage)` sets the integrations' environment
(TENSORBOARD_LOGGING_DIR, MLFLOW_*, WANDB_*) and FORETHOUGHT_REPORT_TO, which `trainer_report_to` adds to every
learner's TrainingArguments (it reaches `accelerate launch` processes too). A resumed run appends to the same
W&B / MLflow / trackio run: their ids are kept in RUN/tracking/ids.json.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import re
import uuid
from pathlib import Path
from typing import Literal

from forethought.errors import UserError

Backend = Literal["tensorboard", "wandb", "mlflow", "trackio"]
BACKENDS = ("tensorboard", "wandb", "mlflow", "trackio")
ENV_REPORT_TO, ENV_RUN_NAME = "FORETHOUGHT_REPORT_TO", "FORETHOUGHT_RUN_NAME"
TABLE_COLUMNS = ("question", "plan", "reflection", "solution", "verdict")
_STAGE = re.compile(r"^(?:iter_|r)(\d+)/(.+)$")


def check_available(backends) -> None:
    """One UserError naming the extra to install for the first chosen backend whose package is missing."""
    for b in backends:
        if importlib.util.find_spec(b) is None:
            raise UserError(f"report_to: {b} needs the {b} extra: pip install 'forethought[{b}]'")


def trainer_report_to(configured) -> str | list[str]:
    """A learner's TrainingArguments `report_to`: its own setting plus the backends of the run it trains in."""
    own = [configured] if isinstance(configured, str) else list(configured or [])
    own = [x for x in own if x != "none"]
    extra = [x for x in os.environ.get(ENV_REPORT_TO, "").split(",") if x and x not in own]
    return own + extra or "none"


def trainer_run_args() -> dict:
    """run_name and project for the TrainingArguments while a tracked stage trains (else nothing)."""
    name = os.environ.get(ENV_RUN_NAME)
    if not name:
        return {}
    return {"run_name": name, "project": os.environ.get("TRACKIO_PROJECT", "forethought")}


def stage_step(name: str) -> tuple[str, int]:
    """A stage name as a scalar key and step: iter_002/train -> (train, 2), r1/search -> (search, 1), eval/base ->
    (eval/base, 0)."""
    m = _STAGE.match(name)
    return (m.group(2), int(m.group(1))) if m else (name, 0)


def example_rows(records: list[dict], per_kind: int = 3) -> list[dict]:
    """A few accepted and a few rejected samples (or correct and wrong rollouts or evaluation records) as table
    rows with the columns question, plan, reflection, solution, verdict."""
    def verdict(r: dict) -> str:
        if "accepted" in r:
            return "accepted" if r["accepted"] else f"rejected: {r.get('rejected_reason') or 'wrong'}"
        reward = f" (reward {r['reward']})" if r.get("reward") is not None else ""
        return f"{'correct' if r.get('correct') else 'wrong'}{reward}"

    good = [r for r in records if r.get("accepted", r.get("correct"))][:per_kind]
    bad = [r for r in records if not r.get("accepted", r.get("correct"))][:per_kind]
    return [{"question": str(r.get("question") or r.get("prompt") or r.get("question_id") or ""),
             "plan": str(r.get("plan") or ""), "reflection": str(r.get("reflection") or ""),
             "solution": str(r.get("solution") or r.get("completion") or r.get("output") or ""),
             "verdict": verdict(r)}
            for r in good + bad]


def _scalars(metrics: dict, prefix: str) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[f"{prefix}/{key}" if prefix else key] = float(value)
    return out


def _flat(data, prefix: str = "") -> dict:
    if not isinstance(data, dict):
        return {prefix: data}
    out = {}
    for k, v in data.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


class Tracker:
    """The chosen backends of one run directory (nothing at all when `backends` is empty)."""

    def __init__(self, root: str | Path, backends, config: dict | None = None):
        self.root, self.backends = Path(root), list(dict.fromkeys(backends or []))
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise UserError(f"report_to: unknown backend {unknown[0]}; choose from {', '.join(BACKENDS)}")
        check_available(self.backends)
        self.dir = self.root / "tracking"
        self.config = config or {}
        self.name = self.root.resolve().name
        self._tb = self._wandb = self._mlflow = self._trackio = None
        self._open = False

    def __bool__(self) -> bool:
        return bool(self.backends)

    # ---------------------------------------------------------------- lifecycle
    def _ids(self) -> dict:
        path = self.dir / "ids.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _save_ids(self, ids: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "ids.json").write_text(json.dumps(ids, indent=1), encoding="utf-8")

    def open(self) -> None:
        if self._open or not self.backends:
            return
        self._open = True
        self.dir.mkdir(parents=True, exist_ok=True)
        ids = self._ids()
        if "tensorboard" in self.backends:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir / "tensorboard" / "run"))
        if "wandb" in self.backends:
            import wandb

            ids.setdefault("wandb", uuid.uuid4().hex[:8])
            self._save_ids(ids)
            self._wandb = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "forethought"), name=self.name, id=ids["wandb"],
                resume="allow", dir=str(self.dir), mode=os.environ.get("WANDB_MODE", "offline"),
                config=self.config, reinit="finish_previous")
            self._wandb.define_metric("step")
            self._wandb.define_metric("iter/*", step_metric="step")
            self._wandb.define_metric("stage_seconds/*", step_metric="step")
        if "mlflow" in self.backends:
            from mlflow.tracking import MlflowClient

            uri = os.environ.get("MLFLOW_TRACKING_URI") or (self.dir / "mlruns").resolve().as_uri()
            if uri.startswith("file:"):  # MLflow 3.x keeps its file store behind this switch (no server, no database)
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            client = MlflowClient(tracking_uri=uri)
            if "mlflow" not in ids:
                name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "forethought")
                exp = client.get_experiment_by_name(name)
                exp_id = exp.experiment_id if exp else client.create_experiment(name)
                run = client.create_run(exp_id, run_name=self.name)
                ids["mlflow"] = {"uri": uri, "run_id": run.info.run_id, "experiment_id": exp_id}
                self._save_ids(ids)
                params = {k: str(v)[:250] for k, v in _flat(self.config).items()}
                items = list(params.items())
                from mlflow.entities import Param

                for i in range(0, len(items), 100):
                    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in items[i:i + 100]])
            self._mlflow = (client, ids["mlflow"])
        if "trackio" in self.backends:
            import trackio

            ids.setdefault("trackio", self.name)
            self._save_ids(ids)
            self._trackio = trackio.init(
                project=os.environ.get("TRACKIO_PROJECT", "forethought"), name=ids["trackio"], resume="allow",
                space_id=None, config=self.config, auto_log_cpu=False, auto_log_gpu=False)

    def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            client, ids = self._mlflow
            client.set_terminated(ids["run_id"])
        if self._trackio is not None:
            self._trackio.finish()
        self._tb = self._wandb = self._mlflow = self._trackio = None

    # ---------------------------------------------------------------- logging
    def log_metrics(self, step: int, metrics: dict, prefix: str = "iter") -> None:
        """The numbers among `metrics` (booleans as 0/1; None, lists and text left out) at `step`."""
        if not self._open:
            return
        values = _scalars(metrics, prefix)
        if not values:
            return
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(key, value, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({**values, "step": step})
        if self._mlflow is not None:
            from mlflow.entities import Metric
            import time

            client, ids = self._mlflow
            now = int(time.time() * 1000)
            client.log_batch(ids["run_id"], metrics=[Metric(k, v, now, step) for k, v in values.items()])
        if self._trackio is not None:
            self._trackio.log(values, step=step)

    def log_stage_seconds(self, name: str, seconds: float) -> None:
        key, step = stage_step(name)
        self.log_metrics(step, {key: round(seconds, 3)}, prefix="stage_seconds")

    def log_table(self, step: int, name: str, rows: list[dict], columns=TABLE_COLUMNS) -> None:
        """Example trajectories at `step`: TensorBoard text, a W&B Table, an MLflow table artifact
        (NAME/step_NNN.json), a trackio Table."""
        if not self._open or not rows:
            return
        columns = list(columns)
        data = [[str(r.get(c, "")) for c in columns] for r in rows]
        if self._tb is not None:
            def cell(text: str) -> str:
                return text.replace("|", "\\|").replace("\n", "<br>")

            md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            md += ["| " + " | ".join(cell(x) for x in row) + " |" for row in data]
            self._tb.add_text(name, "\n".join(md), step)
            self._tb.flush()
        if self._wandb is not None:
            import wandb

            self._wandb.log({name: wandb.Table(columns=columns, data=data), "step": step})
        if self._mlflow is not None:
            client, ids = self._mlflow
            client.log_table(ids["run_id"], data={c: [row[i] for row in data] for i, c in enumerate(columns)},
                             artifact_file=f"{name}/step_{step:03d}.json")
        if self._trackio is not None:
            import pandas as pd
            import trackio

            self._trackio.log({name: trackio.Table(dataframe=pd.DataFrame(data, columns=columns))}, step=step)

    # ---------------------------------------------------------------- training stages
    @contextlib.contextmanager
    def training(self, stage: str):
        """While `stage` trains: the environment that sends the learner's own logs (loss curves) into this run's
        backends through transformers' report_to."""
        if not self._open:
            yield
            return
        env = {ENV_REPORT_TO: ",".join(self.backends), ENV_RUN_NAME: f"{self.name}/{stage}"}
        if self._tb is not None:
            env["TENSORBOARD_LOGGING_DIR"] = str(self.dir / "tensorboard" / stage)
        if self._wandb is not None:  # in this process the Trainer logs into the open run; launched processes
            env.update(WANDB_DIR=str(self.dir), WANDB_MODE=os.environ.get("WANDB_MODE", "offline"),
                       WANDB_PROJECT=os.environ.get("WANDB_PROJECT", "forethought"))
        if self._mlflow is not None:  # a child run of this run per training stage
            _, ids = self._mlflow
            env.update(MLFLOW_TRACKING_URI=ids["uri"], MLFLOW_NESTED_RUN="1",
                       MLFLOW_EXPERIMENT_NAME=os.environ.get("MLFLOW_EXPERIMENT_NAME", "forethought"),
                       MLFLOW_TAGS=json.dumps({"mlflow.parentRunId": ids["run_id"], "forethought.stage": stage}))
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            if self._mlflow is not None:
                import mlflow

                _, ids = self._mlflow
                mlflow.set_tracking_uri(ids["uri"])
                with mlflow.start_run(run_id=ids["run_id"]):  # the parent the Trainer's nested run hangs under
                    yield
            else:
                yield
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


__all__ = ["BACKENDS", "Backend", "Tracker", "check_available", "example_rows", "stage_step", "trainer_report_to",
           "trainer_run_args"]
