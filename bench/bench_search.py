"""Benchmark: CPL tree expansions per second, many trees advanced together vs one tree at a time.

Same engine (hf, embedded model), same questions, same search settings, in one process: `run_search` with
`batched=True` gathers every tree's leaf into one engine call per round; `batched=False` makes one call per
expansion. Both are seeded per node, so they grow the same trees unless batch composition changes rounding.
Run: python bench/bench_search.py [--model smollm2-135m] [--questions 8] [--iterations 3] [--max-new-tokens 64]
       [--batch-sizes 64,256]   (the engine's batch_size for the batched search, one row each; the baseline's calls
                                 hold 3-5 rows, so its batch size does not matter)
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from forethought.engines.hf import HFEngine
from forethought.search import SearchConfig, run_search
from forethought.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-sizes", default="64", help="comma-separated engine batch sizes for the batched rows")
    args = parser.parse_args()

    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = task.load(split="test", limit=args.questions)
    cfg = SearchConfig(iterations=args.iterations, max_new_tokens=args.max_new_tokens, demos=1,
                       trees_per_batch=args.questions)
    engine = HFEngine(args.model, device=args.device, batch_size=64)
    run_search(engine, task, examples[:1], cfg.model_copy(update={"iterations": 1}))  # warm-up
    rows, trees = [], {}
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    arms = [("one tree at a time (baseline)", False, 64)] + [
        (f"all trees together (batch {b})", True, b) for b in sizes]
    for label, batched, batch_size in arms:
        engine.batch_size = batch_size
        start = time.perf_counter()
        trees[label], stats = run_search(engine, task, examples, cfg, batched=batched)
        seconds = time.perf_counter() - start
        rows.append((label, stats.engine_calls, stats.expansions, stats.tokens, seconds))
        print(f"{label}: {stats.expansions / seconds:.2f} expansions/s, {stats.tokens / seconds:.1f} tok/s", flush=True)
    same = all([t.to_json() for t in trees[arms[0][0]]] == [t.to_json() for t in trees[a[0]]] for a in arms)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, {args.model}, {args.questions} questions x {args.iterations} iterations, 5/3 children, "
          f"up to {args.max_new_tokens} tokens per action; identical trees every way: {same}\n")
    print("| search | engine calls | expansions | tokens | seconds | expansions/s | vs baseline |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    base = rows[0][2] / rows[0][4]
    for label, calls, expansions, tokens, seconds in rows:
        rate = expansions / seconds
        print(f"| {label} | {calls} | {expansions} | {tokens} | {seconds:.1f} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
