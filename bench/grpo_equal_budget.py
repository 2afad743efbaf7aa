"""The README's equal-budget table: every evaluated iteration of some runs at its cumulative generated tokens (EM
sampling tokens or GRPO rollout tokens, counted alike; evaluation excluded), with held-out accuracy [95% CI], the
paired change vs the untrained model [95% CI] and the minutes spent up to that evaluation (manifest stage seconds).

With --versus RUN, a second table matches every trained evaluation of the other runs with RUN's evaluation nearest
in cumulative tokens and gives the paired difference (other - RUN) over the held-out questions both answered.

Run: python bench/grpo_equal_budget.py runs/quickstart_grpo runs/quickstart runs/quickstart_rest_em \
         --versus runs/quickstart_grpo
"""

from __future__ import annotations

import argparse

from forethought.jsonl import read_jsonl
from forethought.report.compare import read_run
from forethought.stats import correct_by_question, paired_delta_ci


def label(run) -> str:
    return f"{run.config.get('method', '?')} ({run.path.name})"


def rows(run) -> list[str]:
    seconds = (run.manifest.get("seconds") or {})
    out = []
    for m in run.metrics:
        t = m["iteration"]
        spent = sum(v for k, v in seconds.items() if int(k[5:8]) <= t)
        ci = m.get("ci95") or (m["accuracy"], m["accuracy"])
        delta = (f"{100 * m['delta_vs_base']:+.0f} pp [{100 * m['delta_ci95'][0]:+.1f}, "
                 f"{100 * m['delta_ci95'][1]:+.1f}]" if m.get("delta_ci95") else "")
        out.append(f"| {label(run)} | {t} | {m.get('cumulative_tokens') or 0:,} | "
                   f"{100 * m['accuracy']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {delta} | {spent / 60:.1f} |")
    return out


def verdicts(run, iteration: int) -> dict[str, list[bool]]:
    path = run.path / f"iter_{iteration:03d}" / "eval" / "records.jsonl"
    return correct_by_question([r for _, r in read_jsonl(path, required=("id", "correct"))])


def matched(reference, other) -> list[str]:
    """Each trained evaluation of `other` against `reference`'s evaluation nearest in cumulative tokens."""
    points = [(m.get("cumulative_tokens") or 0, m) for m in reference.metrics]
    out = []
    for m in other.metrics:
        tokens = m.get("cumulative_tokens") or 0
        if m["iteration"] == 0:
            continue
        ref_tokens, ref = min(points, key=lambda p: abs(p[0] - tokens))
        delta, (lo, hi) = paired_delta_ci(verdicts(reference, ref["iteration"]), verdicts(other, m["iteration"]))
        out.append(f"| {label(other)} it {m['iteration']}: {100 * m['accuracy']:.1f}% at {tokens:,} | "
                   f"{label(reference)} it {ref['iteration']}: {100 * ref['accuracy']:.1f}% at {ref_tokens:,} | "
                   f"{100 * delta:+.0f} pp [{100 * lo:+.1f}, {100 * hi:+.1f}] |")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--versus", help="run to match the others against at the nearest token count")
    args = parser.parse_args()
    runs = [read_run(d) for d in args.runs]
    print("| method (run) | iteration | generated tokens | held-out accuracy [95% CI] | change vs untrained "
          "[paired 95% CI] | minutes |")
    print("|---|---|---|---|---|---|")
    for run in runs:
        print("\n".join(rows(run)))
    if args.versus:
        reference = read_run(args.versus)
        print("\n| run, iteration: accuracy at its tokens | nearest evaluation of the reference | paired difference "
              "[95% CI] |")
        print("|---|---|---|")
        for run in runs:
            if run.path.resolve() != reference.path.resolve():
                print("\n".join(matched(reference, run)))


if __name__ == "__main__":
    main()
