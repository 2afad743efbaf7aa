"""Benchmark: sampling throughput of the hf engine as 1 vs 2 Ray replicas (1 thread each), measured in one run.

Seeded sampling (temperature 0.8) on GSM8K test questions as chat prompts; the same requests go to both set-ups,
whose outputs must be identical. Model loading is not timed (a warm-up request runs first).
Run: python bench/bench_replicas.py [--model smollm2-135m] [--prompts 32] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import ray

from forethought.engines import Request
from forethought.engines.replicas import RayReplicaEngine

# GSM8K test questions: --data, or gsm8k/test.jsonl under $FORETHOUGHT_DATA (the benchmark data folder)
DATA = Path(os.environ["FORETHOUGHT_DATA"]) / "gsm8k" / "test.jsonl" if os.environ.get("FORETHOUGHT_DATA") else None


def questions(path: Path, count: int) -> list[str]:
    """The first `count` GSM8K test questions (or numbered stand-ins when the data is not there)."""
    if not path.is_file():
        return [f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?" for i in range(count)]
    with open(path) as f:
        return [json.loads(line)["question"] for _, line in zip(range(count), f)]


def measure(replicas: int, args, requests: list[Request]):
    """Tokens/s of `replicas` actors (1 CPU, 1 thread each) on the requests, and their outputs."""
    engine = RayReplicaEngine("hf", args.model, replicas=replicas, replica_cpus=1, device="cpu",
                              batch_size=args.batch_size, chunk_size=args.chunk_size)
    try:
        engine.generate(requests[:replicas], progress=False)  # warm-up: every replica runs once
        start = time.perf_counter()
        out = engine.generate(requests, progress=False)
        seconds = time.perf_counter() - start
        served = [s["served"] for s in engine.stats()]
    finally:
        engine.close()
    tokens = sum(s.tokens for c in out for s in c.samples)
    return tokens, seconds, served, [[s.text for s in c.samples] for c in out]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=1, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--chunk-size", type=int, default=8, help="requests per replica call")
    args = parser.parse_args()
    if args.data is None:
        parser.error("pass --data GSM8K_TEST.jsonl, or set FORETHOUGHT_DATA to a folder that holds gsm8k/test.jsonl")

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    requests = [Request(messages=[{"role": "user", "content": q}], n=args.n, temperature=0.8,
                        max_new_tokens=args.max_new_tokens, seed=i)
                for i, q in enumerate(questions(args.data, args.prompts))]
    rows = []
    outputs = {}
    for replicas in (1, 2):
        tokens, seconds, served, outputs[replicas] = measure(replicas, args, requests)
        rows.append((replicas, tokens, seconds, tokens / seconds, served))
    ray.shutdown()

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; model {args.model}; "
          f"{args.prompts} prompts x n={args.n}, {args.max_new_tokens} new tokens max, batch {args.batch_size}, "
          f"chunk {args.chunk_size}")
    print("| replicas (1 thread each) | tokens | seconds | tokens/s | requests per replica |")
    print("|---:|---:|---:|---:|---|")
    for replicas, tokens, seconds, rate, served in rows:
        print(f"| {replicas} | {tokens} | {seconds:.1f} | {rate:.1f} | {served} |")
    print(f"speed-up 2 vs 1 replica: {rows[1][3] / rows[0][3]:.2f}x; identical outputs: {outputs[1] == outputs[2]}")


if __name__ == "__main__":
    main()
