"""The CPL recipe: plan-step MCTS -> SFT -> Step-APO (and a step-DPO ablation) -> value model, over 1 or 2 rounds.

Round 1 searches with the base model and terminal rewards; round 2 searches with round 1's Step-APO policy and
its value model, then SFT restarts from the base model and Step-APO continues from it. Every stage leaves its
output atomically (the search writes trees after each batch), so the same command resumes after a kill:
  r{k}/trees.jsonl, sft.jsonl, pairs.jsonl, value.jsonl, search.json   the search and what it yields
  r{k}/trees.html                                                       the trees, expandable, with N/Q/values
  r{k}/{sft,apo,dpo,value}/checkpoint                                   trained models (dpo: alpha = 0)
  eval/{base,r{k}_sft,r{k}_apo,r{k}_dpo}/                              records.jsonl and summary.json
  summary.json                                                          accuracies, paired deltas, search tokens
"""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

from pydantic import Field

from forethought.config import OutputDir, StrictModel, load_config
from forethought.errors import UserError
from forethought.jsonl import read_jsonl, write_json, write_jsonl
from forethought.learners import train
from forethought.learners.sft import SFTConfig
from forethought.learners.step_apo import StepAPOConfig
from forethought.learners.value_model import ValueConfig, ValueModel
from forethought.stats import correct_by_question, paired_delta_ci
from forethought.report.tree import trees_html
from forethought.runs.config import EngineSettings, EvalSettings, TaskSettings
from forethought.runs.stages import StageRunner
from forethought.search import ExtractConfig, SearchConfig, Tree, extract, run_search
from forethought.tracking import Backend, example_rows


class CplConfig(StrictModel):
    """One CPL experiment (paper: 2 rounds; 200 then 100 search iterations per question)."""

    model: str = "smollm2-135m"
    task: TaskSettings
    engine: EngineSettings = EngineSettings()
    search: SearchConfig = SearchConfig()
    round2_iterations: int = Field(100, ge=1)
    extract: ExtractConfig = ExtractConfig()
    sft: SFTConfig = SFTConfig(learning_rate=1e-5, epochs=5, lora=None)
    sft_round2_epochs: float = 3.0
    step_apo: StepAPOConfig = StepAPOConfig()
    value: ValueConfig = ValueConfig()
    rounds: int = Field(2, ge=1, le=2)
    step_dpo_ablation: bool = True  # also train alpha = 0 (step-level DPO) on the same pairs, in every round
    eval: EvalSettings = EvalSettings()
    eval_base: bool = True
    seed: int = 0
    report_to: list[Backend] = []  # tracking backends (tracking.py): tensorboard, wandb, mlflow, trackio
    output: OutputDir


