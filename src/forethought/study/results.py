"""A study's results from its arms' own files: per arm and seed the accuracy (with its interval) after each
iteration, generated and prompt tokens, seconds; final accuracies pooled over seeds with the paired difference to
the baseline arm over the same test questions; transfer accuracies; plots; the table as markdown.

Pooling over seeds: a question's verdicts from every seed form its list, so an accuracy's interval is Wilson's with
one seed and normal over per-question means with several (stats.accuracy_ci), and the paired difference is the mean
over questions of (arm's mean − baseline's mean) on the questions both answered, normal interval
(stats.paired_delta_ci). Questions, not seeds, are the unit of sampling.
"""

from __future__ import annotations

import json
from pathlib import Path

from matplotlib.figure import Figure
from matplotlib.ticker import EngFormatter, PercentFormatter

from forethought.jsonl import read_jsonl, write_json
from forethought.stats import accuracy_ci, correct_by_question, paired_delta_ci

STUDY_JSON, TABLE_MD = "study.json", "table.md"
PLOTS = {"tokens": "accuracy_vs_tokens.png", "seconds": "accuracy_vs_seconds.png"}
COLOURS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777", "#475569"]


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _records(path: Path) -> list[dict]:
    return [r for _, r in read_jsonl(path)] if path.is_file() else []


def _tokens_in(it: Path) -> int | None:
    """Prompt tokens of one iteration's sampling: its samples, or its GRPO rollouts (each request's prompt counted
    once for its n samples); None when they were not recorded (TRL's own generate, runs from before they were)."""
    if (it / "samples.jsonl").is_file():
        return sum(r.get("tokens_in", 0) for r in _records(it / "samples.jsonl"))
    rows = _records(it / "rollouts.jsonl")
    if not rows or any("tokens_in" not in r for r in rows):
        return None
    return sum(r["tokens_in"] for r in rows)


def run_points(d: Path) -> list[dict]:
    """One point per evaluated iteration of a run directory: accuracy, interval, cumulative generated and prompt
    tokens, cumulative seconds, and where its evaluation records are."""
    points, prompt, seconds = [], 0, 0.0
    metrics = [m for _, m in read_jsonl(d / "metrics.jsonl")] if (d / "metrics.jsonl").is_file() else []
    stage_seconds = _json(d / "manifest.json").get("seconds", {})
    for m in sorted(metrics, key=lambda m: m["iteration"]):
        it = d / f"iter_{m['iteration']:03d}"
        tin = _tokens_in(it) if m["iteration"] else 0
        prompt = None if prompt is None or tin is None else prompt + tin
        # the stages' own seconds (they leave out time the run was stopped); an evaluation's stage not recorded yet:
        # the iteration's metrics
        mine = {k: v for k, v in stage_seconds.items() if k.startswith(f"{it.name}/")}
        seconds += sum(mine.values()) if f"{it.name}/eval" in mine else (m.get("seconds") or 0.0)
        points.append({"iteration": m["iteration"], "accuracy": m["accuracy"], "ci95": m["ci95"],
                       "tokens": m.get("cumulative_tokens", 0), "prompt_tokens": prompt, "seconds": round(seconds, 1),
                       "records": str(it / "eval" / "records.jsonl")})
    return points


def cpl_points(d: Path) -> list[dict]:
    """The CPL counterpart: the base model (iteration 0), then each round's Step-APO policy; tokens are the search's."""
    manifest = _json(d / "manifest.json").get("seconds", {})
    points, tokens, prompt = [], 0, 0
    base = _json(d / "eval" / "base" / "summary.json")
    seconds = manifest.get("eval/base", 0.0)
    if base:
        points.append({"iteration": 0, "accuracy": base["accuracy"], "ci95": base["ci95"], "tokens": 0,
                       "prompt_tokens": 0, "seconds": round(seconds, 1),
                       "records": str(d / "eval" / "base" / "records.jsonl")})
    k = 1
    while (search := _json(d / f"r{k}" / "search.json")) or (d / f"r{k}").is_dir():
        tokens += search.get("tokens", 0)
        prompt += search.get("tokens_in", 0)
        seconds += sum(v for s, v in manifest.items() if s.startswith(f"r{k}/") or s.startswith(f"eval/r{k}_"))
        summary = _json(d / "eval" / f"r{k}_apo" / "summary.json")
        if summary:
            points.append({"iteration": k, "accuracy": summary["accuracy"], "ci95": summary["ci95"], "tokens": tokens,
                           "prompt_tokens": prompt, "seconds": round(seconds, 1),
                           "records": str(d / "eval" / f"r{k}_apo" / "records.jsonl")})
        k += 1
    return points


