"""One evaluation of the untrained model per study, not one per arm: arms whose iteration 0 (`iter_000/eval`) has
identical inputs get a copy of the first one's outputs instead of evaluating the same model again.

The inputs are everything iteration 0's evaluation depends on, taken from the arm's validated run config
(`eval_inputs`): the model, the task section (name, data, options, splits, limits), the eval settings, the plan
format the run evaluates with, the engine settings that can change what is generated (all but those that only say
how requests travel: API key variable, retries, timeout, Ray address and per-replica resources), the prompts'
version, and the seed when it matters (sampled evaluation: temperature > 0 or n > 1; greedy evaluation does not
depend on it, so seeds share it). CPL arms (whose base evaluation is `eval/base`, in steps format) are not reused.

The copy is a stage of the arm's own stage runner (runs/stages.py): the source's `iter_000/eval` directory is copied
beside the target and renamed into place, then the run loop's own `Runner.record_iteration` writes iteration 0's
metrics.json, metrics.jsonl and tracking from it (paired deltas of later iterations read the copied records), and
the manifest marks `iter_000/eval` done with `reused: {iter_000/eval: {from, key, seconds}}` (`seconds`: what the
original evaluation took, not spent again). The stage's own seconds, and iteration 0's `seconds` metric, are the
copy's. A copy killed half-way is removed and redone on resume (the stage is marked only after it).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

from forethought.evaluate import EvalResult
from forethought.jsonl import read_jsonl
from forethought.plans.prompts import PROMPTS_VERSION
from forethought.runs.stages import read_manifest, remove_partials

EVAL_STAGE = "iter_000/eval"
# engine settings that only say how requests travel or where replicas run, never what is generated
NO_OUTPUT_EFFECT = frozenset({"api_key_env", "max_retries", "timeout", "ray_address", "replica_cpus", "replica_gpus",
                              "enable_sleep_mode"})


def eval_inputs(cfg) -> dict | None:
    """What a run arm's iteration-0 evaluation depends on (None for a CPL arm: not reused)."""
    if hasattr(cfg, "rounds"):
        return None
    grpo = getattr(cfg.learner, "kind", "sft") == "grpo"
    fmt = cfg.learner.plan_format if grpo else cfg.sampler.plan_format
    e = cfg.eval.model_dump(mode="json")
    if fmt == "none":  # the no-plan prompt has no plan turn (its summary records plan_max_new_tokens as None)
        e.pop("plan_max_new_tokens")
    engine = {k: v for k, v in cfg.engine.options().items() if k not in NO_OUTPUT_EFFECT}
    return {
        "model": cfg.model, "task": cfg.task.model_dump(mode="json"), "eval": e, "plan_format": fmt,
        "engine": {"kind": cfg.engine.kind, **engine}, "prompts_version": PROMPTS_VERSION,
        "seed": cfg.seed if cfg.eval.temperature > 0 or cfg.eval.n > 1 else None,
    }


def eval_key(cfg) -> str | None:
    """A short hash of `eval_inputs` (None for a CPL arm)."""
    inputs = eval_inputs(cfg)
    if inputs is None:
        return None
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _manifest(run_dir: Path) -> dict:
    try:
        return read_manifest(run_dir)
    except (OSError, ValueError):
        return {}


def finished_eval(run_dir: Path) -> bool:
    """Whether a run directory's iteration-0 evaluation is done (manifest) and its outputs are there."""
    d = run_dir / "iter_000" / "eval"
    return (_manifest(run_dir).get("stages", {}).get(EVAL_STAGE) == "done" and (d / "summary.json").is_file()
            and (d / "records.jsonl").is_file())


def reuse_eval(runner, source: Path, root: Path, key: str) -> None:
    """The stage function that gives `runner`'s run its iteration-0 evaluation from run directory `source`."""
    start = time.perf_counter()
    src, dst = source / "iter_000" / "eval", runner.iter_dir(0) / "eval"
    remove_partials(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.partial-reuse"
    shutil.copytree(src, tmp)
    if dst.exists():  # what an unfinished evaluation of its own left (its stage is not done)
        shutil.rmtree(dst)
    tmp.rename(dst)
    result = EvalResult(records=[r for _, r in read_jsonl(dst / "records.jsonl")],
                        summary=json.loads((dst / "summary.json").read_text(encoding="utf-8")))
    previous = _manifest(source)
    origin = previous.get("reused", {}).get(EVAL_STAGE)  # the source's own copy: name the one that evaluated
    if origin is None:
        origin = {"from": source.resolve().relative_to(root.resolve()).as_posix(),
                  "seconds": previous.get("seconds", {}).get(EVAL_STAGE)}
    runner.record_iteration(0, result, eval_seconds=time.perf_counter() - start)
    # saved with the stage's seconds and status when it ends
    runner.stages.annotate("reused", EVAL_STAGE, {"from": origin["from"], "key": key, "seconds": origin["seconds"]})
