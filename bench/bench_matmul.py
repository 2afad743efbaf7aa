"""Benchmark (issue 17 §1): how fast torch streams a decoder's projection matrices on this CPU, in isolation.

A decode step at small batch is bound by reading the weights: SmolLM2-135M's 210 projections (7 per layer x 30,
425 MB in fp32, out of cache) and its head (49,152 x 576, 113 MB). This times them through `F.linear` (what the
model runs), a pre-transposed `x @ W`, and `torch.mv` (one row), at --rows rows, and prints ms and GB/s, so the
engine's decode speed can be set against what the CPU's matrix kernels give (llama.cpp: bench/bench_peers.py).
Run: python bench/bench_matmul.py [--rows 1,16,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
import torch.nn.functional as F

LAYERS = 30
SHAPES = [(576, 576), (192, 576), (192, 576), (576, 576), (1536, 576), (1536, 576), (576, 1536)]  # q k v o gate up down
HEAD = (49152, 576)


def timed(fn, repeats: int) -> float:
    """Milliseconds per call of `fn` after one warm-up call."""
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,16,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [[torch.randn(*s) for s in SHAPES] for _ in range(LAYERS)]
    transposed = [[w.t().contiguous() for w in ws] for ws in layers]
    head = torch.randn(*HEAD)
    head_t = head.t().contiguous()
    gb = sum(w.numel() * 4 for ws in layers for w in ws) / 1e9
    head_gb = head.numel() * 4 / 1e9
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"projections {gb * 1e3:.0f} MB, head {head_gb * 1e3:.0f} MB\n")
    print("| rows | what | linear ms (GB/s) | x @ W pre-transposed ms (GB/s) | mv ms (GB/s) |")
    print("|---:|---|---:|---:|---:|")
    for m in (int(r) for r in args.rows.split(",")):
        x = {576: torch.randn(m, 576), 1536: torch.randn(m, 1536)}
        cases = [
            ("210 projections", gb,
             lambda: [F.linear(x[w.shape[1]], w) for ws in layers for w in ws],
             lambda: [x[w.shape[0]] @ w for ws in transposed for w in ws],
             lambda: [torch.mv(w, x[w.shape[1]][0]) for ws in layers for w in ws]),
            ("head", head_gb, lambda: F.linear(x[576], head), lambda: x[576] @ head_t,
             lambda: torch.mv(head, x[576][0])),
        ]
        for label, size, linear, pre_t, mv in cases:
            cells = []
            for fn in (linear, pre_t) + ((mv,) if m == 1 else ()):
                ms = timed(fn, args.repeats)
                cells.append(f"{ms:.1f} ({size / ms * 1e3:.1f})")
            cells += ["—"] * (3 - len(cells))
            print(f"| {m} | {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
