"""Read run directories and compare them side by side: what each method reached and what it spent."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from rich.table import Table

from forethought.config import load_yaml
from forethought.errors import UserError
from forethought.jsonl import read_jsonl, read_text


@dataclass
class Run:
    """A run directory's resolved config, manifest and per-iteration metrics (sorted, one per iteration)."""

    path: Path
    config: dict
    manifest: dict
    metrics: list[dict]


def read_run(run_dir: str | Path) -> Run:
    """Load a run directory; a missing directory or metrics file is a UserError naming it."""
    path = Path(run_dir)
    if not path.is_dir():
        raise UserError(f"{path}: {'not a' if path.exists() else 'no such'} directory; pass a run directory")
    if not (path / "metrics.jsonl").is_file():
        raise UserError(f"{path}: no metrics.jsonl; is this a run directory?")
    if not (path / "config.yaml").is_file():
        raise UserError(f"{path}: no config.yaml; is this a run directory?")
    by_iter = {m["iteration"]: m for _, m in read_jsonl(path / "metrics.jsonl", required=("iteration",))}
    manifest = {}
    if (path / "manifest.json").is_file():
        try:
            manifest = json.loads(read_text(path / "manifest.json"))
        except json.JSONDecodeError as e:
            raise UserError(f"{path / 'manifest.json'}: not valid JSON ({e.msg})") from None
    return Run(path, load_yaml(path / "config.yaml"), manifest, [by_iter[i] for i in sorted(by_iter)])


def model_name(config: dict) -> str:
    """The model as the recipe names it: a plain string, or the name/id/path of a model section."""
    model = config.get("model")
    if isinstance(model, dict):
        model = model.get("name") or model.get("id") or model.get("path")
    return str(model) if model else "?"


def sampled_of(run: Run, metrics: dict) -> dict | None:
    """An iteration's sampled metrics (pass@k, maj@K, mean@K; eval.n > 1): from its metrics line, else from its
    evaluation's summary.json; None when it was evaluated with one sample per question."""
    if metrics.get("sampled"):
        return metrics["sampled"]
    summary = run.path / f"iter_{metrics.get('iteration', 0):03d}" / "eval" / "summary.json"
    try:
        return json.loads(summary.read_text(encoding="utf-8")).get("sampled") or None
    except (OSError, ValueError, AttributeError):
        return None


def sampled_names(sampled: dict, all_k: bool = True) -> list[str]:
    """The metric names in a sampled block, in order (pass@1, pass@2, ..., maj@K, mean@K); with all_k=False only
    pass@1, pass@K and maj@K."""
    names = [k for k in sampled if "@" in k and isinstance(sampled[k], dict)]
    if all_k:
        return names
    k = sampled.get("k")
    return [n for n in names if n in ("pass@1", f"pass@{k}", f"maj@{k}")]


def fmt_sampled(sampled: dict | None, all_k: bool = False) -> str:
    """Sampled metrics on one line: 'pass@1 30.0% [24.1, 35.9] · pass@8 61.0% [...] · maj@8 ...'."""
    if not sampled:
        return "—"
    return " · ".join(f"{n} {fmt_accuracy(sampled[n]['value'], sampled[n].get('ci95'))}"
                      for n in sampled_names(sampled, all_k))


def is_grpo(config: dict) -> bool:
    """Whether a run's learner is GRPO (online RL: rollouts inside training instead of a sampling stage)."""
    learner = config.get("learner") or {}
    return isinstance(learner, dict) and learner.get("kind") == "grpo"


def token_curve(metrics: list[dict]) -> list[tuple[int, float]]:
    """(cumulative generated tokens, accuracy) per evaluated iteration: EM sampling tokens or GRPO rollout tokens,
    counted the same way (evaluation tokens are not included), so runs of either kind share one axis."""
    out, total = [], 0
    for m in metrics:
        if m.get("accuracy") is None:
            continue
        total = m["cumulative_tokens"] if m.get("cumulative_tokens") is not None else \
            total + (m.get("tokens_generated") or 0)
        out.append((int(total), float(m["accuracy"])))
    return out


def fmt_curve(curve: list[tuple[int, float]]) -> str:
    """An accuracy-against-generated-tokens curve on one line: '0: 11.0% → 19.7k: 43.0% → 40.1k: 80.0%'."""
    def tokens(n: int) -> str:
        return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)

    return " → ".join(f"{tokens(t)}: {pct(a)}" for t, a in curve) or "—"


