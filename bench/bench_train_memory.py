"""Benchmark: peak memory and speed of one CPU SFT stage against the size of its training micro-batches.

On CPU the learners split each optimiser step's rows into micro-batches of at most `CPU_TRAIN_TOKENS` padded
tokens (learners/common.py). This trains the same rows with the same settings once per candidate size, each in
a fresh child process (alternating sizes over --repeats so that load drifts hit both alike), and prints the
child's peak resident memory (ru_maxrss), the training seconds, the process's CPU seconds for the whole
`train_sft` call (less sensitive than wall time to other jobs on a shared machine), the loss, and each figure's
ratio against the first size.

    python bench/bench_train_memory.py --rows runs/quickstart/iter_002/train.jsonl          # 1024 vs 512
    python bench/bench_train_memory.py --rows R --sizes 1024 512 256 --steps 4 --repeats 2

The defaults are the quickstart's learner (SmolLM2-135M, LoRA r16/alpha 32, batch 8, max_length 512, lr 5e-4).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from forethought.learners import common
from forethought.learners.sft import LoraSettings, SFTConfig, train_sft
a = json.loads(sys.argv[1])
common.CPU_TRAIN_TOKENS = a["size"]
rows = [json.loads(x) for x in Path(a["rows"]).read_text(encoding="utf-8").splitlines() if x.strip()]
cfg = SFTConfig(learning_rate=5e-4, epochs=1, batch_size=a["batch_size"], max_length=a["max_length"],
                lora=LoraSettings(r=16, alpha=32, dropout=0.0))
cpu = time.process_time()
s = train_sft(a["model"], rows, Path(a["out"]), cfg, seed=0, max_steps=a["steps"], progress=False)
cpu = time.process_time() - cpu
print("RESULT " + json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                              "seconds": s.seconds, "cpu_seconds": round(cpu, 1), "tokens_per_second": s.tokens_per_second,
                              "loss": s.train_loss, "steps": s.steps, "tokens": s.trained_tokens}))
"""


def run_child(args, size: int, out: Path) -> dict:
    spec = {"size": size, "rows": str(args.rows), "model": args.model, "batch_size": args.batch_size,
            "max_length": args.max_length, "steps": args.steps, "out": str(out)}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True)
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.exit(f"child for size {size} failed:\n{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=Path, required=True, help="train.jsonl of a run (rows of {messages})")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 512], help="CPU_TRAIN_TOKENS values; first = baseline")
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--scratch", type=Path, default=Path("out/bench_train_memory"))
    args = p.parse_args()
    if not args.rows.is_file():
        sys.exit(f"error: {args.rows} not found; give a run's train.jsonl (e.g. runs/quickstart/iter_002/train.jsonl)")
    results: dict[int, list[dict]] = {s: [] for s in args.sizes}
    for r in range(args.repeats):
        for size in args.sizes:
            out = args.scratch / f"r{r}_s{size}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            results[size].append(run_child(args, size, out))
            print(f"repeat {r} size {size}: {json.dumps(results[size][-1])}", flush=True)
    base = args.sizes[0]

    def best(size, key, fn):
        return fn(x[key] for x in results[size])

    print(f"\n{args.rows}: {args.steps} steps of {args.batch_size} rows, max_length {args.max_length}, "
          f"{args.repeats} repeats (peak: largest; seconds: fastest)")
    print("| micro-batch tokens | rows per micro-batch | peak RSS MB | ratio | train seconds | ratio | CPU seconds | ratio "
          "| loss |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        peak, secs, cpu = best(size, "peak_mb", max), best(size, "seconds", min), best(size, "cpu_seconds", min)
        micro = max(1, min(args.batch_size, size // args.max_length))
        print(f"| {size} | {micro} | {peak:,} | {peak / best(base, 'peak_mb', max):.2f}x | {secs:.1f} | "
              f"{secs / best(base, 'seconds', min):.2f}x | {cpu:.1f} | {cpu / best(base, 'cpu_seconds', min):.2f}x | "
              f"{results[size][0]['loss']:.4f} |")


if __name__ == "__main__":
    main()
