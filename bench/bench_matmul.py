"""Benchmark (issue 17 §1): how fast torch streams a decoder's projection matrices on this CPU, in isolation.

A decode step at small batch is bound by reading the weights: SmolLM2-135M's 210 projections (7 per layer x 30,
425 MB in fp32, out of cache) and its head (49,152 x 576, 113 MB). This times them at --rows rows through every
fp32 kernel a torch user can reach (see `kernels`) and prints ms and GB/s, so the engine's decode speed can be set
against what the CPU's matrix kernels give (llama.cpp: bench/bench_peers.py).
Run: python bench/bench_matmul.py [--rows 1,16,64] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch
import torch.nn.functional as F

WAYS = ("F.linear", "x @ W pre-transposed", "oneDNN packed", "MKL packed", "OpenBLAS (numpy)", "torch.mv")
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


def kernels(m: int, layers, head):
    """Per way of multiplying: a function that runs the 210 projections and one that runs the head, at m rows.

    `F.linear` is what the model runs (MKL's sgemm in the PyPI CPU build); the others are the other fp32 kernels a
    torch user can reach without writing one: a pre-transposed `x @ W`, `torch.mv` (one row), oneDNN and MKL with
    weights packed ahead for m rows (what torch.compile's CPU backend calls), and OpenBLAS through numpy."""
    x = {576: torch.randn(m, 576), 1536: torch.randn(m, 1536)}
    xn = {k: v.numpy() for k, v in x.items()}
    flat = [w for ws in layers for w in ws]
    t = [w.t().contiguous() for w in flat]
    tn = [w.numpy() for w in t]
    dnn = [torch.ops.mkldnn._reorder_linear_weight(w, m) for w in flat + [head]]
    mkl = [torch.ops.mkl._mkl_reorder_linear_weight(w, m) for w in flat + [head]]
    head_t = head.t().contiguous()
    head_tn = head_t.numpy()
    def onednn(x, p):
        return torch.ops.mkldnn._linear_pointwise(x, p, None, "none", [], "")
    ways = {
        "F.linear": (lambda: [F.linear(x[w.shape[1]], w) for w in flat], lambda: F.linear(x[576], head)),
        "x @ W pre-transposed": (lambda: [x[w.shape[0]] @ w for w in t], lambda: x[576] @ head_t),
        "oneDNN packed": (lambda: [onednn(x[w.shape[1]], p) for w, p in zip(flat, dnn)],
                          lambda: onednn(x[576], dnn[-1])),
        "MKL packed": (lambda: [torch.ops.mkl._mkl_linear(x[w.shape[1]], p, w, None, m) for w, p in zip(flat, mkl)],
                       lambda: torch.ops.mkl._mkl_linear(x[576], mkl[-1], head, None, m)),
        "OpenBLAS (numpy)": (lambda: [xn[w.shape[0]] @ w for w in tn], lambda: xn[576] @ head_tn),
    }
    if m == 1:
        ways["torch.mv"] = (lambda: [torch.mv(w, x[w.shape[1]][0]) for w in flat], lambda: torch.mv(head, x[576][0]))
    return ways


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="1,16,64")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):  # OpenBLAS reads it when numpy loads (with
        env = {**os.environ, "OPENBLAS_NUM_THREADS": str(args.threads)}  # torch, above): run again with it set
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = [[torch.randn(*s) for s in SHAPES] for _ in range(LAYERS)]
    head = torch.randn(*HEAD)
    gb = sum(w.numel() * 4 for ws in layers for w in ws) / 1e9
    head_gb = head.numel() * 4 / 1e9
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
          f"projections {gb * 1e3:.0f} MB, head {head_gb * 1e3:.0f} MB; ms (GB/s of weights read)\n")
    print("| rows | what | " + " | ".join(WAYS) + " | best / F.linear |")
    print("|---:|---|" + "---:|" * (len(WAYS) + 1))
    for m in (int(r) for r in args.rows.split(",")):
        ways = kernels(m, layers, head)
        for part, label, size in ((0, "210 projections", gb), (1, "head", head_gb)):
            ms = {name: timed(fns[part], args.repeats) for name, fns in ways.items()}
            cells = [f"{ms[n]:.1f} ({size / ms[n] * 1e3:.1f})" if n in ms else "—" for n in WAYS]
            print(f"| {m} | {label} | " + " | ".join(cells) + f" | {ms['F.linear'] / min(ms.values()):.2f}x |",
                  flush=True)


if __name__ == "__main__":
    main()
