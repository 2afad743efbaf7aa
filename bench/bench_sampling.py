"""Benchmark: how close E-step sampling gets to this machine's matmul ceiling, and what the engine's fast paths save.

1. Throughput. For each model: the matmul rate measured here (fp32 on CPU, bf16 on CUDA), the ceiling it implies
   (rate / FLOPs per generated token), transformers' batched `generate` (baseline), the hf engine with its fast paths
   off, with all but prefill in length-sorted passes, and as it is; greedy, eos ignored. "compute used" also counts the prompt tokens' FLOPs (prefill is work too). On a
   CPU with bf16 matrix units (AMX) a row with bf16 weights is added, still measured against the fp32 ceiling.
2. Continuous batching on a sampling workload: GSM8K chat prompts, temperature 0.7, eos on (rows end at different
   lengths), batch after batch vs finished rows refilled with waiting requests; seeded, so the samples must match.
3. Shared prefixes, LEPA-style: 16 questions, each with 2 worked demonstrations and a plan in the prompt, 4
   sampled solutions per plan. Baseline: 64 requests, each prompt encoded separately. Then the same 64 requests
   with the shared prefix encoded once and copied into every row, then attended from one copy (the default on
   CPU), and 16 requests with n=4.
Run: python bench/bench_sampling.py [--models smollm2-135m:64,qwen2.5-coder-0.5b:16,...] [--max-new-tokens 64]
     [--device cuda] [--data PATH/gsm8k/test.jsonl]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from forethought import plans
from forethought.engines import Request
from forethought.engines.hf import HFEngine
from forethought.tasks import get_task

# GSM8K test questions: --data, or gsm8k/test.jsonl under $FORETHOUGHT_DATA (the benchmark data folder)
DATA = Path(os.environ["FORETHOUGHT_DATA"]) / "gsm8k" / "test.jsonl" if os.environ.get("FORETHOUGHT_DATA") else None
# engine attributes with the values that turn each fast path off (continuous is off by default)
FAST_PATHS_OFF = {"preallocate": False, "share_prefix": False, "continuous": False, "prefill_tokens": None}


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_gflops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Sustained matmul rate (GFLOP/s) at `size`^3, best of `repeats`."""
    a, b = (torch.randn(size, size, device=device, dtype=dtype) for _ in range(2))
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def flops_per_token(model) -> float:
    """2 x the weights every token multiplies by (all linear layers, the output head once)."""
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear)}
    return 2.0 * sum(weights.values())


REPEATS = 1  # timed runs per measurement, best kept (--repeats)


