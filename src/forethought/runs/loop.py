"""The self-training loop: evaluate the base model, then per iteration sample (E-step), train (M-step), evaluate.

Every stage writes its outputs atomically or append-only and is marked done in manifest.json, so running the
same command again after a kill resumes where it stopped without redoing or losing finished work.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from pathlib import Path

import yaml

from forethought.engines import close_engine, get_engine
from forethought.errors import UserError
from forethought.evaluate import evaluate
from forethought.jsonl import write_json, write_jsonl
from forethought.report.metrics import correct_by_question, paired_delta_ci
from forethought.learners.distributed import launch_training
from forethought.learners.sft import steps_for_iteration, train_sft
from forethought.runs.config import RunConfig
from forethought.runs.state import RunState
from forethought.samplers import read_records, run_sampler, training_rows
from forethought.tasks import get_task


_FIXED_SERVER = (
    "engine.kind=openai with base_urls serves one fixed model, but a self-training run samples from each new "
    "checkpoint; set engine.launch to a command that serves {model} (e.g. 'vllm serve {model} --served-model-name "
    "{name} --port {port}') instead of base_urls, or set iterations=0 to only evaluate"
)


def prepare_dir(cfg: RunConfig) -> Path:
    """Create the run directory with config.yaml, or check that an existing one was made by the same config."""
    root = Path(cfg.output)
    resolved = cfg.model_dump(mode="json")
    path = root / "config.yaml"
    if path.exists():
        previous = yaml.safe_load(path.read_text())
        if previous != resolved:
            changed = sorted(k for k in set(previous) | set(resolved) if previous.get(k) != resolved.get(k))
            raise UserError(
                f"{root} holds a run made with a different config (differs in: {', '.join(changed)}); "
                "run the same command to resume it, or choose a new output=DIR"
            )
    else:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(resolved, sort_keys=False))
        tmp.replace(path)
    return root


def sampling_metrics(records: list[dict]) -> dict:
    """Trials, tokens and acceptance of one iteration, counted from its samples file."""
    questions = {r["question_id"] for r in records}
    solved = {r["question_id"] for r in records if r["accepted"]}
    accepted = sum(r["accepted"] for r in records)
    return {
        "questions": len(questions),
        "trials": len(records),
        "accepted": accepted,
        "acceptance_rate": len(solved) / len(questions) if questions else 0.0,
        "sample_acceptance": accepted / len(records) if records else 0.0,
        "tokens_generated": sum(r["tokens_out"] for r in records),
        "tokens_in": sum(r["tokens_in"] for r in records),
    }


class Runner:
    """Runs (or resumes) one recipe in its run directory."""

    def __init__(self, cfg: RunConfig, *, progress: bool = True):
        if cfg.engine.fixed_model and cfg.iterations > 0:
            raise UserError(_FIXED_SERVER)
        self.cfg = cfg
        self.progress = progress
        self.root = prepare_dir(cfg)
        self.state = RunState(self.root)
        self.task = get_task(cfg.task.name, **cfg.task.options)
        self.train_q = self.task.load(cfg.task.data, split=cfg.task.train_split, limit=cfg.task.train_limit)
        self.eval_q = self.task.load(cfg.task.data, split=cfg.task.eval_split, limit=cfg.task.eval_limit)
        if not self.train_q or not self.eval_q:
            raise UserError(f"task '{cfg.task.name}' gave no training or no evaluation questions; check task.* keys")
        self._engine = (None, None)

    def model_after(self, iteration: int) -> str:
        """The model produced by an iteration (iteration 0: the base model)."""
        if iteration == 0:
            return self.cfg.model
        if self.state.status(iteration, "train") == "done":
            return str(self.state.iter_dir(iteration) / "checkpoint")
        return self.model_after(iteration - 1)

    def engine(self, model: str):
        """An engine on `model`, reused while the model stays the same."""
        if self._engine[0] != model:
            self.release_engine()
            e = self.cfg.engine
            if e.fixed_model and model != self.cfg.model:
                raise UserError(_FIXED_SERVER)
            self._engine = (model, get_engine(e.kind, model, **e.options()))
        return self._engine[1]

    def release_engine(self) -> None:
        """Close the current engine (its server, Ray actors or GPU memory) and drop it."""
        engine, self._engine = self._engine[1], (None, None)
        if engine is not None:
            close_engine(engine)
        del engine
        gc.collect()

    def run(self) -> Path:
        try:
            for t in range(self.cfg.iterations + 1):
                if t > 0:
                    self.sample(t)
                    self.train(t)
                self.evaluate(t)
        finally:
            self.release_engine()
        return self.root

    def sample(self, t: int) -> None:
        if self.state.done(t, "sample"):
            return
        start = time.perf_counter()
        out = self.state.iter_dir(t) / "samples.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        run_sampler(self.cfg.sampler, self.engine(self.model_after(t - 1)), self.task, self.train_q,
                    out_path=out, iteration=t, seed=self.cfg.seed, method=self.cfg.method, progress=self.progress)
        self.state.add_seconds(t, "sample", time.perf_counter() - start)
        self.state.mark(t, "sample")

    def train(self, t: int) -> None:
        if self.state.done(t, "train"):
            return
        start = time.perf_counter()
        d = self.state.iter_dir(t)
        for stale in d.glob(".checkpoint.partial-*"):  # left by a training that was killed
            shutil.rmtree(stale, ignore_errors=True)
        if (d / "checkpoint").exists():  # killed after the atomic rename, before the manifest was updated
            self.state.mark(t, "train")
            return
        records = [r for r in read_records(d / "samples.jsonl") if r["accepted"]]
        rows = training_rows(records, self.cfg.sampler.plan_format, self.task.answer_type)
        write_jsonl(d / "train.jsonl", rows)
        if not rows:
            self.state.mark(t, "train", "skipped")  # nothing accepted: the model stays as it was
            return
        learner = self.cfg.learner
        base = self.cfg.model if learner.restart_from_base else self.model_after(t - 1)
        self.release_engine()  # free the sampling model (GPU memory, servers, replicas) before training
        train = launch_training if learner.distributed.processes > 1 else train_sft
        stats = train(base, rows, d / "checkpoint", learner, seed=self.cfg.seed + t,
                      max_steps=steps_for_iteration(learner, t), progress=self.progress)
        write_json(d / "train_stats.json", stats.model_dump())
        self.state.add_seconds(t, "train", time.perf_counter() - start)
        self.state.mark(t, "train")

    def evaluate(self, t: int) -> None:
        if self.state.done(t, "eval"):
            return
        start = time.perf_counter()
        e, model = self.cfg.eval, self.model_after(t)
        result = evaluate(
            self.engine(model), self.task, self.eval_q, model_name=model,
            plan_format=self.cfg.sampler.plan_format, n=e.n, temperature=e.temperature, top_p=e.top_p,
            max_new_tokens=e.max_new_tokens, plan_max_new_tokens=e.plan_max_new_tokens, fewshot=e.fewshot,
            seed=self.cfg.seed, progress=self.progress,
        )
        result.write(self.state.iter_dir(t) / "eval")
        self.state.add_seconds(t, "eval", time.perf_counter() - start)

        sampled = sampling_metrics(read_records(self.state.iter_dir(t) / "samples.jsonl")) if t else {}
        previous = json.loads((self.state.iter_dir(t - 1) / "metrics.json").read_text()) if t else {}
        s = result.summary
        metrics = {
            "iteration": t,
            "accuracy": s["accuracy"],
            "ci95": s["ci95"],
            "acceptance_rate": sampled.get("acceptance_rate"),
            "sample_acceptance": sampled.get("sample_acceptance"),
            "tokens_generated": sampled.get("tokens_generated", 0),
            "cumulative_tokens": previous.get("cumulative_tokens", 0) + sampled.get("tokens_generated", 0),
            "eval_tokens": s["tokens_generated"],
            "questions": sampled.get("questions", 0),
            "trials": sampled.get("trials", 0),
            "accepted": sampled.get("accepted", 0),
            "train_examples": (self.state.iter_dir(t) / "train.jsonl").read_text().count("\n") if t else 0,
            "trained": self.state.status(t, "train") == "done" if t else False,
            "seconds": self.state.seconds(t),
        }
        if t:
            base = [json.loads(x) for x in (self.state.iter_dir(0) / "eval" / "records.jsonl").read_text().splitlines()]
            delta, ci = paired_delta_ci(correct_by_question(base), correct_by_question(result.records))
            metrics.update(delta_vs_base=delta, delta_ci95=list(ci))
        self.state.write_metrics(t, metrics)
        self.state.mark(t, "eval")
