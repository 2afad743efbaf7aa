"""The CodePlan recipe: annotate a corpus with pseudocode plans, fine-tune prompt -> plan -> response and the
vanilla baseline (the same pairs without plans), and evaluate both on a task.

Every stage leaves its output atomically (or, for the annotation, resumably), so running the same command again
after a kill carries on where it stopped. The run directory:
  corpus.jsonl                      prompt/response/answer pairs built from a task's worked solutions (optional)
  annotated.jsonl (+ side files)    kept {index, prompt, plan, response} records and the annotation statistics
  {code,none}/train.jsonl           chats trained on; {code,none}/checkpoint the trained model
  {code,none}/eval/                 records.jsonl and summary.json; base_{code,none}/eval for the untrained model
  summary.json                      annotation statistics, accuracies with 95% intervals, code - none difference
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from forethought import plans
from forethought.annotation import AnnotateConfig, annotate, sidecar
from forethought.config import OutputDir, StrictModel, load_config
from forethought.errors import UserError
from forethought.jsonl import read_jsonl, write_json, write_jsonl
from forethought.learners import train
from forethought.learners.sft import SFTConfig
from forethought.plans import code
from forethought.stats import correct_by_question, paired_delta_ci
from forethought.runs.config import EngineSettings
from forethought.runs.stages import StageRunner
from forethought.tracking import Backend, example_rows

Variant = Literal["code", "none"]


class CorpusTask(StrictModel):
    """Build the corpus from a task's worked solutions: prompt = question, response = reference, answer = gold."""

    name: str
    data: str | None = None
    split: str = "train"
    limit: int | None = Field(None, ge=1)
    options: dict = {}


