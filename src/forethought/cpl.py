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
import time
from pathlib import Path

from pydantic import Field

from forethought.config import StrictModel, load_config
from forethought.errors import UserError
from forethought.jsonl import read_jsonl, write_json, write_jsonl
from forethought.learners.sft import SFTConfig, train_sft
from forethought.learners.step_apo import StepAPOConfig, train_step_apo
from forethought.learners.value_model import ValueConfig, ValueModel, train_value_model
from forethought.report.metrics import correct_by_question, paired_delta_ci
from forethought.report.tree import trees_html
from forethought.runs.config import EngineSettings, EvalSettings, TaskSettings
from forethought.search import ExtractConfig, SearchConfig, Tree, extract, run_search


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
    output: str


class CplRun:
    """Runs (or resumes) one CPL recipe in its output directory."""

    def __init__(self, cfg: CplConfig, *, progress: bool = True):
        from forethought.tasks import get_task

        self.cfg, self.progress, self.root = cfg, progress, Path(cfg.output)
        t = cfg.task
        self.task = get_task(t.name, **t.options)
        self.train_q = self.task.load(t.data, split=t.train_split, limit=t.train_limit)
        self.eval_q = self.task.load(t.data, split=t.eval_split, limit=t.eval_limit)
        if not self.train_q or not self.eval_q:
            raise UserError(f"task '{t.name}' gave no training or evaluation questions; check task.*")
        self.root.mkdir(parents=True, exist_ok=True)
        self.seconds = _load(self.root / "stages.json")

    def run(self) -> dict:
        if self.cfg.eval_base:
            self.evaluate(self.cfg.model, "base")
        for k in range(1, self.cfg.rounds + 1):
            d = self.root / f"r{k}"
            policy = self.cfg.model if k == 1 else str(self.root / f"r{k - 1}" / "apo" / "checkpoint")
            value = self.root / f"r{k - 1}" / "value" / "checkpoint" if k > 1 else None
            self.search(k, policy, value)
            sft = self.cfg.sft if k == 1 else self.cfg.sft.model_copy(update={"epochs": self.cfg.sft_round2_epochs})
            self.train(d / "sft", lambda out: train_sft(self.cfg.model, _rows(d / "sft.jsonl"), out, sft,
                                                          seed=self.cfg.seed, progress=self.progress))
            start = str(d / "sft" / "checkpoint")
            self.train(d / "apo", lambda out: train_step_apo(start, _rows(d / "pairs.jsonl"), out, self.cfg.step_apo,
                                                             seed=self.cfg.seed, progress=self.progress))
            names = ["sft", "apo"]
            if self.cfg.step_dpo_ablation:
                dpo = self.cfg.step_apo.model_copy(update={"alpha": 0.0})
                self.train(d / "dpo", lambda out: train_step_apo(start, _rows(d / "pairs.jsonl"), out, dpo,
                                                                 seed=self.cfg.seed, progress=self.progress))
                names.append("dpo")
            if k < self.cfg.rounds:
                self.train(d / "value", lambda out: train_value_model(start, _rows(d / "value.jsonl"), out,
                                                                      self.cfg.value, seed=self.cfg.seed,
                                                                      progress=self.progress))
            for name in names:
                self.evaluate(str(d / name / "checkpoint"), f"r{k}_{name}")
        return self.summary()

    def _timed(self, stage: str, start: float) -> None:
        self.seconds[stage] = round(time.perf_counter() - start + self.seconds.get(stage, 0.0), 3)
        write_json(self.root / "stages.json", self.seconds)

    def _engine(self, model: str):
        from forethought.engines import get_engine

        return get_engine(self.cfg.engine.kind, model, **self.cfg.engine.options())

    def search(self, k: int, policy: str, value: Path | None) -> None:
        d = self.root / f"r{k}"
        if (d / "search.json").exists():
            return
        start = time.perf_counter()
        cfg = self.cfg.search if k == 1 else self.cfg.search.model_copy(
            update={"iterations": self.cfg.round2_iterations})
        engine = self._engine(policy)
        value_fn = ValueModel.load(value) if value is not None else None
        trees, stats = run_search(engine, self.task, self.train_q, cfg, out=d / "trees.jsonl", value_fn=value_fn)
        del engine, value_fn
        gc.collect()
        sft, pairs, values = extract(trees, self.train_q, self.task.answer_type, self.cfg.extract)
        for name, rows in (("sft", sft), ("pairs", pairs), ("value", values)):
            write_jsonl(d / f"{name}.jsonl", rows)
        (d / "trees.html").write_text(trees_html(trees, {e.id: e.question for e in self.train_q}, f"CPL round {k}"),
                                      encoding="utf-8")
        write_json(d / "search.json", {**stats.model_dump(), "sft_rows": len(sft), "pairs": len(pairs),
                                       "value_rows": len(values)})
        self._timed(f"r{k}_search", start)

    def train(self, d: Path, fit) -> None:
        if (d / "checkpoint").exists():
            return
        for stale in d.glob(".checkpoint.partial-*"):  # left by a training that was killed
            shutil.rmtree(stale, ignore_errors=True)
        start = time.perf_counter()
        stats = fit(d / "checkpoint")
        write_json(d / "train_stats.json", stats.model_dump())
        self._timed(f"{d.parent.name}_{d.name}", start)

    def evaluate(self, model: str, name: str) -> None:
        from forethought.evaluate import evaluate

        d = self.root / "eval" / name
        if (d / "summary.json").exists():
            return
        start = time.perf_counter()
        engine, e = self._engine(model), self.cfg.eval
        result = evaluate(engine, self.task, self.eval_q, model_name=model, plan_format="steps", n=e.n,
                          temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens,
                          plan_max_new_tokens=e.plan_max_new_tokens, seed=self.cfg.seed, progress=self.progress)
        del engine
        gc.collect()
        result.write(d)
        self._timed(f"eval_{name}", start)

    def summary(self) -> dict:
        """Each model's accuracy with its 95% interval, paired deltas, and what each round's search spent."""
        out: dict = {"models": {}, "deltas": {}, "search": {}, "seconds": self.seconds,
                     "total_seconds": round(sum(self.seconds.values()), 1)}
        correct = {}
        for d in sorted((self.root / "eval").iterdir()):
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
