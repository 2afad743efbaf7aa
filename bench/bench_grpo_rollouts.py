"""Benchmark: GRPO rollouts through Forethought's hf engine on the live policy (`learner.rollout: engine`, the
default) against TRL's own transformers generation (`learner.rollout: trl`), in one process, same settings.

Each way trains the same few GRPO optimizer steps from the same base model on the same training questions (the
quickstart's settings unless overridden) with `train_grpo_iteration`, the function a run calls. Every call of
`GRPOTrainer._generate` (one per optimizer step: prompts in, completion token ids out, for either way) is timed, and
its completion tokens counted; the figure is generated tokens per second of rollout time, and the ratio of the two.
Whole-step seconds (rollouts + reward + loss + backward) are printed too. The two ways draw different samples (their
random streams differ), so their completion lengths differ a little; tokens/s is the figure that compares them.

Run: python bench/bench_grpo_rollouts.py [--recipe recipes/quickstart_grpo.yaml] [--steps 3] [--order engine,trl]
     [--threads N] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def measure(recipe, way: str, steps: int, work: Path, seed: int) -> dict:
    """Train `steps` GRPO steps with rollouts `way`; time every `_generate` call (one per step)."""
    from trl import GRPOTrainer

    from forethought.learners.grpo import train_grpo_iteration
    from forethought.tasks import get_task

    task = get_task(recipe.task.name, **recipe.task.options)
    questions = task.load(recipe.task.data, split=recipe.task.train_split, limit=recipe.task.train_limit)
    cfg = recipe.learner.model_copy(update={"rollout": way, "steps_per_iteration": steps, "save_steps": steps})
    calls: list[tuple[float, int, int]] = []
    original = GRPOTrainer._generate

    def timed(self, prompts):
        start = time.perf_counter()
        out = original(self, prompts)
        calls.append((time.perf_counter() - start, sum(len(ids) for ids in out[1]), len(out[1])))
        return out

    GRPOTrainer._generate = timed
    d = work / way
    start = time.perf_counter()
    try:
        e = recipe.engine
        stats = train_grpo_iteration(
            recipe.model, task, questions, cfg, iteration=1, iterations=1, trainer_dir=d / "trainer",
            output_dir=d / "checkpoint", rollouts_path=d / "rollouts.jsonl", seed=seed, progress=False,
            engine_options={"batch_size": e.batch_size, "prefill_tokens": e.prefill_tokens, "shared_kv": e.shared_kv})
    finally:
        GRPOTrainer._generate = original
    total = time.perf_counter() - start
    rows = [json.loads(x) for x in (d / "rollouts.jsonl").read_text().splitlines()]
    seconds, tokens = sum(c[0] for c in calls), sum(c[1] for c in calls)
    return {"way": way, "steps": len(calls), "completions": sum(c[2] for c in calls), "tokens": tokens,
            "rollout_seconds": round(seconds, 2), "tokens_per_s": round(tokens / seconds, 1),
            "per_step_rollout_seconds": [round(c[0], 2) for c in calls],
            "train_seconds": round(total, 1), "mean_completion_tokens": round(tokens / sum(c[2] for c in calls), 1),
            "truncated": sum(r.get("finish_reason") == "length" or (r["tokens"] >= cfg.max_completion_length)
                             for r in rows),
            "reward_mean": round(sum(r["reward"] for r in rows) / len(rows), 3), "train_stats": stats}


def main() -> None:
    from forethought.config import load_config
    from forethought.runs.config import RunConfig

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="recipes/quickstart_grpo.yaml")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--order", default="engine,trl", help="ways to run, in this order (engine, trl)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = load_config(RunConfig, Path(args.recipe), [])
    work = Path(tempfile.mkdtemp(prefix="bench_grpo_"))
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; recipe {args.recipe}: G={recipe.learner.num_generations}, "
          f"{recipe.learner.questions_per_step} questions/step, T={recipe.learner.temperature}, "
          f"max {recipe.learner.max_completion_length} tokens, {args.steps} steps per way", flush=True)
    results = []
    try:
        for way in args.order.split(","):
            r = measure(recipe, way, args.steps, work, recipe.seed)
            results.append(r)
            print(f"{way:>6}: {r['tokens']:,} tokens in {r['completions']} completions, rollouts "
                  f"{r['rollout_seconds']:.1f} s ({r['tokens_per_s']:.1f} tokens/s; per step "
                  f"{r['per_step_rollout_seconds']}), whole steps {r['train_seconds']:.1f} s, mean completion "
                  f"{r['mean_completion_tokens']} tokens, {r['truncated']} at the limit, reward {r['reward_mean']}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    by = {r["way"]: r for r in results}
    if "engine" in by and "trl" in by:
        print(f"engine / trl: {by['engine']['tokens_per_s'] / by['trl']['tokens_per_s']:.2f}x tokens/s, "
              f"whole steps {by['trl']['train_seconds'] / by['engine']['train_seconds']:.2f}x faster")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