class CodePlanEval(StrictModel):
    """The task both trained models are evaluated on, and how they generate."""

    task: str
    data: str | None = None
    split: str | None = None
    limit: int | None = Field(None, ge=1)
    options: dict = {}
    n: int = Field(1, ge=1)  # samples per question (n > 1: pass@k, maj@n and mean@n in summary.json)
    temperature: float = Field(0.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = 256
    plan_max_new_tokens: int = 256  # code variant: the one pass may write this many tokens more than the baseline


class CodePlanConfig(StrictModel):
    """One CodePlan experiment: annotator, corpus, annotation, training of each variant, evaluation."""

    model: str = "smollm2-135m"  # the model fine-tuned (each variant starts from it)
    annotator: str = "smollm2-135m"
    corpus_task: CorpusTask | None = None  # or give annotate.input
    annotate: AnnotateConfig = AnnotateConfig()
    engine: EngineSettings = EngineSettings()
    learner: SFTConfig = SFTConfig()
    eval: CodePlanEval
    variants: list[Variant] = ["code", "none"]
    eval_base: bool = False  # also evaluate the untrained model with each variant's prompts
    seed: int = 0
    report_to: list[Backend] = []  # tracking backends (tracking.py): tensorboard, wandb, mlflow, trackio
    output: OutputDir


def training_rows(records, variant: str, answer_type: str) -> list[dict]:
    """Annotated records as chats whose user turns are what `evaluate` sends: with the plan's block before the
    response (`code`, loss on plan and response) or the response alone (`none`, the vanilla baseline)."""
    rows = []
    for r in records:
        if variant == "code":
            messages = plans.code_messages(r["prompt"], answer_type)
            reply = code.render(r["plan"], r["response"])
        else:
            messages = plans.question_messages(r["prompt"], answer_type)
            reply = r["response"].strip()
        rows.append({"id": str(r["index"]), "messages": messages + [{"role": "assistant", "content": reply}]})
    return rows


class CodePlanRun:
    """Runs (or resumes) one CodePlan recipe in its output directory, stage by stage (runs/stages.py)."""

    def __init__(self, cfg: CodePlanConfig, *, progress: bool = True):
        from forethought.tasks import get_task

        self.cfg, self.progress = cfg, progress
        if cfg.corpus_task is None and cfg.annotate.input is None:
            raise UserError("give the corpus: annotate.input (a JSONL file or a Hub dataset id) or corpus_task")
        if not cfg.variants:
            raise UserError("variants is empty; list code, none or both")
        self.task = get_task(cfg.eval.task, **cfg.eval.options)
        self.eval_q = self.task.load(cfg.eval.data, split=cfg.eval.split, limit=cfg.eval.limit)
        if not self.eval_q:
            raise UserError(f"task '{cfg.eval.task}' gave no evaluation questions; check eval.*")
        self.stages = StageRunner(cfg.output, cfg, engine_settings=cfg.engine, progress=progress)
        self.root = self.stages.root

    def run(self) -> dict:
        with self.stages:
            self.stages.stage("annotate", self.annotate)
            for variant in self.cfg.variants:
                self.train(variant)
                self.evaluate(variant, str(self.root / variant / "checkpoint"))
            if self.cfg.eval_base:
                for variant in self.cfg.variants:
                    self.evaluate(variant, self.cfg.model, name=f"base_{variant}")
        return self.summary()

    def annotate(self) -> None:
        """Annotate the corpus into annotated.jsonl (resumable record by record; see annotation/pipeline.py)."""
        cfg, out = self.cfg.annotate, self.root / "annotated.jsonl"
        if cfg.input is None:
            corpus = self.root / "corpus.jsonl"
            if not corpus.exists():
                write_jsonl(corpus, self._task_corpus())
            cfg = cfg.model_copy(update=dict(input=str(corpus), prompt_field="prompt", response_field="response",
                                             answer_field="answer"))
        annotate(self.stages.engine(self.cfg.annotator), cfg, out, model_name=self.cfg.annotator,
                 progress=self.progress)
        self.stages.log_metrics(0, _load(sidecar(out, "stats.json")), prefix="annotation")
        self.stages.log_table(0, "examples/annotated", [
            {"question": r.get("prompt"), "plan": r.get("plan"), "solution": r.get("response"), "verdict": "kept"}
            for _, r in list(read_jsonl(out))[:5]])

    def _task_corpus(self) -> list[dict]:
        from forethought.tasks import get_task

        c = self.cfg.corpus_task
        examples = get_task(c.name, **c.options).load(c.data, split=c.split, limit=c.limit)
        if any(ex.reference is None for ex in examples):
            raise UserError(f"task '{c.name}' has no worked solutions to annotate; give annotate.input instead")
        return [{"prompt": ex.question, "response": ex.reference, "answer": ex.gold} for ex in examples]

    def train(self, variant: str) -> None:
        """Fine-tune the base model on the kept pairs, with plans (`code`) or without (`none`)."""
        d = self.root / variant

        def fit() -> None:
            records = [r for _, r in read_jsonl(self.root / "annotated.jsonl")]
            rows = training_rows(records, variant, self.task.answer_type)
            if not rows:
                raise UserError("the annotation kept no records, so there is nothing to train on; see "
                                f"{sidecar(self.root / 'annotated.jsonl', 'stats.json')} for why they were filtered")
            write_jsonl(d / "train.jsonl", rows)
            stats = train("sft", self.cfg.model, rows, d / "checkpoint", self.cfg.learner, seed=self.cfg.seed,
                          progress=self.progress)
            write_json(d / "train_stats.json", stats.model_dump())

        self.stages.stage(f"train_{variant}", fit, output=d / "checkpoint", trains=True)

    def evaluate(self, variant: str, model: str, name: str | None = None) -> None:
        """Evaluate `model` with `variant`'s prompts into {name}/eval/."""
        from forethought.evaluate import evaluate, partial_path

        def run() -> None:
            v = self.cfg.eval
            result = evaluate(self.stages.engine(model), self.task, self.eval_q, model_name=model,
                              plan_format=variant, n=v.n, temperature=v.temperature, top_p=v.top_p,
                              max_new_tokens=v.max_new_tokens,
                              plan_max_new_tokens=v.plan_max_new_tokens, seed=self.cfg.seed,
                              progress=self.progress, partial=partial_path(self.root / (name or variant) / "eval"))
            result.write(self.root / (name or variant) / "eval")
            self.stages.log_metrics(0, result.summary, prefix=f"eval/{name or variant}")
            self.stages.log_table(0, f"examples/{name or variant}", example_rows(result.records))

        self.stages.stage(f"eval_{name or variant}", run)

    def summary(self) -> dict:
        """Annotation statistics, each model's accuracy with its 95% interval, and code minus none (paired)."""
        ann = _load(sidecar(self.root / "annotated.jsonl", "stats.json"))
        out = {
            "annotation": {k: ann.get(k) for k in ("processed", "kept", "kept_fraction", "filtered", "mean_words",
                                                    "mean_plan_tokens", "tokens_generated", "engine_seconds",
                                                    "seconds", "records_per_second", "tokens_per_second")},
            "models": {}, "seconds": self.stages.seconds,
            "total_seconds": round(sum(self.stages.seconds.values()), 1),
        }
        names = list(self.cfg.variants) + ([f"base_{v}" for v in self.cfg.variants] if self.cfg.eval_base else [])
        correct = {}
        for name in names:
            s = _load(self.root / name / "eval" / "summary.json")
            trained = _load(self.root / name / "train_stats.json")
            out["models"][name] = {
                "plan_format": s["plan_format"], "accuracy": s["accuracy"], "ci95": s["ci95"], "n": s["n"],
                "unparseable": s["unparseable"], "truncated": s["truncated"],
                "tokens_generated": s["tokens_generated"], "train": trained or None,
            }
            records = [r for _, r in read_jsonl(self.root / name / "eval" / "records.jsonl")]
            correct[name] = correct_by_question(records)
        if "code" in correct and "none" in correct:
            delta, ci = paired_delta_ci(correct["none"], correct["code"])
            out["code_minus_none"] = {"delta": delta, "ci95": list(ci)}
        write_json(self.root / "summary.json", out)
        return out


def _load(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def run_codeplan(recipe: str | Path, overrides: list[str], *, progress: bool = True) -> dict:
    """Load a CodePlan recipe (YAML with dotted overrides) and run or resume it."""
    return CodePlanRun(load_config(CodePlanConfig, recipe, overrides), progress=progress).run()