def _pooled(records_by_seed: list[list[dict]]) -> dict[str, list[bool]]:
    """Each question's verdicts over every seed (and sample), in seed order."""
    out: dict[str, list[bool]] = {}
    for records in records_by_seed:
        for q, verdicts in correct_by_question(records).items():
            out.setdefault(q, []).extend(verdicts)
    return out


def _accuracy(per_question: dict[str, list[bool]]) -> tuple[float | None, list[float] | None]:
    if not per_question:
        return None, None
    acc, ci = accuracy_ci(list(per_question.values()))
    return acc, [ci[0], ci[1]]


def _delta(base: dict, arm: dict) -> dict | None:
    shared = set(base) & set(arm)
    if not shared:
        return None
    delta, ci = paired_delta_ci(base, arm)
    return {"delta": delta, "ci95": [ci[0], ci[1]], "questions": len(shared)}


def summarize(root: Path, arms: list[dict], seeds: list[int], baseline: str, transfer: list[str] = (),
              budget: int | None = None, finished: set[str] | None = None) -> dict:
    """study.json's content from the arm directories under `root` (arms/NAME/seed_S, transfer/LABEL/NAME/seed_S).

    `arms`: [{"name", "kind" (run | cpl), and anything else to carry into study.json (note, recipe, method,
    budget_share, max_call_tokens...)}]. `finished`: the study stages done (None: all); an arm with a seed not
    done shows its iterations so far but no final accuracy (its last evaluation so far is not its result)."""
    out = {"budget": budget, "seeds": seeds, "baseline": baseline, "transfer": list(transfer), "arms": {}}
    finals: dict[str, dict[str, list[bool]]] = {}
    transfer_finals: dict[str, dict[str, dict[str, list[bool]]]] = {t: {} for t in transfer}
    for arm in arms:
        name = arm["name"]
        complete = finished is None or all(f"arms/{name}/seed_{s}" in finished for s in seeds)
        entry = {**arm, "finished": complete, "seeds": {}}
        per_seed_points = {}
        for seed in seeds:
            d = root / "arms" / name / f"seed_{seed}"
            points = (run_points if arm["kind"] == "run" else cpl_points)(d)
            per_seed_points[seed] = points
            last = points[-1] if points else {}
            entry["seeds"][str(seed)] = {
                "iterations": [{k: v for k, v in p.items() if k != "records"} for p in points],
                "tokens": last.get("tokens"), "prompt_tokens": last.get("prompt_tokens"),
                "seconds": last.get("seconds"),
            }
            manifest = _json(d / "manifest.json")
            if reused := manifest.get("reused"):  # stages copied from another arm (study/reuse.py)
                entry["seeds"][str(seed)]["reused"] = reused
            if machines := sorted(set(manifest.get("machine", {}).values())):  # what its seconds were measured on
                entry["seeds"][str(seed)]["machines"] = machines
            if budget is not None and last:
                over = last["tokens"] - budget
                entry["seeds"][str(seed)]["over_budget"] = max(0, over)
                if arm.get("max_call_tokens") is not None:
                    entry["seeds"][str(seed)]["within_budget"] = over <= arm["max_call_tokens"]
        # pooled over seeds, iteration by iteration (only iterations every seed reached)
        done = [per_seed_points[s] for s in seeds if per_seed_points[s]] if complete else []
        pooled = []
        if len(done) == len(seeds):
            for i in range(min(len(p) for p in done)):
                group = [p[i] for p in done]
                acc, ci = _accuracy(_pooled([_records(Path(p["records"])) for p in group]))
                pooled.append({"iteration": group[0]["iteration"], "accuracy": acc, "ci95": ci,
                               "tokens": sum(p["tokens"] for p in group) / len(group),
                               "seconds": sum(p["seconds"] for p in group) / len(group)})
            finals[name] = _pooled([_records(Path(p[-1]["records"])) for p in done])
        entry["pooled"] = pooled
        acc, ci = _accuracy(finals.get(name, {}))
        seeds_out = entry["seeds"].values()
        known = [s for s in seeds_out if s["tokens"] is not None]
        entry["final"] = {
            "accuracy": acc, "ci95": ci, "questions": len(finals.get(name, {})),
            "tokens": sum(s["tokens"] for s in known) / len(known) if known else None,
            "prompt_tokens": (sum(s["prompt_tokens"] for s in known) / len(known)
                              if known and all(s["prompt_tokens"] is not None for s in known) else None),
            "seconds": sum(s["seconds"] for s in known) / len(known) if known else None,
        }
        entry["transfer"] = {}
        for label in transfer:
            recs = [_records(root / "transfer" / label / name / f"seed_{s}" / "records.jsonl") for s in seeds]
            if all(recs):
                transfer_finals[label][name] = _pooled(recs)
            acc, ci = _accuracy(transfer_finals[label].get(name, {}))
            entry["transfer"][label] = {"accuracy": acc, "ci95": ci}
        out["arms"][name] = entry
    for name, entry in out["arms"].items():
        if name != baseline and name in finals and baseline in finals:
            entry["final"]["delta_vs_baseline"] = _delta(finals[baseline], finals[name])
        for label in transfer:
            t = transfer_finals[label]
            if name != baseline and name in t and baseline in t:
                entry["transfer"][label]["delta_vs_baseline"] = _delta(t[baseline], t[name])
    out["table_markdown"] = markdown_table(out)
    return out


