"""A study as one self-contained HTML page: setup, the two plots (inline PNG), the final table with paired
differences, transfer, and every arm's per-seed, per-iteration numbers."""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from forethought.config import load_yaml
from forethought.errors import UserError
from forethought.jsonl import check_output_file, read_text
from forethought.report.html import CSS, png_uri
from forethought.study.results import STUDY_JSON, _num, _pct, study_plot, table_rows


def is_study_dir(path: Path) -> bool:
    """A study directory holds study.json, or a config.yaml with `arms` and `budget` (a study still running)."""
    path = Path(path)
    if (path / STUDY_JSON).is_file():
        return True
    if (path / "config.yaml").is_file() and (path / "arms").is_dir():
        try:
            cfg = load_yaml(path / "config.yaml")
        except UserError:
            return False
        return "arms" in cfg and "budget" in cfg
    return False


def _table(header: list[str], rows: list[list[str]]) -> str:
    return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
            + "</table>")


def _arm_details(name: str, arm: dict) -> str:
    rows = []
    for seed, s in arm["seeds"].items():
        for p in s["iterations"]:
            rows.append([seed, str(p["iteration"]), _pct(p["accuracy"], p["ci95"]), _num(p["tokens"]),
                         _num(p["prompt_tokens"]), _num(p["seconds"])])
    over = [f"seed {k}: {'within' if s.get('within_budget', True) else 'OVER'} budget (+{_num(s.get('over_budget'))} "
            "tokens over)" for k, s in arm["seeds"].items() if s.get("over_budget")]
    what = f"{escape(arm.get('kind', '?'))} · recipe {escape(str(arm.get('recipe', '?')))}"
    if arm.get("budget_key"):
        what += (f" · {escape(arm['budget_key'])} = {arm['budget_share']:,} per iteration × {arm['iterations']}; "
                 f"one engine call ≤ {arm.get('max_call_tokens', 0):,} tokens")
    return (f"<details><summary>{escape(name)}: {escape(arm.get('note') or '')}</summary><p class='sub'>{what}"
            + (f"<br>{escape('; '.join(over))}" if over else "") + "</p>"
            + _table(["seed", "iteration", "accuracy [95% CI]", "generated tokens", "prompt tokens", "seconds"], rows)
            + "</details>")


def write_study_report(study_dir: Path, out: Path | None = None) -> Path:
    """STUDY/report.html from study.json (re-plotted, so the page is self-contained)."""
    study_dir = Path(study_dir)
    path = study_dir / STUDY_JSON
    if not path.is_file():
        raise UserError(f"{study_dir}: no {STUDY_JSON} yet (it is written as each arm finishes); run `forethought "
                        "study` on the study file (it resumes) to write it")
    try:
        study = json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e.msg})") from None
    out = check_output_file(Path(out) if out is not None else study_dir / "report.html", "report file")
    header, rows = table_rows(study)
    task = study.get("task") or {}
    chips = [("budget", f"{study['budget']:,} generated tokens per arm and seed"),
             ("seeds", ", ".join(map(str, study["seeds"]))), ("task", task.get("name", "?")),
             ("model", study.get("model") or "each arm's recipe"), ("baseline", study["baseline"])]
    stages = study.get("stages") or {}
    pending = [k for k, v in stages.items() if v not in ("done", "skipped")]
    progress = f"{len(stages) - len(pending)} of {len(stages)} arm stages done"
    plots = "".join(
        f"<figure><img alt='{escape(c)}' src='{png_uri(study_plot(study, x))}'><figcaption>{escape(c)}</figcaption>"
        "</figure>" for x, c in (("tokens", "accuracy against generated tokens (95% intervals)"),
                                 ("seconds", "accuracy against wall time (95% intervals)")))
    body = (f"<h1>Study: {escape(study_dir.name)}</h1><p class='sub'>{escape(str(study.get('source', '')))} · "
            f"{escape(progress)}</p><div class='chips'>"
            + "".join(f"<span>{escape(k)}: <b>{escape(str(v))}</b></span>" for k, v in chips) + "</div>"
            + f"<h2>Accuracy against budget</h2><div class='plots'>{plots}</div>"
            + f"<h2>Final accuracies</h2>{_table(header, rows)}<p class='sub'>"
            + escape(study["table_markdown"].strip().splitlines()[-1]) + "</p>"
            + "<h2>Arms</h2>" + "".join(_arm_details(n, a) for n, a in study["arms"].items()))
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Study {escape(study_dir.name)}"
           f"</title><style>{CSS}</style></head><body><main>{body}</main></body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc, encoding="utf-8")
    return out