class CplRun:
    """Runs (or resumes) one CPL recipe in its output directory, stage by stage (runs/stages.py)."""

    def __init__(self, cfg: CplConfig, *, progress: bool = True):
        from forethought.tasks import get_task

        self.cfg, self.progress = cfg, progress
        t = cfg.task
        self.task = get_task(t.name, **t.options)
        self.train_q = self.task.load(t.data, split=t.train_split, limit=t.train_limit)
        self.eval_q = self.task.load(t.data, split=t.eval_split, limit=t.eval_limit)
        if not self.train_q or not self.eval_q:
            raise UserError(f"task '{t.name}' gave no training or evaluation questions; check task.*")
        self.stages = StageRunner(cfg.output, cfg, engine_settings=cfg.engine, growable=("rounds",),
                                  progress=progress)
        self.root = self.stages.root
        self._evaluated: dict[str, str] = {}  # model -> the first evaluation of it (eval/ name), for copies

    def run(self) -> dict:
        with self.stages:
            self.retrain_lost_checkpoints()
            if self.cfg.eval_base:
                self.evaluate(self.cfg.model, "base")
            for k in range(1, self.cfg.rounds + 1):
                self.round(k)
        return self.summary()

    def retrain_lost_checkpoints(self) -> None:
        """A trained model whose checkpoint is gone trains again when a stage still to run uses it (runs/loop.py)."""
        rounds, ablation = self.cfg.rounds, self.cfg.step_dpo_ablation
        for k in range(1, rounds + 1):
            later = [f"r{k + 1}/search"] if k < rounds else []  # the next round searches with apo and value
            users = {"sft": [f"r{k}/apo", f"eval/r{k}_sft"] + [f"r{k}/dpo"] * ablation
                     + [f"r{k}/value"] * bool(later),
                     "apo": [f"eval/r{k}_apo"] + later, "dpo": [f"eval/r{k}_dpo"] * ablation, "value": later}
            for name, needs in users.items():
                stage = f"r{k}/{name}"
                needed = any(not self.stages.done(n) for n in needs)
                self.stages.redo_if_lost(stage, self.root / f"r{k}" / name / "checkpoint", needed)

    def round(self, k: int) -> None:
        """Search, SFT from base, Step-APO (and step DPO) from SFT, the value model for the next round, evaluations."""
        cfg = self.cfg
        policy = cfg.model if k == 1 else self.model_of(k - 1, "apo")
        value = self.model_of(k - 1, "value") if k > 1 else None
        self.search(k, policy, Path(value) if value else None)
        sft = cfg.sft if k == 1 else cfg.sft.model_copy(update={"epochs": cfg.sft_round2_epochs})
        self.train(k, "sft", "sft", cfg.model, "sft.jsonl", sft)
        start = self.model_of(k, "sft")
        self.train(k, "apo", "step_apo", start, "pairs.jsonl", cfg.step_apo)
        names = ["sft", "apo"]
        if cfg.step_dpo_ablation:
            self.train(k, "dpo", "step_apo", start, "pairs.jsonl", cfg.step_apo.model_copy(update={"alpha": 0.0}))
            names.append("dpo")
        if k < cfg.rounds:
            self.train(k, "value", "value", start, "value.jsonl", cfg.value)
        for name in names:
            self.evaluate(self.model_of(k, name), f"r{k}_{name}")

    def model_of(self, k: int, name: str) -> str | None:
        """The model stage r{k}/{name} leaves: its checkpoint or, when the search gave it nothing to train on
        (skipped), the model it starts from: the base model for SFT, the SFT model for Step-APO and DPO, and no
        value model (the next round searches with terminal rewards only)."""
        if self.stages.status(f"r{k}/{name}") != "skipped":
            return str(self.root / f"r{k}" / name / "checkpoint")
        return None if name == "value" else self.cfg.model if name == "sft" else self.model_of(k, "sft")

    def search(self, k: int, policy: str, value: Path | None) -> None:
        """Round k's plan-step MCTS (resumable tree by tree), then the SFT paths, pairs and value targets it yields."""
        def run() -> None:
            d = self.root / f"r{k}"
            cfg = self.cfg.search if k == 1 else self.cfg.search.model_copy(
                update={"iterations": self.cfg.round2_iterations})
            if cfg.max_tokens is not None and k > 1:  # search.max_tokens per round: what earlier rounds left unspent
                before = sum(_load(self.root / f"r{j}" / "search.json").get("tokens", 0) for j in range(1, k))
                cfg = cfg.model_copy(update={"max_tokens": max(0, k * cfg.max_tokens - before)})  # (or overshot) carries
            engine = self.stages.engine(policy)
            value_fn = ValueModel.load(value) if value is not None else None
            try:
                trees, stats = run_search(engine, self.task, self.train_q, cfg, out=d / "trees.jsonl",
                                          value_fn=value_fn, seed=self.cfg.seed)
            finally:
                del value_fn
                gc.collect()
            sft, pairs, values = extract(trees, self.train_q, self.task.answer_type, self.cfg.extract)
            for name, rows in (("sft", sft), ("pairs", pairs), ("value", values)):
                write_jsonl(d / f"{name}.jsonl", rows)
            (d / "trees.html").write_text(
                trees_html(trees, {e.id: e.question for e in self.train_q}, f"CPL round {k}"), encoding="utf-8")
            write_json(d / "search.json", {**stats.model_dump(), "sft_rows": len(sft), "pairs": len(pairs),
                                           "value_rows": len(values)})
            self.stages.log_metrics(k, {**stats.model_dump(), "sft_rows": len(sft), "pairs": len(pairs),
                                        "value_rows": len(values)}, prefix="search")

        self.stages.stage(f"r{k}/search", run)

    def train(self, k: int, name: str, kind: str, model: str, data: str, cfg) -> None:
        """Train r{k}/{name}/checkpoint with learner `kind` on r{k}/{data} (in-process, or under accelerate launch)."""
        d = self.root / f"r{k}" / name

        def fit() -> str | None:
            rows = _rows(self.root / f"r{k}" / data)
            if not rows:  # the search found no correct path (or no sibling pair): the model stays as it was,
                return "skipped"  # as an EM iteration that accepted nothing (runs/loop.py)
            stats = train(kind, model, rows, d / "checkpoint", cfg, seed=self.cfg.seed, progress=self.progress)
            write_json(d / "train_stats.json", stats.model_dump())
            return None

        self.stages.stage(f"r{k}/{name}", fit, output=d / "checkpoint", trains=True)

    def evaluate(self, model: str, name: str) -> None:
        """Zero-shot evaluation of `model` in the step format into eval/{name}/; a model this run has evaluated
        already (a skipped stage leaves the model it started from) gets a copy of that evaluation, which the same
        prompts, settings and seeds would repeat answer for answer."""
        from forethought.evaluate import evaluate, partial_path

        earlier = self._evaluated.get(str(model))
        step = 0 if name == "base" else int(name[1:].split("_")[0])  # the round (r2_apo -> 2)

        def run() -> None:
            if earlier is not None:
                (self.root / "eval" / name).mkdir(parents=True, exist_ok=True)
                for file in ("summary.json", "records.jsonl"):
                    shutil.copyfile(self.root / "eval" / earlier / file, self.root / "eval" / name / file)
                self.stages.annotate("reused", f"eval/{name}", {"from": f"eval/{earlier}"})
                self.stages.log_metrics(step, _load(self.root / "eval" / name / "summary.json"), prefix=f"eval/{name}")
                return
            e = self.cfg.eval
            result = evaluate(self.stages.engine(model), self.task, self.eval_q, model_name=model,
                              plan_format="steps", n=e.n, temperature=e.temperature, top_p=e.top_p,
                              max_new_tokens=e.max_new_tokens, plan_max_new_tokens=e.plan_max_new_tokens,
                              fewshot=e.fewshot, seed=self.cfg.seed, progress=self.progress,
                              partial=partial_path(self.root / "eval" / name))
            result.write(self.root / "eval" / name)
            self.stages.log_metrics(step, result.summary, prefix=f"eval/{name}")
            self.stages.log_table(step, f"examples/{name}", example_rows(result.records))

        self.stages.stage(f"eval/{name}", run)
        if self.stages.done(f"eval/{name}"):
            self._evaluated.setdefault(str(model), name)

    def summary(self) -> dict:
        """Each model's accuracy with its 95% interval, paired deltas, and what each round's search spent."""
        seconds = self.stages.seconds
        out: dict = {"models": {}, "deltas": {}, "search": {}, "seconds": seconds,
                     "total_seconds": round(sum(seconds.values()), 1)}
        correct = {}
        eval_dir = self.root / "eval"
        for d in sorted(eval_dir.iterdir()) if eval_dir.is_dir() else ():
            s = _load(d / "summary.json")
            if s:
                out["models"][d.name] = {k: s[k] for k in ("accuracy", "ci95", "n", "unparseable", "truncated",
                                                           "tokens_generated")}
                correct[d.name] = correct_by_question([r for _, r in read_jsonl(d / "records.jsonl")])
        for k in range(1, self.cfg.rounds + 1):
            out["search"][f"r{k}"] = _load(self.root / f"r{k}" / "search.json")
            for a, b in (("sft", "apo"), ("sft", "dpo"), ("dpo", "apo")):
                if f"r{k}_{a}" in correct and f"r{k}_{b}" in correct:
                    delta, ci = paired_delta_ci(correct[f"r{k}_{a}"], correct[f"r{k}_{b}"])
                    out["deltas"][f"r{k}_{b}_minus_{a}"] = {"delta": delta, "ci95": list(ci)}
            if "base" in correct and f"r{k}_apo" in correct:
                delta, ci = paired_delta_ci(correct["base"], correct[f"r{k}_apo"])
                out["deltas"][f"r{k}_apo_minus_base"] = {"delta": delta, "ci95": list(ci)}
        write_json(self.root / "summary.json", out)
        return out


def _rows(path: Path) -> list[dict]:
    return [r for _, r in read_jsonl(path)]


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def run_cpl(recipe: str | Path, overrides: list[str], *, progress: bool = True) -> dict:
    """Load a CPL recipe (YAML with dotted overrides) and run or resume it."""
    return CplRun(load_config(CplConfig, recipe, overrides), progress=progress).run()


__all__ = ["CplConfig", "CplRun", "Tree", "run_cpl"]