def timed(fn, device: str = "cpu") -> tuple[float, object]:
    """Best wall time of REPEATS calls of fn, and its result."""
    best = float("inf")
    for _ in range(REPEATS):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def questions(path: Path, count: int) -> list[str]:
    with open(path) as f:
        texts = [json.loads(line)["question"] for _, line in zip(range(count), f)]
    return (texts * (count // len(texts) + 1))[:count]


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


def engine_run(engine: HFEngine, requests: list[Request], **flags) -> tuple[float, int, list]:
    """Time engine.generate with the given fast-path settings for the call; returns seconds, tokens, texts."""
    saved = {flag: getattr(engine, flag) for flag in flags}
    for flag, value in flags.items():
        setattr(engine, flag, value)
    try:
        seconds, out = timed(lambda: engine.generate(requests, progress=False), engine.device.type)
    finally:
        for flag, value in saved.items():
            setattr(engine, flag, value)
    return seconds, sum(s.tokens for c in out for s in c.samples), [[s.text for s in c.samples] for c in out]


def throughput(name: str, batch: int, new: int, gflops: float, device: str, data: Path, bf16: bool) -> list[tuple]:
    """Rows (model, generator, batch, tok/s, baseline tok/s, ceiling tok/s, compute used)."""
    engine = HFEngine(name, batch_size=batch, device=device)
    engine.eos_ids = set()  # benchmark only: every row generates exactly `new` tokens
    requests = [Request(messages=[{"role": "user", "content": q}], max_new_tokens=new) for q in questions(data, batch)]
    engine.generate(requests[:2], progress=False)  # warm-up
    per_token = flops_per_token(engine.model)
    ceiling = gflops * 1e9 / per_token
    prompt_tokens = sum(len(engine.encode(r)) for r in requests)

    def row(label, seconds, tokens, base=None):
        used = (prompt_tokens + tokens) * per_token / seconds / (gflops * 1e9)
        print(f"{name} {label}: {tokens / seconds:.1f} tok/s", flush=True)
        return (name, label, batch, tokens / seconds, base or tokens / seconds, ceiling, used)

    seconds, tokens = timed(lambda: batched_generate(engine, requests, batch, new), device)
    rows = [row("batched `model.generate` (baseline)", seconds, tokens)]
    base = rows[0][3]
    seconds, tokens, _ = engine_run(engine, requests, **FAST_PATHS_OFF)
    rows.append(row("hf engine, fast paths off", seconds, tokens, base))
    seconds, tokens, _ = engine_run(engine, requests, prefill_tokens=None)
    rows.append(row("hf engine, prompts prefilled in one padded pass", seconds, tokens, base))
    seconds, tokens, _ = engine_run(engine, requests)
    rows.append(row("hf engine", seconds, tokens, base))
    if bf16:
        fast = HFEngine(name, batch_size=batch, device=device, dtype="bfloat16")
        fast.eos_ids = set()
        fast.generate(requests[:2], progress=False)
        seconds, tokens, _ = engine_run(fast, requests)
        rows.append(row("hf engine, bf16 weights (AMX)", seconds, tokens, base))
    return rows


def continuous(name: str, batch: int, count: int, new: int, device: str, data: Path) -> list[tuple]:
    """Sampled GSM8K answers with eos on: batch after batch vs continuous refill, same seeds."""
    engine = HFEngine(name, batch_size=batch, device=device)
    requests = [Request(messages=[{"role": "user", "content": q}], max_new_tokens=new, temperature=0.7, seed=i)
                for i, q in enumerate(questions(data, count))]
    engine.generate(requests[:2], progress=False)  # warm-up
    seconds, tokens, plain = engine_run(engine, requests, continuous=False)
    base = tokens / seconds
    rows = [(name, f"{count} requests, batch after batch (baseline)", base, base)]
    seconds, tokens, refilled = engine_run(engine, requests, continuous=True)
    rows.append((name, f"{count} requests, finished rows refilled", tokens / seconds, base))
    print(f"identical samples with and without continuous batching: {plain == refilled}; "
          f"mean length {tokens / count:.0f} of {new} tokens", flush=True)
    return rows


def shared_prefix(name: str, new: int, device: str) -> list[tuple]:
    engine = HFEngine(name, batch_size=64, device=device)
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
    seconds, tokens, plain = engine_run(engine, separate, share_prefix=False)
    base = tokens / seconds
    rows.append((name, f"64 requests, each prompt encoded separately (baseline; prompt {prompt:.0f} tokens)",
                 base, base))
    seconds, tokens, copied = engine_run(engine, separate, shared_kv=False)
    rows.append((name, "64 requests, shared prefix encoded once, copied into every row", tokens / seconds, base))
    seconds, tokens, fast = engine_run(engine, separate, shared_kv=True)
    rows.append((name, "64 requests, shared prefix encoded once and attended from one copy", tokens / seconds, base))
    print(f"identical samples with and without prefix sharing: {plain == fast}; with the prefix copied into every "
          f"row and attended once: {copied == fast}", flush=True)
    seconds, tokens, _ = engine_run(engine, grouped)
    rows.append((name, "16 requests with n=4", tokens / seconds, base))
    return rows


def ratio_table(title: str, rows: list[tuple]) -> None:
    print(f"\n| model | {title} | tokens/s | vs baseline |")
    print("|---|---|---:|---:|")
    for name, label, rate, base in rows:
        print(f"| {name} | {label} | {rate:.1f} | {rate / base:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="smollm2-135m:64,qwen2.5-coder-0.5b:16,qwen2.5-coder-0.5b:64",
                        help="comma-separated MODEL:BATCH pairs for the throughput table")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--prefix-model", default="smollm2-135m")
    parser.add_argument("--sampling-requests", type=int, default=192)
    parser.add_argument("--sampling-max-new-tokens", type=int, default=192)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=DATA, help="a GSM8K jsonl with a 'question' field")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed runs per measurement, best kept (default 1 on CPU, 2 on CUDA: first passes over "
                             "new shapes pay one-off kernel set-up there)")
    args = parser.parse_args()
    if args.data is None:
        parser.error("pass --data GSM8K_TEST.jsonl, or set FORETHOUGHT_DATA to a folder that holds gsm8k/test.jsonl")
    global REPEATS
    REPEATS = args.repeats or (1 if args.device == "cpu" else 2)

    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    size = 2048 if args.device == "cpu" else 8192
    gflops = matmul_gflops(args.device, dtype, size)
    print(f"{dtype} matmul ({size}^3): {gflops:.1f} GFLOP/s", flush=True)
    amx = args.device == "cpu" and "amx_bf16" in Path("/proc/cpuinfo").read_text()
    if amx:
        print(f"bf16 matmul ({size}^3, AMX): {matmul_gflops('cpu', torch.bfloat16, size):.1f} GFLOP/s", flush=True)
    table = []
    for spec in args.models.split(","):
        name, batch = spec.rsplit(":", 1)
        table += throughput(name, int(batch), args.max_new_tokens, gflops, args.device, args.data, amx)
    name, batch = args.models.split(",")[0].rsplit(":", 1)
    refill = continuous(name, int(batch), args.sampling_requests, args.sampling_max_new_tokens, args.device,
                        args.data)
    prefix = shared_prefix(args.prefix_model, args.max_new_tokens, args.device)

    where = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"\n{where}, torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}, "
          f"{args.max_new_tokens} new tokens per sample; matmul {gflops:.1f} GFLOP/s\n")
    print("| model | generator | batch | tokens/s | vs baseline | ceiling tok/s | % of ceiling | compute used |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, label, batch, rate, base, ceiling, used in table:
        print(f"| {name} | {label} | {batch} | {rate:.1f} | {rate / base:.2f}x | {ceiling:.0f} | "
              f"{100 * rate / ceiling:.0f}% | {100 * used:.0f}% |")
    ratio_table(f"sampling, temperature 0.7, eos on, up to {args.sampling_max_new_tokens} tokens", refill)
    ratio_table("LEPA-style sampling: 16 plans x 4 solutions", prefix)


if __name__ == "__main__":
    main()