# ---------------------------------------------------------------- tables


def _pct(acc, ci) -> str:
    if acc is None:
        return "—"
    return f"{100 * acc:.1f}%" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")


def _pp(d: dict | None) -> str:
    if not d:
        return "—"
    return f"{100 * d['delta']:+.1f} pp [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]".replace("-", "−")


def _num(x) -> str:
    return "—" if x is None else f"{x:,.0f}"


def table_rows(study: dict) -> tuple[list[str], list[list[str]]]:
    """The final-accuracy table: header and one row of cells per arm."""
    base = study["baseline"]
    header = ["arm", "final accuracy [95% CI]", f"vs {base} [95% CI]", "generated tokens", "prompt tokens",
              "seconds"]
    for label in study.get("transfer", []):
        header += [f"{label} [95% CI]", f"{label} vs {base}"]
    rows = []
    for name, a in study["arms"].items():
        f = a["final"]
        title = name + (" (baseline)" if name == base else "") + ("" if a.get("finished", True) else " (not finished)")
        row = [title, _pct(f["accuracy"], f["ci95"]),
               "" if name == base else _pp(f.get("delta_vs_baseline")), _num(f["tokens"]), _num(f["prompt_tokens"]),
               _num(f["seconds"])]
        for label in study.get("transfer", []):
            t = a["transfer"].get(label, {})
            row += [_pct(t.get("accuracy"), t.get("ci95")), "" if name == base else _pp(t.get("delta_vs_baseline"))]
        rows.append(row)
    return header, rows


