"""One self-contained HTML report of a run: setup, accuracy and budget plots, metrics, example trajectories."""

from __future__ import annotations

import base64
import io
import json
from collections import Counter
from html import escape
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, MaxNLocator, PercentFormatter

from forethought.errors import UserError
from forethought.jsonl import check_output_file, utf8
from forethought.report.compare import (Run, compare_runs, fmt_accuracy, fmt_curve, fmt_delta, is_grpo, pct,
                                       read_run, sampled_names, sampled_of, summarize, token_curve)

BLUE, LIGHT_BLUE = "#2563eb", "#93c5fd"
SERIES_COLOURS = [BLUE, "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#db2777"]
REASON_COLOURS = ["#f87171", "#fb923c", "#facc15", "#a78bfa", "#94a3b8", "#f472b6", "#2dd4bf"]
FOLD_CHARS, FOLD_LINES = 600, 12

CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1e293b;
  background:#f8fafc;margin:0}
main{max-width:1120px;margin:0 auto;padding:28px 32px 60px}
h1{font-size:26px;margin:0 0 6px}
h2{font-size:19px;margin:34px 0 12px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.sub{color:#64748b;margin:0 0 16px}
.chips{margin-bottom:8px}
.chips span{display:inline-block;background:#e2e8f0;border-radius:12px;padding:2px 10px;
  margin:0 6px 6px 0;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 14px}
.card b{display:block;font-size:22px}.card small{color:#64748b}
.plots{display:grid;grid-template-columns:1fr 1fr;gap:14px;align-items:start}
.plots figure{margin:0;background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:8px}
.plots img{width:100%;display:block}.plots figcaption{color:#64748b;font-size:13px;padding:2px 6px}
figcaption::first-letter{text-transform:uppercase}
.note{color:#64748b;font-style:italic}
table{border-collapse:collapse;width:100%;background:#fff;font-size:13.5px}
th,td{border-bottom:1px solid #e2e8f0;padding:5px 8px;text-align:right}
td{white-space:nowrap}th{background:#f1f5f9;vertical-align:bottom}td:first-child,th:first-child{text-align:left}
table.kv td{text-align:left;white-space:normal}table.kv td:first-child{color:#475569;width:30%}
.examples{display:grid;gap:12px}
.ex{background:#fff;border:1px solid #e2e8f0;border-left:4px solid #16a34a;border-radius:8px;
  padding:10px 14px}
.ex.rejected{border-left-color:#dc2626}
.badge{border-radius:4px;padding:1px 8px;font-size:12px;font-weight:600;color:#fff;background:#16a34a}
.rejected .badge{background:#dc2626}.meta{color:#475569;font-size:13px;margin-left:8px}
.q{margin:8px 0;font-weight:500}
details{margin:6px 0}summary{cursor:pointer;color:#334155;font-weight:600;font-size:13px}
pre{white-space:pre-wrap;word-break:break-word;background:#f1f5f9;border-radius:6px;padding:8px 10px;margin:4px 0;
  font:13px/1.45 ui-monospace,"DejaVu Sans Mono",monospace}
code{font:13px ui-monospace,"DejaVu Sans Mono",monospace;background:#f1f5f9;padding:0 4px;border-radius:3px}
"""


def png_uri(fig: Figure) -> str:
    """A matplotlib figure as a base64 PNG data URI (rendered with Agg, no pyplot state)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _axes(xlabel: str, ylabel: str):
    fig = Figure(figsize=(5.4, 3.2), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    return fig, ax


def _accuracy_points(ax, xs: list[float], metrics: list[dict]) -> None:
    accs = [m["accuracy"] for m in metrics]
    cis = [m.get("ci95") or (a, a) for a, m in zip(accs, metrics)]
    err = [[a - c[0] for a, c in zip(accs, cis)], [c[1] - a for a, c in zip(accs, cis)]]
    ax.errorbar(xs, accs, yerr=err, color=BLUE, marker="o", capsize=4, lw=1.8)
    top = max(c[1] for c in cis)
    ax.set_ylim(0, min(1.0, top + 0.1) if top < 0.9 else 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))


def accuracy_plot(metrics: list[dict]) -> str:
    """Evaluation accuracy per iteration with 95% interval error bars."""
    fig, ax = _axes("iteration", "accuracy")
    its = [m["iteration"] for m in metrics]
    _accuracy_points(ax, its, metrics)
    ax.set_xlim(min(its) - 0.5, max(its) + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    return png_uri(fig)


def tokens_plot(metrics: list[dict]) -> str | None:
    """Accuracy against cumulative generated tokens (EM sampling or GRPO rollouts): what each point of accuracy
    cost; None before any tokens were generated for training."""
    xs = [m.get("cumulative_tokens") or 0 for m in metrics]
    if not any(xs):
        return None
    fig, ax = _axes("cumulative generated tokens", "accuracy")
    _accuracy_points(ax, xs, metrics)
    for x, m in zip(xs, metrics):
        ax.annotate(f"it {m['iteration']}", (x, m["accuracy"]), textcoords="offset points", xytext=(6, -12),
                    fontsize=8, color="#475569")
    ax.margins(x=0.08)
    ax.xaxis.set_major_formatter(EngFormatter())
    return png_uri(fig)


def comparison_figure(runs: list[Run]) -> Figure:
    """Every run's accuracy against its cumulative generated tokens on one axis (EM sampling tokens and GRPO rollout
    tokens counted alike), one line per run with 95% interval error bars."""
    fig, ax = _axes("cumulative generated tokens", "accuracy")
    top = 0.0
    for k, run in enumerate(runs):
        metrics = [m for m in run.metrics if m.get("accuracy") is not None]
        curve = token_curve(metrics)
        xs, accs = [t for t, _ in curve], [a for _, a in curve]
        cis = [m.get("ci95") or (a, a) for a, m in zip(accs, metrics)]
        err = [[a - c[0] for a, c in zip(accs, cis)], [c[1] - a for a, c in zip(accs, cis)]]
        row = summarize(run)
        ax.errorbar(xs, accs, yerr=err, color=SERIES_COLOURS[k % len(SERIES_COLOURS)], marker="o", capsize=3,
                    lw=1.6, label=f"{run.path.name} ({row['method']})")
        top = max([top, *(c[1] for c in cis)])
    ax.set_ylim(0, min(1.0, top + 0.1) if top < 0.9 else 1.02)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.margins(x=0.05)
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return fig


def comparison_html(runs: list[Run]) -> str:
    """The report's comparison section: the runs' accuracy against generated tokens on one axis, and a table."""
    rows = compare_runs([r.path for r in runs])
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in [
            Path(r["run"]).name, f"{r['method']} ({r['sampler']}, {r['plan_format']})", pct(r["initial_accuracy"]),
            fmt_accuracy(r["final_accuracy"], r["final_ci95"]), fmt_delta(r["delta"]), f"{r['generated_tokens']:,}",
            fmt_curve(r["curve"])]) + "</tr>" for r in rows)
    cols = ["run", "method (sampler, plan)", "initial", "final&nbsp;[95%&nbsp;CI]", "Δ", "generated tokens",
            "accuracy at generated tokens"]
    return ("<h2>Comparison</h2><p class='sub'>Accuracy against cumulative generated tokens: tokens generated for "
            "training, EM sampling or GRPO rollouts counted alike; evaluation tokens excluded.</p>"
            + figures([(png_uri(comparison_figure(runs)), "accuracy against cumulative generated tokens, all runs")])
            + "<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + f"</tr>{body}</table>")


def acceptance_plot(metrics: list[dict]) -> str | None:
    """Per sampled iteration: share of questions with an accepted trajectory (the metrics' acceptance_rate)
    and share of trajectories accepted (accepted / trials); None before any sampling."""
    sampled = [m for m in metrics if m.get("trials")]
    if not sampled:
        return None
    fig, ax = _axes("iteration", "accepted")
    its = [m["iteration"] for m in sampled]
    series = [("questions with an accepted trajectory", [m.get("acceptance_rate") or 0.0 for m in sampled], BLUE),
              ("trajectories accepted", [m.get("accepted", 0) / m["trials"] for m in sampled], LIGHT_BLUE)]
    for k, (label, rates, colour) in enumerate(series):
        bars = ax.bar([i + (k - 0.5) * 0.36 for i in its], rates, width=0.36, color=colour, label=label)
        ax.bar_label(bars, labels=[pct(r) for r in rates], fontsize=7, padding=2)
    ax.set_ylim(0, 1.15)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.legend(loc="outside lower center", ncol=2, fontsize=8, frameon=False)
    return png_uri(fig)


def samples_files(run_dir: Path) -> dict[int, Path]:
    """Each sampled iteration's samples.jsonl, by iteration number."""
    files = run_dir.glob("iter_*/samples.jsonl")
    return {int(p.parent.name[5:]): p for p in sorted(files) if p.parent.name[5:].isdigit() and p.stat().st_size}


def scan_samples(path: Path, accepted: int = 3, rejected: int = 3) -> tuple[list[dict], list[dict], Counter]:
    """A few accepted and a few rejected trajectories (spread over reasons), and counts by outcome.

    The file may still be growing: a last line without its newline is a partial write and is skipped.
    """
    counts: Counter = Counter()
    ok: list[dict] = []
    by_reason: dict[str, list[dict]] = {}
    with utf8(path), path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith("\n") or not line.strip():
                continue
            try:
                s = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {lineno}: not valid JSON ({e.msg})") from None
            if s.get("accepted"):
                counts["accepted"] += 1
                if len(ok) < accepted:
                    ok.append(s)
            else:
                reason = s.get("rejected_reason") or "rejected"
                counts[reason] += 1
                bucket = by_reason.setdefault(reason, [])
                if len(bucket) < rejected:
                    bucket.append(s)
    rounds = [s for group in zip(*by_reason.values()) for s in group] if by_reason else []
    rest = [s for bucket in by_reason.values() for s in bucket if s not in rounds]
    return ok, (rounds + rest)[:rejected], counts


def rejections_plot(counts: dict[int, Counter]) -> str | None:
    """Why trajectories were rejected, per iteration, as shares of all sampled trajectories."""
    reasons = sorted({r for c in counts.values() for r in c if r != "accepted"})
    if not reasons:
        return None
    fig, ax = _axes("iteration", "share of trajectories")
    its = sorted(counts)
    bottom = [0.0] * len(its)
    for k, reason in enumerate(reasons):
        share = [counts[i][reason] / max(1, sum(counts[i].values())) for i in its]
        ax.bar(its, share, bottom=bottom, width=0.6, label=reason, color=REASON_COLOURS[k % len(REASON_COLOURS)])
        bottom = [b + s for b, s in zip(bottom, share)]
    ax.set_ylim(0, 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    fig.legend(loc="outside lower center", ncol=min(len(reasons), 5), fontsize=8, frameon=False)
    return png_uri(fig)


def _text_block(label: str, text: str | None) -> str:
    if not text:
        return ""
    long = len(text) > FOLD_CHARS or text.count("\n") > FOLD_LINES
    return (f"<details{'' if long else ' open'}><summary>{label} ({len(text):,} chars)</summary>"
            f"<pre>{escape(text)}</pre></details>")


def example_html(s: dict) -> str:
    """One trajectory as a card; every model- or data-derived string is HTML-escaped."""
    accepted = bool(s.get("accepted"))
    status = "accepted" if accepted else f"rejected: {s.get('rejected_reason') or '?'}"
    meta = [f"question <code>{escape(str(s.get('question_id', '?')))}</code>", f"trial {escape(str(s.get('trial')))}",
            f"extracted <code>{escape(str(s.get('extracted')))}</code>",
            f"gold <code>{escape(str(s.get('gold')))}</code>",
            f"{s.get('tokens_out') or 0:,} tokens out"]
    if s.get("hint_used"):
        meta.append("hint used")
    return (f"<article class='ex {'accepted' if accepted else 'rejected'}'>"
            f"<span class='badge'>{escape(status)}</span><span class='meta'>{' · '.join(meta)}</span>"
            f"<div class='q'>{escape(str(s.get('question', '')))}</div>"
            + _text_block("Plan", s.get("plan")) + _text_block("Reflection", s.get("reflection"))
            + _text_block("Solution", s.get("solution")) + "</article>")


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", json.dumps(v) if not isinstance(v, str) else v))
    return out


def header_html(run: Run, row: dict) -> str:
    """Title, setup chips, headline numbers and the folded full config."""
    grpo = is_grpo(run.config)
    sampler = run.config.get("sampler") or {}
    chips = [("method", row["method"]), ("model", row["model"]), ("task", row["task"]), ("sampler", row["sampler"]),
             ("plan format", row["plan_format"]),
             ("rollouts/question/step", run.config["learner"].get("num_generations", "?")) if grpo
             else ("trials/question", sampler.get("trials", "?"))]
    stages = run.manifest.get("stages") or {}
    pending = [f"{k} ({v})" for k, v in stages.items() if v != "done"]
    progress = f"{len(stages) - len(pending)} of {len(stages)} stages done" + (
        f"; not done: {', '.join(pending)}" if pending else "")
    ci = row["final_ci95"]
    cards = [("initial accuracy", pct(row["initial_accuracy"]), "iteration 0, before training"),
             ("final accuracy", pct(row["final_accuracy"]),
              f"95% CI {fmt_accuracy(row['final_accuracy'], ci).split(' ', 1)[-1]}" if ci else ""),
             ("change", fmt_delta(row["delta"]),
              f"after {row['iterations']} iteration(s)" if row["iterations"] else "no trained iteration yet"),
             ("generated tokens", f"{row['generated_tokens']:,}",
              f"{row['trials']:,} {'rollouts' if grpo else 'trials'}, {pct(row['acceptance_rate'])} "
              f"{'correct' if grpo else 'accepted'}" if row["trials"] else "no sampling yet")]
    config_rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in _flatten(run.config))
    return (f"<h1>{escape(row['method'])} on {escape(row['task'])}</h1>"
            f"<p class='sub'>{escape(str(run.path))} · {escape(progress)}</p>"
            "<div class='chips'>" + "".join(f"<span>{escape(k)}: <b>{escape(str(v))}</b></span>" for k, v in chips)
            + "</div><div class='cards'>"
            + "".join(f"<div class='card'><small>{escape(t)}</small><b>{escape(v)}</b><small>{escape(n)}</small></div>"
                      for t, v, n in cards)
            + f"</div><details><summary>Full config</summary><table class='kv'>{config_rows}</table></details>")


def metrics_html(metrics: list[dict]) -> str:
    """The per-iteration metrics as a table."""
    cols = ["iteration", "accuracy&nbsp;[95%&nbsp;CI]", "question acceptance", "questions", "trials", "accepted",
            "train examples", "generated tokens", "cumulative tokens", "eval tokens", "seconds"]

    def num(m: dict, k: str) -> str:
        v = m.get(k)
        return "—" if v is None else f"{v:,.1f}" if isinstance(v, float) else f"{v:,}"

    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(c)}</td>" for c in [
            str(m["iteration"]), fmt_accuracy(m.get("accuracy"), m.get("ci95")), pct(m.get("acceptance_rate")),
            num(m, "questions"), num(m, "trials"), num(m, "accepted"), num(m, "train_examples"),
            num(m, "tokens_generated"), num(m, "cumulative_tokens"), num(m, "eval_tokens"), num(m, "seconds")])
        + "</tr>" for m in metrics)
    return "<table><tr>" + "".join(f"<th>{c}</th>" for c in cols) + f"</tr>{rows}</table>"


def sampled_html(run: Run) -> str:
    """Per-iteration sampled metrics (evaluations with eval.n > 1): pass@k, maj@K, mean@K with 95% intervals;
    empty when no evaluation sampled more than once per question."""
    found = [(m["iteration"], s) for m in run.metrics if (s := sampled_of(run, m))]
    if not found:
        return ""
    names = list(dict.fromkeys(n for _, s in found for n in sampled_names(s)))
    kinds = sorted({s[n].get("interval", "?") for _, s in found for n in sampled_names(s)})
    rows = "".join("<tr>" + f"<td>{it}</td>" + "".join(
        f"<td>{escape(fmt_accuracy(s[n]['value'], s[n].get('ci95')) if n in s else '—')}</td>" for n in names)
        + "</tr>" for it, s in found)
    return ("<h2>Sampled metrics</h2><p class='sub'>K samples per question: pass@k is the unbiased estimator "
            "1 − C(n−c, k)/C(n, k) averaged over questions; maj@K scores the majority answer (equivalent answers vote "
            "together, a tie goes to the answer given first); mean@K is the mean per-sample accuracy. 95% intervals "
            f"over questions ({escape(', '.join(kinds))}: Wilson when every question scores 0 or 1, else normal).</p>"
            "<table><tr><th>iteration</th>" + "".join(f"<th>{escape(n)}&nbsp;[95%&nbsp;CI]</th>" for n in names)
            + f"</tr>{rows}</table>")


def examples_html(iteration: int, accepted: list[dict], rejected: list[dict], counts: Counter) -> str:
    """Example trajectories of one sampled iteration, with its outcome counts."""
    breakdown = ", ".join(f"{escape(k)} {v:,}" for k, v in counts.most_common() if k != "accepted") or "none"
    return (f"<p class='sub'>iter_{iteration:03d}: {sum(counts.values()):,} trajectories, "
            f"{counts['accepted']:,} accepted; rejected: {breakdown}.</p><div class='examples'>"
            + "".join(example_html(s) for s in accepted + rejected) + "</div>")


def figures(plots: list[tuple[str | None, str]]) -> str:
    """Plots as captioned inline images; those with nothing to show yet are named in one note."""
    shown = "".join(f"<figure><img alt='{escape(c)}' src='{u}'><figcaption>{escape(c)}</figcaption></figure>"
                    for u, c in plots if u)
    missing = [c for u, c in plots if not u]
    note = f"<p class='note'>No sampled iteration yet, so no plot of: {escape('; '.join(missing))}.</p>"
    return f"<div class='plots'>{shown}</div>" + (note if missing else "")


def write_report(run_dir: Path, out: Path | None = None, others: list[Path] | tuple = ()) -> Path:
    """Write the run's report as one HTML file with everything inline (default RUN/report.html); with `others`
    (more run directories), a comparison section puts every run's accuracy against generated tokens on one axis.
    A study directory gets the study page (forethought.study.report)."""
    from forethought.study.report import is_study_dir, write_study_report

    if is_study_dir(Path(run_dir)) and not others:
        return write_study_report(Path(run_dir), out)
    run = read_run(run_dir)
    compared = [run, *(read_run(d) for d in others)]
    out = check_output_file(Path(out) if out is not None else run.path / "report.html", "report file")
    row = summarize(run)
    scans = {i: scan_samples(p) for i, p in samples_files(run.path).items()}
    if run.metrics:
        plots = figures([(accuracy_plot(run.metrics), "accuracy per iteration (95% interval)"),
                         (tokens_plot(run.metrics), "accuracy against cumulative generated tokens"),
                         (acceptance_plot(run.metrics), "acceptance per iteration"),
                         (rejections_plot({i: sc[2] for i, sc in scans.items()}), "rejections by reason")])
    else:
        plots = "<p class='note'>No iteration has finished yet.</p>"
    examples = (examples_html(max(scans), *scans[max(scans)]) if scans
                else "<p class='note'>No iteration has sampled trajectories yet.</p>")
    body = (header_html(run, row) + f"<h2>Progress</h2>{plots}"
            + (comparison_html(compared) if others else "")
            + f"<h2>Metrics</h2>{metrics_html(run.metrics)}" + sampled_html(run)
            + f"<h2>Example trajectories</h2>{examples}")
    title = escape(f"{row['method']} · {row['task']} · {row['model']}")
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
           f"<style>{CSS}</style></head><body><main>{body}</main></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
