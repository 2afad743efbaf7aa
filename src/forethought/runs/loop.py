"""The self-training loop: evaluate the base model, then per iteration sample (E-step), train (M-step), evaluate.

Every stage writes its outputs atomically or append-only and is marked done in manifest.json, so running the
same command again after a kill resumes where it stopped without redoing or losing finished work.
"""

from __future__ import annotations

import json
from pathlib import Path

from forethought.errors import UserError
from forethought.evaluate import EvalResult, evaluate, partial_path
from forethought.jsonl import read_text, write_json, write_jsonl
from forethought.learners import train
from forethought.learners.grpo import GRPOConfig, train_grpo_iteration
from forethought.learners.sft import SFTConfig
from forethought.stats import correct_by_question, paired_delta_ci
from forethought.runs.config import RunConfig
from forethought.runs.stages import StageRunner
from forethought.samplers import read_records, run_sampler, training_rows
from forethought.tasks import get_task
from forethought.tracking import example_rows


_FIXED_SERVER = (
    "engine.kind=openai with base_urls serves one fixed model, but a self-training run samples from each new "
    "checkpoint; set engine.launch to a command that serves {model} (e.g. 'vllm serve {model} --served-model-name "
    "{name} --port {port}') instead of base_urls, or set iterations=0 to only evaluate"
)


def _outcome_counts(rows: list[dict], success: str, tokens: str) -> dict:
    """Questions, trials, successes (`success` field) and generated tokens (`tokens` field) of one iteration."""
    questions = {r["question_id"] for r in rows}
    solved = {r["question_id"] for r in rows if r[success]}
    succeeded = sum(r[success] for r in rows)
    return {
        "questions": len(questions),
        "trials": len(rows),
        "accepted": succeeded,
        "acceptance_rate": len(solved) / len(questions) if questions else 0.0,
        "sample_acceptance": succeeded / len(rows) if rows else 0.0,
        "tokens_generated": sum(r[tokens] for r in rows),
    }


def sampling_metrics(records: list[dict]) -> dict:
    """Trials, tokens and acceptance of one iteration, counted from its samples file."""
    return {**_outcome_counts(records, "accepted", "tokens_out"), "tokens_in": sum(r["tokens_in"] for r in records)}


def rollout_metrics(path: Path) -> dict:
    """GRPO's counterpart of `sampling_metrics`: rollouts, correct ones and generated tokens of one iteration."""
    rows = read_records(path) if path.is_file() else []
    return {**_outcome_counts(rows, "correct", "tokens"),
            "reward_mean": sum(r["reward"] for r in rows) / len(rows) if rows else None}