def markdown_table(study: dict) -> str:
    """The table as GitHub markdown, with a line saying what the intervals and differences are."""
    header, rows = table_rows(study)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    seeds = study["seeds"]
    lines.append("")
    lines.append(f"Budget {_num(study['budget'])} generated tokens per arm and seed; seeds {', '.join(map(str, seeds))}; "
                 "tokens and seconds are means over seeds. Accuracy on the held-out questions pooled over seeds "
                 "(95% interval: Wilson for one seed, else normal over per-question means); the difference to "
                 f"{study['baseline']} is paired over the same questions (normal interval).")
    machines = {name: sorted({m for s in a["seeds"].values() for m in s.get("machines", [])})
                for name, a in study["arms"].items()}
    kinds = {m for ms in machines.values() for m in ms}
    if len(kinds) == 1:
        lines.append(f"Seconds measured on {kinds.pop()}.")
    elif kinds:  # a study carried across machines: seconds are not comparable between kinds
        lines.append("Seconds measured on more than one kind of machine: " + "; ".join(
            f"{name}: {' and '.join(ms)}" for name, ms in machines.items() if ms) + ".")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- plots


def study_plot(study: dict, x: str) -> Figure:
    """Accuracy (pooled over seeds, 95% interval bars) against cumulative generated tokens or seconds, per arm; a
    baseline with one point (no training) is a dashed line with its interval as a band, to read every arm against."""
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xlabel("generated tokens (training-time sampling, search or rollouts)" if x == "tokens"
                  else "seconds (wall time of the arm's stages)")
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    top = 0.0
    for k, (name, a) in enumerate(study["arms"].items()):
        pts = [p for p in a["pooled"] if p["accuracy"] is not None]
        if not pts:
            continue
        colour = COLOURS[k % len(COLOURS)]
        if name == study["baseline"] and len(pts) == 1:
            (lo, hi), top = pts[0]["ci95"], max(top, pts[0]["ci95"][1])
            ax.axhspan(lo, hi, color=colour, alpha=0.12, lw=0)
            ax.axhline(pts[0]["accuracy"], color=colour, ls="--", lw=1.4, label=name)
            continue
        xs, accs = [p[x] for p in pts], [p["accuracy"] for p in pts]
        err = [[acc - p["ci95"][0] for acc, p in zip(accs, pts)], [p["ci95"][1] - acc for acc, p in zip(accs, pts)]]
        top = max(top, max(p["ci95"][1] for p in pts))
        ax.errorbar(xs, accs, yerr=err, color=colour, marker="o", capsize=3, lw=1.6, ms=5,
                    label=name, ls="--" if name == study["baseline"] else "-")
    ax.set_ylim(0, min(1.02, top + 0.08) if top else 1.0)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.margins(x=0.06)
    if ax.get_legend_handles_labels()[0]:
        fig.legend(loc="outside right center", fontsize=8, frameon=False)
    return fig


def write_results(study) -> dict:
    """study.json, table.md and the two plots (PNG) in the study directory; returns study.json's content."""
    cfg = study.cfg
    arms = []
    from forethought.study.runner import budget_key, iterations_of, max_call_tokens

    for arm in cfg.arms:
        c = study.arms[arm.name, cfg.seeds[0]]
        shares = iterations_of(c)
        arms.append({"name": arm.name, "kind": study.kinds[arm.name], "recipe": arm.recipe, "note": arm.note,
                     "method": getattr(c, "method", "cpl"), "iterations": shares,
                     "budget_key": budget_key(c) if shares else None,
                     "budget_share": cfg.budget // shares if shares else 0,
                     "max_call_tokens": max_call_tokens(c) if shares else 0})
    done = study.stages.manifest["stages"]
    stages = {name: done.get(name, "pending") for name, _ in study.planned()}
    finished = {name for name, status in stages.items() if status in ("done", "skipped")}
    out = summarize(study.root, arms, cfg.seeds, cfg.baseline, list(cfg.transfer), cfg.budget, finished=finished)
    out = {"source": str(study.source), "output": str(study.root), "task": cfg.task.model_dump(), "model": cfg.model,
           **out, "complete": len(finished) == len(stages), "stages": stages}
    write_json(study.root / STUDY_JSON, out)
    (study.root / TABLE_MD).write_text(out["table_markdown"], encoding="utf-8")
    for x, name in PLOTS.items():
        study_plot(out, x).savefig(study.root / name, dpi=110, bbox_inches="tight")
    return out
