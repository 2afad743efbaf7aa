"""Benchmark: continuous batching (finished rows' slots refilled in place) vs batch after batch, side by side.

Workload: the quickstart's evaluation, as `forethought eval` makes it: 100 synthetic arithmetic questions
(`synthetic/arithmetic`, difficulty 1, seed 0, the eval split, first 100), plan format none, SmolLM2-135M in fp32,
batch 64, greedy, eos on, up to 96 new tokens. With --gsm8k PATH (or $FORETHOUGHT_DATA/gsm8k/test.jsonl) it also
runs bench_sampling's sampled GSM8K workload (192 chat prompts, temperature 0.7, up to 192 tokens); with --mixed N
a workload whose rows end at very different times (N sampled answers, token limits geometric with mean 60).
Each way runs --repeats times, alternating, best kept. Prints seconds, tokens/s, the ratio, whether outputs are
identical, and decode steps and forward passes per way.

    python bench/bench_continuous.py [--limit 100] [--batch 64] [--repeats 2] [--gsm8k PATH] [--mixed 512]
                                      [--refill 1,8,16]
    python bench/bench_continuous.py --memory [--continuous]   # peak RSS of one evaluation in a child process
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from forethought.engines import Request
from forethought.engines.hf import HFEngine


def eval_requests(limit: int, max_new_tokens: int) -> list[Request]:
    """The requests `forethought eval -t synthetic/arithmetic --task-opt difficulty=1 --task-opt seed=0 --limit N
    --plan-format none --max-new-tokens M` sends its engine (greedy)."""
    from forethought.evaluate import evaluate
    from forethought.tasks import get_task

    class Recorder:
        name = "recorder"

        def __init__(self):
            self.requests = []

        def generate(self, requests, progress=True):
            from forethought.engines.base import Completion, Sample

            self.requests += requests
            return [Completion(samples=[Sample(text="", tokens=0, finish_reason="length")] * r.n, prompt_tokens=0)
                    for r in requests]

    task = get_task("synthetic/arithmetic", difficulty=1, seed=0)
    examples = task.load(None, split=None, limit=limit)
    recorder = Recorder()
    evaluate(recorder, task, examples, model_name="smollm2-135m", plan_format="none", max_new_tokens=max_new_tokens,
             temperature=0.0, progress=False)
    return recorder.requests


def gsm8k_requests(path: Path, count: int, new: int) -> list[Request]:
    import json

    with open(path) as f:
        texts = [json.loads(line)["question"] for _, line in zip(range(count), f)]
    texts = (texts * (count // len(texts) + 1))[:count]
    return [Request(messages=[{"role": "user", "content": q}], max_new_tokens=new, temperature=0.7, seed=i)
            for i, q in enumerate(texts)]


def mixed_requests(count: int, mean: int, cap: int) -> list[Request]:
    """A workload whose rows end at very different times: `count` synthetic arithmetic questions (eval split),
    sampled at temperature 0.7 (seeded), each with its own token limit drawn from a geometric distribution of mean
    `mean`, capped at `cap` (seeded: the same limits every run). Batch after batch then runs long tails of a few rows,
    which continuous batching fills with waiting requests."""
    import random

    from forethought import plans
    from forethought.tasks import get_task

    rng = random.Random(0)
    examples = get_task("synthetic/arithmetic", difficulty=1, seed=0).load(None, split=None, limit=count)
    return [Request(messages=plans.question_messages(ex.question, "number"), temperature=0.7, seed=i,
                    max_new_tokens=min(cap, 1 + int(rng.expovariate(1 / mean)))) for i, ex in enumerate(examples)]


def simulated_ratio(lengths: list[int], batch: int, fixed: float, per_row: float) -> float:
    """Predicted time ratio (batch after batch / continuous) of decoding rows of these lengths when a decode step
    costs fixed + per_row x rows (in request order; prefill ignored): the most continuous batching can gain."""
    plain = 0.0
    for i in range(0, len(lengths), batch):
        chunk = lengths[i:i + batch]
        plain += sum(fixed + per_row * sum(x >= n for x in chunk) for n in range(1, max(chunk) + 1))
    refilled, queue, slots = 0.0, list(lengths), []
    while queue or slots:
        while len(slots) < batch and queue:
            slots.append(queue.pop(0))
        refilled += fixed + per_row * len(slots)
        slots = [x - 1 for x in slots if x > 1]
    return plain / refilled


def run(engine: HFEngine, requests: list[Request], continuous: bool, refill: int = 1) -> tuple[float, int, list, str]:
    """Seconds, generated tokens, texts and a count of forward passes of one engine.generate (`refill`: continuous
    batching refills once that many slots are free, or all that wait fit)."""
    engine.continuous, engine.refill = continuous, refill
    shapes = []
    hook = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    try:
        start = time.perf_counter()
        out = engine.generate(requests, progress=False)
        seconds = time.perf_counter() - start
    finally:
        hook.remove()
    engine.continuous, engine.refill = False, None
    tokens = sum(s.tokens for c in out for s in c.samples)
    decode = [rows for rows, width in shapes if width == 1]
    prefill = [rows * width for rows, width in shapes if width > 1]
    passes = (f"{len(decode)} decode steps ({sum(decode)} rows, mean {sum(decode) / max(1, len(decode)):.1f}), "
              f"{len(prefill)} prefill passes ({sum(prefill)} padded tokens)")
    return seconds, tokens, [[(s.text, s.finish_reason) for s in c.samples] for c in out], passes


def compare(engine: HFEngine, label: str, requests: list[Request], repeats: int,
            refills: tuple[int, ...] = (1,)) -> tuple[float, float]:
    """Batch after batch against continuous batching at each `refills` threshold, alternated `repeats` times, best
    kept; returns the seconds of batch after batch and of the fastest continuous way."""
    ways = [(False, 1)] + [(True, k) for k in refills]
    best = dict.fromkeys(ways)
    for _ in range(repeats):
        for way in ways:
            result = run(engine, requests, *way)
            if best[way] is None or result[0] < best[way][0]:
                best[way] = result
    s0, t0, plain, f0 = best[ways[0]]
    print(f"\n{label}: {len(requests)} requests, {t0} tokens generated (mean {t0 / len(requests):.1f})")
    print("| way | seconds | tokens/s | forward passes | vs batch after batch | identical outputs |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| batch after batch | {s0:.2f} | {t0 / s0:.1f} | {f0} | 1.00x | |")
    for way in ways[1:]:
        s1, t1, refilled, f1 = best[way]
        same = sum(a == b for a, b in zip(plain, refilled))
        print(f"| continuous, refill at {way[1]} free slot(s) | {s1:.2f} | {t1 / s1:.1f} | {f1} | {s0 / s1:.2f}x "
              f"| {same} of {len(requests)} |", flush=True)
    return s0, min(best[way][0] for way in ways[1:])


def memory(args) -> None:
    """Peak RSS (ru_maxrss) of a child process that loads the model and answers the evaluation once."""
    code = (
        "import sys, resource; sys.path.insert(0, 'bench'); import bench_continuous as b; "
        "from forethought.engines.hf import HFEngine; "
        f"r = b.eval_requests({args.limit}, {args.max_new_tokens}); "
        f"e = HFEngine('smollm2-135m', batch_size={args.batch}, device='cpu', continuous={args.continuous}); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "e.generate(r, progress=False); "
        "print(before // 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, peak = map(int, out.stdout.split()[-2:])
    print(f"evaluation ({args.limit} questions, batch {args.batch}, continuous={args.continuous}): peak RSS "
          f"{peak} MB (model loaded: {loaded} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    data = os.environ.get("FORETHOUGHT_DATA")
    parser.add_argument("--gsm8k", type=Path, default=Path(data) / "gsm8k" / "test.jsonl" if data else None)
    parser.add_argument("--gsm8k-requests", type=int, default=192)
    parser.add_argument("--gsm8k-max-new-tokens", type=int, default=192)
    parser.add_argument("--mixed", type=int, default=0, help="also run the mixed-lengths workload (N requests)")
    parser.add_argument("--mixed-mean", type=int, default=60)
    parser.add_argument("--mixed-cap", type=int, default=384)
    parser.add_argument("--memory", action="store_true", help="measure the evaluation's peak RSS instead")
    parser.add_argument("--continuous", action="store_true", help="with --memory: continuous batching on")
    parser.add_argument("--refill", default="1", help="continuous batching refills once this many slots are free "
                        "(comma-separated: one row each)")
    args = parser.parse_args()
    if args.memory:
        return memory(args)
    refills = tuple(int(k) for k in args.refill.split(","))
    engine = HFEngine("smollm2-135m", batch_size=args.batch, device="cpu")
    requests = eval_requests(args.limit, args.max_new_tokens)
    engine.generate(requests[:2], progress=False)  # warm-up
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, fp32, batch {args.batch}")
    compare(engine, f"quickstart evaluation (synthetic arithmetic, greedy, eos on, up to {args.max_new_tokens} tokens)",
            requests, args.repeats, refills)
    if args.mixed:
        mixed = mixed_requests(args.mixed, args.mixed_mean, args.mixed_cap)
        s0, _ = compare(engine, f"mixed lengths ({args.mixed} sampled answers, token limits geometric with mean "
                        f"{args.mixed_mean}, cap {args.mixed_cap})", mixed, args.repeats, refills)
        lengths = [c.samples[0].tokens for c in engine.generate(mixed, progress=False)]
        high, low = simulated_ratio(lengths, args.batch, 110, 7), simulated_ratio(lengths, args.batch, 55, 7)
        print(f"predicted by a decode step cost of fixed + per_row x rows: {high:.2f}x (fixed 110, per row 7: about "
              f"this CPU's batch-1 and batch-64 decode costs in ms) or {low:.2f}x (fixed 55)")
    if args.gsm8k and args.gsm8k.exists():
        compare(engine, f"sampled GSM8K answers (temperature 0.7, eos on, up to {args.gsm8k_max_new_tokens} tokens)",
                gsm8k_requests(args.gsm8k, args.gsm8k_requests, args.gsm8k_max_new_tokens), args.repeats,
                refills)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MB")


if __name__ == "__main__":
    main()
