"""Benchmark: hf engine generated tokens/s at batch 1, 16 and 64 against a naive one-prompt-at-a-time generate loop.

Greedy, GSM8K test questions as chat prompts, eos ignored so every sample has exactly --max-new-tokens tokens.
Run: python bench/bench_engine.py [--model smollm2-135m] [--max-new-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from forethought.engines import Request
from forethought.engines.hf import HFEngine

# GSM8K test questions: --data, or gsm8k/test.jsonl under $FORETHOUGHT_DATA (the benchmark data folder)
DATA = Path(os.environ["FORETHOUGHT_DATA"]) / "gsm8k" / "test.jsonl" if os.environ.get("FORETHOUGHT_DATA") else None


def questions(path: Path, count: int) -> list[str]:
    """The first `count` GSM8K test questions."""
    with open(path) as f:
        return [json.loads(line)["question"] for _, line in zip(range(count), f)]


def main() -> None:
    """Measure and print a markdown table of tokens/s and the ratio to the naive baseline."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--prompts", type=int, default=64, help="prompts for the batched runs")
    parser.add_argument("--serial-prompts", type=int, default=8, help="prompts for batch 1 and the naive baseline")
    parser.add_argument("--max-new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--no-batched-generate", dest="batched_generate", action="store_false",
                        help="skip the batched model.generate reference row")
    args = parser.parse_args()
    if args.data is None:
        parser.error("pass --data GSM8K_TEST.jsonl, or set FORETHOUGHT_DATA to a folder that holds gsm8k/test.jsonl")

    engine = HFEngine(args.model)
    engine.eos_ids = set()  # benchmark only: ignore eos so all rows generate exactly max_new_tokens
    model, tokenizer = engine.model, engine.tokenizer
    texts = questions(args.data, args.prompts)
    requests = [Request(messages=[{"role": "user", "content": q}], max_new_tokens=args.max_new_tokens) for q in texts]

    engine.generate(requests[:2], progress=False)  # warm-up
    rows = []
    start = time.perf_counter()
    generated = 0
    with torch.inference_mode():
        for request in requests[: args.serial_prompts]:
            ids = torch.tensor([engine.encode(request)], device=engine.device)
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=args.max_new_tokens, min_new_tokens=args.max_new_tokens,
                                 pad_token_id=tokenizer.pad_token_id)
            generated += out.shape[1] - ids.shape[1]
    baseline = generated / (time.perf_counter() - start)
    rows.append(("naive `model.generate` loop", 1, args.serial_prompts, generated, baseline))
    print(f"baseline: {baseline:.1f} tok/s", flush=True)

    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    if args.batched_generate:  # context: transformers' own batched generate at the largest batch size
        start, generated, big = time.perf_counter(), 0, max(batch_sizes)
        with torch.inference_mode():
            for i in range(0, len(requests), big):
                batch = tokenizer.pad({"input_ids": [engine.encode(r) for r in requests[i: i + big]]},
                                      padding=True, return_tensors="pt").to(engine.device)
                out = model.generate(**batch, do_sample=False, max_new_tokens=args.max_new_tokens,
                                     min_new_tokens=args.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
                generated += out[:, batch["input_ids"].shape[1]:].numel()
        rate = generated / (time.perf_counter() - start)
        rows.append(("batched `model.generate`", big, len(requests), generated, rate))
        print(f"batched generate {big}: {rate:.1f} tok/s", flush=True)

    for batch_size in batch_sizes:
        engine.batch_size = batch_size
        subset = requests[: args.serial_prompts] if batch_size == 1 else requests
        start = time.perf_counter()
        out = engine.generate(subset, progress=False)
        elapsed = time.perf_counter() - start
        generated = sum(s.tokens for c in out for s in c.samples)
        rows.append(("hf engine", batch_size, len(subset), generated, generated / elapsed))
        print(f"batch {batch_size}: {generated / elapsed:.1f} tok/s", flush=True)

    print(f"\nmodel {args.model}, {args.max_new_tokens} new tokens per prompt, greedy, eos ignored, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}, "
          f"device {engine.device}, dtype {model.dtype}\n")
    print("| generator | batch | prompts | tokens | tokens/s | vs baseline |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, batch, prompts, tokens, rate in rows:
        print(f"| {name} | {batch} | {prompts} | {tokens} | {rate:.1f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
