"""Benchmark: how close E-step sampling gets to this machine's matmul ceiling, and what shared prefixes save.

1. Throughput. For each model: the fp32 matmul rate measured here, the ceiling it implies (rate / FLOPs per token),
   transformers' batched `generate` (baseline), the hf engine with its fast paths off and on; greedy, eos ignored.
2. Shared prefixes, LEPA-style: 16 questions, each with 2 worked demonstrations and a plan in the prompt, 4
   sampled solutions per plan. Baseline: 64 requests, each prompt encoded separately. Then the same 64 requests
   with shared-prefix encoding, and 16 requests with n=4.
Run: python bench/bench_sampling.py [--models smollm2-135m:64,qwen2.5-coder-0.5b:16] [--max-new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from forethought import plans
from forethought.engines import Request
from forethought.engines.hf import HFEngine
from forethought.tasks import get_task

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Sustained fp32 matmul rate on this machine (GFLOP/s), best of `repeats`."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flops_per_token(model) -> float:
    """2 x the weights every generated token multiplies by (all linear layers, the output head once)."""
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return 2.0 * sum(weights.values())


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def batched_generate(engine: HFEngine, requests: list[Request], batch: int, new: int) -> int:
    """transformers' own batched greedy generate (left-padded), eos ignored; returns tokens generated."""
    tok, generated = engine.tokenizer, 0
    tok.padding_side = "left"
    with torch.inference_mode():
        for i in range(0, len(requests), batch):
            enc = tok.pad({"input_ids": [engine.encode(r) for r in requests[i: i + batch]]}, padding=True,
                          return_tensors="pt").to(engine.device)
            out = engine.model.generate(**enc, do_sample=False, max_new_tokens=new, min_new_tokens=new,
                                        pad_token_id=engine.pad_id)
            generated += out[:, enc["input_ids"].shape[1]:].numel()
    return generated


def engine_run(engine: HFEngine, requests: list[Request], *, fast: bool) -> tuple[float, int, list]:
    engine.preallocate = engine.share_prefix = fast
    try:
        seconds, out = timed(lambda: engine.generate(requests, progress=False))
    finally:
        engine.preallocate = engine.share_prefix = True
    return seconds, sum(s.tokens for c in out for s in c.samples), [[s.text for s in c.samples] for c in out]


def throughput(name: str, batch: int, new: int, gflops: float) -> list[tuple]:
    engine = HFEngine(name, batch_size=batch)
    engine.eos_ids = set()  # benchmark only: every row generates exactly `new` tokens
    with open(DATA) as f:
        texts = [json.loads(line)["question"] for _, line in zip(range(batch), f)]
    requests = [Request(messages=[{"role": "user", "content": q}], max_new_tokens=new) for q in texts]
    engine.generate(requests[:2], progress=False)  # warm-up
    ceiling = gflops * 1e9 / flops_per_token(engine.model)
    rows = []
    seconds, tokens = timed(lambda: batched_generate(engine, requests, batch, new))
    base = tokens / seconds
    rows.append((name, "batched `model.generate` (baseline)", batch, base, base))
    for label, fast in (("hf engine, fast paths off", False), ("hf engine", True)):
        seconds, tokens, _ = engine_run(engine, requests, fast=fast)
        rows.append((name, label, batch, tokens / seconds, base))
        print(f"{name} {label}: {tokens / seconds:.1f} tok/s", flush=True)
    return [(*r, ceiling) for r in rows]


def shared_prefix(name: str, new: int) -> list[tuple]:
    engine = HFEngine(name, batch_size=64)
    task = get_task("synthetic/arithmetic", difficulty=2)
    demos = plans.demo_messages(task.demos(2), "natural", "number")
    work = task.demos(18)[2:]  # 16 more questions, each with a plan, as if sampled
    per_plan = [demos + plans.solve_with_plan_messages(d.question, d.plan, "number") for d in work]
    separate = [Request(messages=m, temperature=0.5, max_new_tokens=new, seed=100 * q + k)
                for q, m in enumerate(per_plan) for k in range(4)]
    grouped = [Request(messages=m, temperature=0.5, max_new_tokens=new, seed=q, n=4) for q, m in enumerate(per_plan)]
    engine.generate(separate[:2], progress=False)  # warm-up
    prompt = sum(len(engine.encode(r)) for r in separate) / len(separate)
    rows = []
    seconds, tokens, plain = engine_run(engine, separate, fast=False)
    base = tokens / seconds
    rows.append((name, f"64 requests, each prompt encoded separately (baseline; prompt {prompt:.0f} tokens)",
                 base, base))
    seconds, tokens, fast = engine_run(engine, separate, fast=True)
    rows.append((name, "64 requests, shared prefix and repeated prompts encoded once", tokens / seconds, base))
    print(f"identical samples with and without prefix sharing: {plain == fast}", flush=True)
    seconds, tokens, _ = engine_run(engine, grouped, fast=True)
    rows.append((name, "16 requests with n=4", tokens / seconds, base))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m:64,qwen2.5-coder-0.5b:16",
                        help="comma-separated MODEL:BATCH pairs for the throughput table")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prefix-model", default="smollm2-135m")
    args = parser.parse_args()

    gflops = matmul_gflops()
    print(f"fp32 matmul (2048^3): {gflops:.1f} GFLOP/s", flush=True)
    table = []
    for spec in args.models.split(","):
        name, batch = spec.rsplit(":", 1)
        table += throughput(name, int(batch), args.max_new_tokens, gflops)
    prefix = shared_prefix(args.prefix_model, args.max_new_tokens)

    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} "
          f"threads, fp32, {args.max_new_tokens} new tokens per sample; matmul {gflops:.1f} GFLOP/s\n")
    print("| model | generator | batch | tokens/s | vs baseline | ceiling tok/s | % of ceiling |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, label, batch, rate, base, ceiling in table:
        print(f"| {name} | {label} | {batch} | {rate:.1f} | {rate / base:.2f}x | {ceiling:.0f} | "
              f"{100 * rate / ceiling:.0f}% |")
    print("\n| model | LEPA-style sampling: 16 plans x 4 solutions | tokens/s | vs baseline |")
    print("|---|---|---:|---:|")
    for name, label, rate, base in prefix:
        print(f"| {name} | {label} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