class Runner:
    """Runs (or resumes) one recipe in its run directory, stage by stage (runs/stages.py)."""

    def __init__(self, cfg: RunConfig, *, progress: bool = True):
        if cfg.engine.fixed_model and cfg.iterations > 0:
            raise UserError(_FIXED_SERVER)
        self.cfg = cfg
        self.progress = progress
        self.grpo = isinstance(cfg.learner, GRPOConfig)
        if self.grpo and "sampler" in cfg.model_fields_set:
            raise UserError("a GRPO run (learner.kind=grpo) has no sampling stage: remove the sampler section "
                            "(the plan format is learner.plan_format)")
        self.plan_format = cfg.learner.plan_format if self.grpo else cfg.sampler.plan_format
        self.task = get_task(cfg.task.name, **cfg.task.options)
        self.train_q = self.task.load(cfg.task.data, split=cfg.task.train_split, limit=cfg.task.train_limit)
        self.eval_q = self.task.load(cfg.task.data, split=cfg.task.eval_split, limit=cfg.task.eval_limit)
        if not self.train_q or not self.eval_q:
            raise UserError(f"task '{cfg.task.name}' gave no training or no evaluation questions; check task.* keys")
        self.stages = StageRunner(cfg.output, cfg, engine_settings=cfg.engine, growable=("iterations",),
                                  progress=progress)
        self.root = self.stages.root

    def _metrics(self, iteration: int) -> dict:
        return json.loads(read_text(self.iter_dir(iteration) / "metrics.json"))

    def iter_dir(self, iteration: int) -> Path:
        return self.root / f"iter_{iteration:03d}"

    def model_after(self, iteration: int) -> str:
        """The model produced by an iteration (iteration 0: the base model)."""
        if iteration == 0:
            return self.cfg.model
        if self.stages.status(_key(iteration, "train")) == "done":
            return str(self.iter_dir(iteration) / "checkpoint")
        return self.model_after(iteration - 1)

    def run(self) -> Path:
        with self.stages:
            self.retrain_lost_checkpoints()
            for t in range(self.cfg.iterations + 1):
                if t > 0 and self.grpo:  # online RL: rollouts happen inside training, no sampling stage
                    self.stages.stage(_key(t, "train"), lambda: self.train_grpo(t),
                                      output=self.iter_dir(t) / "checkpoint", trains=True)
                elif t > 0:
                    self.stages.stage(_key(t, "sample"), lambda: self.sample(t))
                    self.stages.stage(_key(t, "train"), lambda: self.train(t),
                                      output=self.iter_dir(t) / "checkpoint", trains=True)
                self.stages.stage(_key(t, "eval"), lambda: self.evaluate(t))
        return self.root

    def retrain_lost_checkpoints(self) -> None:
        """An iteration's training runs again when its checkpoint is gone and a stage still to run needs that model:
        its evaluation, the next iteration's sampling, or the next training when it continues from it (seeded)."""
        done = self.stages.done
        for t in range(1, self.cfg.iterations + 1):
            needed = not done(_key(t, "eval"))
            if t < self.cfg.iterations and not self.grpo:
                needed |= not done(_key(t + 1, "sample"))
                needed |= not done(_key(t + 1, "train")) and not self.cfg.learner.restart_from_base
            self.stages.redo_if_lost(_key(t, "train"), self.iter_dir(t) / "checkpoint", needed)

    def sample(self, t: int) -> None:
        out = self.iter_dir(t) / "samples.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        run_sampler(self.budgeted(self.cfg.sampler, t), self.stages.engine(self.model_after(t - 1)), self.task,
                    self.train_q, out_path=out, iteration=t, seed=self.cfg.seed, method=self.cfg.method,
                    progress=self.progress)

    def budgeted(self, section, t: int):
        """The sampler (or GRPO learner) section for iteration t with its token budget: `max_tokens` per iteration,
        plus what earlier iterations left unspent, minus what they overshot (at most one engine call each), so a run
        of T iterations generates at most T * max_tokens tokens plus one engine call."""
        if section.max_tokens is None:
            return section
        before = self._metrics(t - 1)["cumulative_tokens"] if t > 1 else 0
        return section.model_copy(update={"max_tokens": max(0, t * section.max_tokens - before)})

    def train(self, t: int) -> str | None:
        d = self.iter_dir(t)
        records = [r for r in read_records(d / "samples.jsonl") if r["accepted"]]
        rows = training_rows(records, self.cfg.sampler.plan_format, self.task.answer_type)
        write_jsonl(d / "train.jsonl", rows)
        if not rows:
            return "skipped"  # nothing accepted: the model stays as it was
        learner = self.cfg.learner
        base = self.cfg.model if learner.restart_from_base else self.model_after(t - 1)
        sft = SFTConfig.model_validate(learner.model_dump(include=set(SFTConfig.model_fields)))
        stats = train("sft", base, rows, d / "checkpoint", sft, seed=self.cfg.seed + t,
                      max_steps=learner.steps(t), progress=self.progress)
        write_json(d / "train_stats.json", stats.model_dump())
        return None

    def train_grpo(self, t: int) -> None:
        """Iteration t's share of the run's one GRPO optimisation (learners/grpo.py), rollouts to rollouts.jsonl."""
        d = self.iter_dir(t)
        e = self.cfg.engine
        stats = train_grpo_iteration(
            self.cfg.model, self.task, self.train_q, self.budgeted(self.cfg.learner, t), iteration=t,
            iterations=self.cfg.iterations,
            trainer_dir=self.root / "grpo_trainer", output_dir=d / "checkpoint", rollouts_path=d / "rollouts.jsonl",
            seed=self.cfg.seed, progress=self.progress,
            engine_options={"batch_size": e.batch_size, "prefill_tokens": e.prefill_tokens, "shared_kv": e.shared_kv,
                            "continuous": e.continuous, "packed_weights": e.packed_weights},
        )
        write_json(d / "train_stats.json", stats)

    def evaluate(self, t: int) -> None:
        e, model = self.cfg.eval, self.model_after(t)
        result = evaluate(
            self.stages.engine(model), self.task, self.eval_q, model_name=model,
            plan_format=self.plan_format, n=e.n, temperature=e.temperature, top_p=e.top_p,
            max_new_tokens=e.max_new_tokens, plan_max_new_tokens=e.plan_max_new_tokens, fewshot=e.fewshot,
            seed=self.cfg.seed, progress=self.progress, partial=partial_path(self.iter_dir(t) / "eval"),
        )
        result.write(self.iter_dir(t) / "eval")
        self.record_iteration(t, result)

    def record_iteration(self, t: int, result: EvalResult, eval_seconds: float | None = None) -> None:
        """iter_t/metrics.json, metrics.jsonl and the tracking backends from iteration t's evaluation `result`;
        `eval_seconds`: the evaluation's time (default: its stage's so far; a study that copies an identical
        evaluation of another arm passes the copy's)."""
        examples = []  # a few accepted and rejected trajectories of this iteration, for the tracking backends
        if not t:
            sampled = {}
        elif self.grpo:
            sampled = rollout_metrics(self.iter_dir(t) / "rollouts.jsonl")
            if (self.iter_dir(t) / "rollouts.jsonl").is_file():
                examples = example_rows(read_records(self.iter_dir(t) / "rollouts.jsonl"))
        else:
            records = read_records(self.iter_dir(t) / "samples.jsonl")
            sampled, examples = sampling_metrics(records), example_rows(records)
        previous = self._metrics(t - 1) if t else {}
        s = result.summary
        seconds = self.stages.seconds
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
            "train_examples": read_text(self.iter_dir(t) / "train.jsonl").count("\n") if t and not self.grpo
            else sampled.get("trials", 0),
            "trained": self.stages.status(_key(t, "train")) == "done" if t else False,
            **({"reward_mean": sampled.get("reward_mean")} if self.grpo else {}),
            # the evaluation's stage is still running: its seconds so far (earlier attempts included, stops left out)
            "seconds": round(sum(v for k, v in seconds.items() if k.startswith(_key(t, "")) and k != _key(t, "eval"))
                             + (self.stages.elapsed(_key(t, "eval")) if eval_seconds is None else eval_seconds), 3),
        }
        if t:
            base = [json.loads(x) for x in read_text(self.iter_dir(0) / "eval" / "records.jsonl").splitlines()]
            delta, ci = paired_delta_ci(correct_by_question(base), correct_by_question(result.records))
            metrics.update(delta_vs_base=delta, delta_ci95=list(ci))
        write_json(self.iter_dir(t) / "metrics.json", metrics)
        self.stages.log_metrics(t, metrics)
        self.stages.log_table(t, "examples", examples)
        rows = [json.loads(read_text(p)) for p in self.root.glob("iter_*/metrics.json")]
        write_jsonl(self.root / "metrics.jsonl", sorted(rows, key=lambda r: r["iteration"]))


def _key(iteration: int, stage: str) -> str:
    """A stage's name in the manifest: iter_001/sample, iter_001/train, iter_001/eval."""
    return f"iter_{iteration:03d}/{stage}"
