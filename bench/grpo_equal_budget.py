"""The README's equal-budget table: every evaluated iteration of some runs at its cumulative generated tokens (EM
sampling tokens or GRPO rollout tokens, counted alike; evaluation excluded), with held-out accuracy [95% CI], the
paired change vs the untrained model [95% CI] and the minutes spent up to that evaluation (manifest stage seconds).

Run: python bench/grpo_equal_budget.py runs/quickstart_grpo runs/quickstart runs/quickstart_rest_em
"""

from __future__ import annotations

import sys

from forethought.report.compare import read_run


def rows(run_dir: str) -> list[str]:
    run = read_run(run_dir)
    method = str(run.config.get("method", "?"))
    seconds = (run.manifest.get("seconds") or {})
    out = []
    for m in run.metrics:
        t = m["iteration"]
        spent = sum(v for k, v in seconds.items() if int(k[5:8]) <= t)
        ci = m.get("ci95") or (m["accuracy"], m["accuracy"])
        delta = (f"{100 * m['delta_vs_base']:+.0f} pp [{100 * m['delta_ci95'][0]:+.1f}, "
                 f"{100 * m['delta_ci95'][1]:+.1f}]" if m.get("delta_ci95") else "")
        out.append(f"| {method} ({run.path.name}) | {t} | {m.get('cumulative_tokens') or 0:,} | "
                   f"{100 * m['accuracy']:.1f}% [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] | {delta} | {spent / 60:.1f} |")
    return out


def main() -> None:
    print("| method (run) | iteration | generated tokens | held-out accuracy [95% CI] | change vs untrained "
          "[paired 95% CI] | minutes |")
    print("|---|---|---|---|---|---|")
    for d in sys.argv[1:]:
        print("\n".join(rows(d)))


if __name__ == "__main__":
    main()
