"""Run comparison and the HTML report, on a fixture run directory laid out like a real one."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from forethought.errors import UserError
from forethought.report.compare import compare_runs, compare_table, read_run
from forethought.report.html import comparison_figure, write_report

ACCURACY = [0.21, 0.35, 0.41, 0.44]
CI95 = [[0.15, 0.28], [0.28, 0.43], [0.34, 0.49], [0.37, 0.52]]
REASONS = ["wrong", "leak", "hint_mention", "duplicate", "over_budget"]
SCRIPT = "<script>alert(1)</script>"


def sample(it: int, q: int, trial: int, accepted: bool, reason: str | None) -> dict:
    """One trajectory record as a LEPA sampler writes it."""
    return {
        "id": f"it{it}-q{q}-t{trial}", "question_id": f"gsm8k-{q:04d}", "iteration": it, "method": "lepa",
        "sampler": "lepa", "trial": trial, "question": f"Tom has {q} apples and buys 3 more. How many now?",
        "gold": str(q + 3), "plan": f"Plan {q}: add the apples bought to the apples he had.",
        "reflection": "I should state the operation, not the number." if trial else None,
        "solution": f"{q} + 3 = {q + 3}. The answer is {q + 3 if accepted else q}.",
        "extracted": str(q + 3 if accepted else q), "correct": accepted or reason != "wrong",
        "accepted": accepted, "rejected_reason": reason, "hint_used": trial > 1, "tokens_in": 120,
        "tokens_out": 80, "seconds": 0.4, "engine": "hf", "seed": 0, "prompts_version": "1",
    }


def make_run(path: Path, iterations: int = 3, questions: int = 20, trials: int = 4) -> Path:
    """Write a run directory: config.yaml, manifest.json, metrics.jsonl, iter_XXX/{samples.jsonl, eval/}."""
    path.mkdir(parents=True)
    config = {"method": "lepa", "model": "smollm2-135m", "task": {"name": "gsm8k", "split": "test"},
              "sampler": {"kind": "lepa", "plan_format": "natural", "trials": trials, "temperature": 0.8},
              "learner": {"kind": "sft", "learning_rate": 1e-5}, "iterations": iterations}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    stages, metrics, cumulative = {}, [], 0
    for it in range(iterations + 1):
        d = path / f"iter_{it:03d}"
        (d / "eval").mkdir(parents=True)
        rows = []
        if it:
            for q in range(questions):
                for t in range(trials):
                    ok = q % 4 != 3 and (q + t + it) % 3 == 0  # every fourth question is never solved
                    rows.append(sample(it, q, t, ok, None if ok else REASONS[(q + t) % len(REASONS)]))
            if it == iterations:  # model output that must never run in the report, and a long plan to fold
                rows[0]["solution"] = f"Sure! {SCRIPT} The answer is 3."
                rows[1]["plan"] = "First step of a very long plan.\n" * 40
            (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            stages[f"iter_{it:03d}/sample"] = stages[f"iter_{it:03d}/train"] = "done"
        tokens = sum(r["tokens_out"] for r in rows)
        cumulative += tokens
        accepted = sum(r["accepted"] for r in rows)
        solved = len({r["question_id"] for r in rows if r["accepted"]})
        summary = {"task": "gsm8k", "n": 100, "accuracy": ACCURACY[it % 4], "ci95": CI95[it % 4]}
        (d / "eval" / "summary.json").write_text(json.dumps(summary))
        (d / "eval" / "records.jsonl").write_text("")
        stages[f"iter_{it:03d}/eval"] = "done"
        metrics.append({
            "iteration": it, "accuracy": ACCURACY[it % 4], "ci95": CI95[it % 4],
            "acceptance_rate": solved / questions if rows else None,  # questions with an accepted trajectory
            "sample_acceptance": accepted / len(rows) if rows else None, "tokens_generated": tokens,
            "eval_tokens": 30511, "seconds": 95.2, "questions": questions if it else 0, "trials": len(rows),
            "accepted": accepted, "train_examples": accepted, "cumulative_tokens": cumulative,
        })
    (path / "manifest.json").write_text(json.dumps({"stages": stages}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return path


@pytest.fixture
def run_dir(tmp_path) -> Path:
    return make_run(tmp_path / "runs" / "lepa-gsm8k")


def test_compare_row_values(run_dir):
    (row,) = compare_runs([run_dir])
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert (row["method"], row["sampler"], row["plan_format"]) == ("lepa", "lepa", "natural")
    assert (row["model"], row["task"], row["iterations"]) == ("smollm2-135m", "gsm8k", 3)
    assert row["initial_accuracy"] == 0.21 and row["final_accuracy"] == 0.44
    assert row["final_ci95"] == (0.37, 0.52)
    assert row["delta"] == pytest.approx(0.23)
    assert row["trials"] == 3 * 20 * 4
    assert row["generated_tokens"] == metrics[-1]["cumulative_tokens"] == 3 * 80 * 80
    accepted = sum(m["accepted"] for m in metrics)
    assert 0 < accepted < row["trials"]
    assert row["acceptance_rate"] == pytest.approx(accepted / row["trials"])


def test_compare_run_with_only_iteration_zero_still_shows(tmp_path, run_dir):
    fresh = make_run(tmp_path / "fresh", iterations=0)
    rows = compare_runs([run_dir, fresh])
    assert [r["run"] for r in rows] == [str(run_dir), str(fresh)]
    assert rows[1]["iterations"] == 0 and rows[1]["final_accuracy"] == 0.21
    assert rows[1]["delta"] is None and rows[1]["acceptance_rate"] is None and rows[1]["trials"] == 0
    console = Console(width=250, record=True)
    console.print(compare_table(rows))
    text = console.export_text()
    assert "lepa-gsm8k" in text and "fresh" in text
    assert "+23.0 pp" in text and "44.0% [37.0, 52.0]" in text and "19,200" in text


def test_compare_bad_dir_is_user_error(tmp_path):
    with pytest.raises(UserError, match="no metrics.jsonl; is this a run directory"):
        compare_runs([tmp_path])
    with pytest.raises(UserError, match="no such directory"):
        compare_runs([tmp_path / "missing"])


def test_report_has_plots_examples_and_no_network(run_dir):
    out = write_report(run_dir)
    assert out == run_dir / "report.html"
    html = out.read_text()
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert len(images) == 4  # accuracy, accuracy vs tokens, acceptance, rejections by reason
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", html) and "<link" not in html
    assert "lepa on gsm8k" in html and "smollm2-135m" in html and "natural" in html
    assert "iter_003: 80 trajectories" in html
    assert html.count("<span class='badge'>accepted</span>") == 3
    reasons = re.findall(r"<span class='badge'>rejected: (\w+)</span>", html)
    assert len(reasons) == 3 and len(set(reasons)) == 3  # spread over reasons, not three of one kind
    assert "Plan" in html and "Reflection" in html and "Solution" in html


def test_report_escapes_model_output(run_dir):
    html = write_report(run_dir).read_text()
    assert SCRIPT not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()


def test_report_folds_long_text(run_dir):
    html = write_report(run_dir).read_text()
    assert re.search(r"<details><summary>Plan \(1,280 chars\)</summary><pre>First step", html)
    assert "<details open><summary>Solution" in html


def test_report_for_run_with_only_iteration_zero(tmp_path):
    run = make_run(tmp_path / "fresh", iterations=0)
    out = write_report(run, tmp_path / "out" / "r.html")
    html = out.read_text()
    assert html.count("data:image/png;base64,") == 1  # accuracy; nothing sampled, so no token or acceptance plot
    assert "No sampled iteration yet, so no plot of: accuracy against" in html
    assert "No iteration has sampled trajectories yet" in html


def test_report_skips_a_partial_last_sample_line(run_dir):
    with (run_dir / "iter_003" / "samples.jsonl").open("a") as f:
        f.write('{"id": "half-writ')
    assert "iter_003: 80 trajectories" in write_report(run_dir).read_text()


def test_report_names_a_malformed_sample_line(run_dir):
    path = run_dir / "iter_002" / "samples.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + "{not json\n" + "".join(lines[5:]))
    with pytest.raises(UserError, match=r"iter_002/samples.jsonl line 6: not valid JSON"):
        write_report(run_dir)


GRPO_ACCURACY = [0.11, 0.30, 0.52]


def make_grpo_run(path: Path, steps: int = 2, questions: int = 4, generations: int = 8) -> Path:
    """A GRPO run directory as the run loop writes it: no samples.jsonl, rollouts.jsonl per iteration, and metrics
    counting rollout tokens as tokens_generated / cumulative_tokens."""
    path.mkdir(parents=True)
    config = {"method": "grpo", "model": "smollm2-135m", "task": {"name": "gsm8k", "split": "test"},
              "learner": {"kind": "grpo", "plan_format": "code", "num_generations": generations,
                          "steps_per_iteration": steps}, "iterations": 2}
    (path / "config.yaml").write_text(yaml.safe_dump(config))
    stages, metrics, cumulative = {}, [], 0
    for it in range(3):
        d = path / f"iter_{it:03d}"
        (d / "eval").mkdir(parents=True)
        rows = []
        if it:
            for step in range((it - 1) * steps + 1, it * steps + 1):
                for q in range(questions):
                    for g in range(generations):
                        rows.append({"step": step, "question_id": f"gsm8k-{q:04d}", "completion": "x",
                                     "token_ids": [1] * (10 + g), "tokens": 10 + g, "correct": g < it,
                                     "reward": float(g < it)})
            (d / "rollouts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            stages[f"iter_{it:03d}/train"] = "done"
        tokens = sum(r["tokens"] for r in rows)
        cumulative += tokens
        acc, ci = GRPO_ACCURACY[it], [GRPO_ACCURACY[it] - 0.08, GRPO_ACCURACY[it] + 0.09]
        (d / "eval" / "summary.json").write_text(json.dumps({"task": "gsm8k", "n": 100, "accuracy": acc, "ci95": ci}))
        (d / "eval" / "records.jsonl").write_text("")
        stages[f"iter_{it:03d}/eval"] = "done"
        metrics.append({"iteration": it, "accuracy": acc, "ci95": ci, "tokens_generated": tokens,
                        "cumulative_tokens": cumulative, "trials": len(rows),
                        "accepted": sum(r["correct"] for r in rows), "questions": questions if it else 0,
                        "acceptance_rate": 1.0 if it else None, "eval_tokens": 9000, "seconds": 50.0,
                        "train_examples": len(rows), "reward_mean": (sum(r["reward"] for r in rows) / len(rows))
                        if rows else None})
    (path / "manifest.json").write_text(json.dumps({"stages": stages}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    return path


def test_grpo_and_em_runs_compare_on_one_generated_token_axis(tmp_path, run_dir):
    grpo = make_grpo_run(tmp_path / "runs" / "grpo-gsm8k")
    em_row, grpo_row = compare_runs([run_dir, grpo])
    per_iteration = 2 * 4 * sum(10 + g for g in range(8))  # steps x questions x rollout tokens = 864
    assert (grpo_row["method"], grpo_row["sampler"], grpo_row["plan_format"]) == ("grpo", "grpo rollouts", "code")
    assert grpo_row["generated_tokens"] == 2 * per_iteration
    assert grpo_row["trials"] == 2 * 2 * 4 * 8
    assert grpo_row["curve"] == [(0, 0.11), (per_iteration, 0.30), (2 * per_iteration, 0.52)]
    assert em_row["curve"] == [(0, 0.21), (6400, 0.35), (12800, 0.41), (19200, 0.44)]
    console = Console(width=300, record=True)
    console.print(compare_table([em_row, grpo_row]))
    text = console.export_text()
    assert "generated tokens" in text and "sampling tokens" not in text
    assert "grpo (grpo rollouts, code)" in text and "lepa (lepa, natural)" in text
    assert "1,728" in text and "19,200" in text  # each run's generated tokens
    assert "864: 30.0%" in text and "1.7k: 52.0%" in text and "19.2k: 44.0%" in text  # the token-axis curves

    # the report's comparison plot: both runs on one axis, x = cumulative generated tokens, y = accuracy
    ax = comparison_figure([read_run(run_dir), read_run(grpo)]).axes[0]
    assert ax.get_xlabel() == "cumulative generated tokens"
    (em_line, *_), (grpo_line, *_) = [c.lines for c in ax.containers]
    assert list(em_line.get_xdata()) == [0, 6400, 12800, 19200]
    assert list(em_line.get_ydata()) == ACCURACY
    assert list(grpo_line.get_xdata()) == [0, per_iteration, 2 * per_iteration]
    assert list(grpo_line.get_ydata()) == GRPO_ACCURACY


def test_report_sets_a_grpo_run_beside_an_em_run(tmp_path, run_dir):
    from typer.testing import CliRunner

    from forethought.cli import app

    grpo = make_grpo_run(tmp_path / "runs" / "grpo-gsm8k")
    out = tmp_path / "both.html"
    done = CliRunner().invoke(app, ["report", str(grpo), "-o", str(out), "--compare", str(run_dir)])
    assert done.exit_code == 0, done.output
    html = out.read_text()
    assert "grpo on gsm8k" in html and "rollouts/question/step: <b>8</b>" in html
    assert "<small>generated tokens</small><b>1,728</b><small>128 rollouts, 18.8% correct</small>" in html
    assert "<h2>Comparison</h2>" in html and "accuracy against cumulative generated tokens, all runs" in html
    assert "grpo (grpo rollouts, code)" in html and "lepa (lepa, natural)" in html
    assert "864: 30.0% → 1.7k: 52.0%" in html and "19.2k: 44.0%" in html
    assert "sampling tokens" not in html
    # its own token plot too: the GRPO run's rollout tokens are on the generated-token axis
    assert "accuracy against cumulative generated tokens</figcaption>" in html
    alone = write_report(grpo, tmp_path / "alone.html").read_text()
    assert "<h2>Comparison</h2>" not in alone