def summarize(run: Run) -> dict:
    """One comparison row: setup, initial and final accuracy, and the generated-token budget spent (EM sampling or
    GRPO rollouts; for GRPO, `sampler` is 'grpo rollouts' and the plan format is the learner's)."""
    cfg, metrics = run.config, run.metrics
    grpo = is_grpo(cfg)
    sampler = cfg.get("learner") if grpo else cfg.get("sampler") or {}
    task = cfg.get("task") or {}
    first, last = (metrics[0], metrics[-1]) if metrics else ({}, {})
    trials = sum(m.get("trials") or 0 for m in metrics)
    accepted = sum(m.get("accepted") or 0 for m in metrics)
    initial, final = first.get("accuracy"), last.get("accuracy")
    tokens = last.get("cumulative_tokens")
    iterations = max((m["iteration"] for m in metrics), default=0)
    return {
        "run": str(run.path),
        "method": str(cfg.get("method", "?")),
        "sampler": "grpo rollouts" if grpo else str(sampler.get("kind", "?")),
        "plan_format": str(sampler.get("plan_format", "none")),
        "model": model_name(cfg),
        "task": str(task.get("name", "?") if isinstance(task, dict) else task),
        "iterations": iterations,
        "initial_accuracy": initial,
        "final_accuracy": final,
        "final_ci95": tuple(last["ci95"]) if last.get("ci95") else None,
        "final_sampled": sampled_of(run, last) if metrics else None,
        "delta": final - initial if iterations and initial is not None and final is not None else None,
        "trials": trials,
        "generated_tokens": tokens if tokens is not None else sum(m.get("tokens_generated") or 0 for m in metrics),
        "acceptance_rate": accepted / trials if trials else None,
        "curve": token_curve(metrics),
    }


def compare_runs(run_dirs: list[Path]) -> list[dict]:
    """One row per run directory, in the order given."""
    return [summarize(read_run(d)) for d in run_dirs]


def pct(x: float | None) -> str:
    """A fraction as a percentage with one decimal, or a dash when unknown."""
    return "—" if x is None else f"{100 * x:.1f}%"


def fmt_accuracy(acc: float | None, ci: tuple[float, float] | None) -> str:
    """Accuracy with its 95% interval in points, e.g. '35.0% [28.1, 42.0]'."""
    if acc is None:
        return "—"
    return pct(acc) + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def fmt_delta(delta: float | None) -> str:
    """A change in accuracy in percentage points, signed."""
    return "—" if delta is None else f"{100 * delta:+.1f} pp"


def compare_table(rows: list[dict]) -> Table:
    """A rich table of compare_runs rows, for the terminal (model and task go in the title when all runs share them)."""
    shared = {k: rows[0][k] for k in ("model", "task") if rows and all(r[k] == rows[0][k] for r in rows)}
    table = Table(title=" · ".join(["Runs", *shared.values()]),
                  caption="final: last evaluation with its 95% interval; generated tokens: tokens generated for "
                  "training, EM sampling or GRPO rollouts counted alike (evaluation excluded); accepted: share of "
                  "sampled trajectories accepted (GRPO: rollouts rewarded correct); accuracy at generated tokens: "
                  "each evaluation at the cumulative generated tokens before it, one axis for every run")
    extra = [k for k in ("model", "task") if k not in shared]
    sampled = any(r.get("final_sampled") for r in rows)
    if sampled:
        table.caption += ("; sampled: the final evaluation's pass@1, pass@K (unbiased) and maj@K over K samples per "
                          "question, 95% interval over questions")
    for name in ["run", "method (sampler, plan)", *extra]:
        table.add_column(name, justify="left")
    for name in ["iters", "initial", "final [95% CI]", "Δ", "trials", "generated tokens", "accepted",
                 "accuracy at generated tokens", *(["sampled (final) [95% CI]"] if sampled else [])]:
        table.add_column(name, justify="right")
    for r in rows:
        table.add_row(
            Path(r["run"]).name, f"{r['method']} ({r['sampler']}, {r['plan_format']})", *(r[k] for k in extra),
            str(r["iterations"]), pct(r["initial_accuracy"]), fmt_accuracy(r["final_accuracy"], r["final_ci95"]),
            fmt_delta(r["delta"]), f"{r['trials']:,}", f"{r['generated_tokens']:,}", pct(r["acceptance_rate"]),
            fmt_curve(r["curve"]).replace(" → ", "\n"),
            *([fmt_sampled(r.get("final_sampled")).replace(" · ", "\n")] if sampled else []),
        )
    return table
