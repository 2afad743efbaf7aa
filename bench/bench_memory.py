"""Benchmark: peak resident memory (RSS) of a pipeline, per stage.

Runs `forethought run|cpl|codeplan RECIPE output=DIR [overrides]` in a child process and reports, per stage, the
peak RSS the stage runner records in DIR/manifest.json (`peak_rss_mb`: VmHWM, reset when each stage starts), the
peak of the child's RSS sampled every --interval seconds (stages are attributed as the manifest marks them done;
"setup" is what comes before the first stage), and the stage's seconds. The run's peak is the largest of them.

    python bench/bench_memory.py                                  # the quickstart
    python bench/bench_memory.py --recipe recipes/cpl_cpu.yaml search.iterations=2 train_limit=8 ...
    python bench/bench_memory.py --baseline 7700                  # ratio against a reported peak (MB)
    python bench/bench_memory.py --baseline-json old.json         # ratio per stage against an earlier --json

The command is `cpl` for recipes named cpl*, `codeplan` for codeplan*, `run` otherwise (--command to choose).
Environment variables for the child: --env KEY=VALUE (e.g. a switch that turns a fix off).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def rss_mb(pid: int) -> int | None:
    """Resident memory of `pid` and its descendants in MB (None once it has exited)."""
    total, found = 0, False
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        found = True
                        break
            with open(f"/proc/{p}/task/{p}/children") as f:
                stack += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return total // 1024 if found else None


def read_manifest(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def measure(command: list[str], manifest: Path, interval: float, env: dict) -> dict:
    """Run `command`, sampling RSS; returns per-stage sampled peaks, the manifest and the wall time."""
    start = time.perf_counter()
    child = subprocess.Popen(command, env=env)
    sampled: dict[str, int] = {}
    done: set[str] = set()
    peak = 0
    while True:
        exited = child.poll() is not None
        rss = None if exited else rss_mb(child.pid)
        if rss is not None:
            peak = max(peak, rss)
        stages = read_manifest(manifest).get("stages", {})
        for name in stages:  # stages finished since the last sample: the peak so far belongs to them
            if name not in done:
                done.add(name)
                sampled[name] = peak
                peak = rss or 0
        if exited:
            break
        time.sleep(interval)
    if peak:
        sampled["teardown"] = peak
    return {"returncode": child.returncode, "seconds": round(time.perf_counter() - start, 1),
            "sampled_mb": sampled, "manifest": read_manifest(manifest)}


def table(result: dict, baseline: dict | None, baseline_mb: float | None) -> str:
    manifest = result["manifest"]
    exact = manifest.get("peak_rss_mb", {})
    seconds = manifest.get("seconds", {})
    sampled = result["sampled_mb"]
    names = list(manifest.get("stages", {})) + [n for n in sampled if n == "teardown"]
    base_peaks = (baseline or {}).get("peaks_mb", {})
    lines = ["| stage | seconds | peak RSS (VmHWM) MB | peak RSS (sampled) MB |"
             + (" baseline MB | ratio |" if base_peaks else ""),
             "|---|---|---|---|" + ("---|---|" if base_peaks else "")]
    peaks = {}
    for name in names:
        peak = max(exact.get(name, 0), sampled.get(name, 0))
        peaks[name] = peak
        row = f"| {name} | {seconds.get(name, '')} | {exact.get(name, '')} | {sampled.get(name, '')} |"
        if base_peaks:
            old = base_peaks.get(name)
            row += f" {old or ''} | {f'{peak / old:.2f}x' if old else ''} |"
        lines.append(row)
    result["peaks_mb"] = peaks
    result["peak_mb"] = max(peaks.values(), default=0)
    total = f"run peak: {result['peak_mb']} MB ({result['peak_mb'] / 1024:.2f} GiB), wall {result['seconds']} s"
    if baseline:
        total += f"; baseline peak {baseline['peak_mb']} MB, ratio {result['peak_mb'] / baseline['peak_mb']:.2f}x"
    if baseline_mb:
        total += f"; reported {baseline_mb:.0f} MB, ratio {result['peak_mb'] / baseline_mb:.2f}x"
    return "\n".join(lines + ["", total])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipes/quickstart.yaml")
    parser.add_argument("--command", choices=("run", "cpl", "codeplan", "search"))
    parser.add_argument("--output", type=Path, help="run directory (default: out/bench_memory/RECIPE in the repository; removed first)")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between RSS samples")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the child's environment")
    parser.add_argument("--baseline", type=float, help="a reported peak in MB to compare the run's peak with")
    parser.add_argument("--baseline-json", type=Path, help="an earlier --json result to compare stage by stage")
    parser.add_argument("--json", type=Path, help="write the result here")
    parser.add_argument("overrides", nargs="*", help="recipe overrides key=value")
    args = parser.parse_args()

    stem = Path(args.recipe).stem
    command = args.command or ("cpl" if stem.startswith("cpl") else "codeplan" if stem.startswith("codeplan")
                               else "run")
    output = args.output or Path(__file__).resolve().parents[1] / "out" / "bench_memory" / stem  # git-ignored
    shutil.rmtree(output, ignore_errors=True)
    env = dict(os.environ, **dict(kv.split("=", 1) for kv in args.env))
    argv = [sys.executable, "-m", "forethought.cli", command, args.recipe, f"output={output}", *args.overrides]
    print("$", " ".join(argv[2:]), flush=True)
    result = measure(argv, output / "manifest.json", args.interval, env)
    result.update(command=" ".join(argv[2:]), env=args.env)
    baseline = json.loads(args.baseline_json.read_text()) if args.baseline_json else None
    print(table(result, baseline, args.baseline))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if result["returncode"]:
        sys.exit(f"the run failed with status {result['returncode']}")


if __name__ == "__main__":
    main()
