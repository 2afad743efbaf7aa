"""Sampled metrics (eval --n K): unbiased pass@k, maj@K by the task's own equivalence, mean@K, and their intervals."""

from __future__ import annotations

import json
import math

import pytest

from forethought.engines.base import Completion, Sample
from forethought.evaluate import evaluate
from forethought.stats import (Z95, group_answers, majority_index, mean_ci, pass_at_k, sample_ks, sampled_metrics,
                               wilson_interval)
from forethought.tasks import get_task


# ---------------------------------------------------------------- pass@k, hand-computed


@pytest.mark.parametrize("n,c,k,expected", [
    (5, 2, 1, 2 / 5),                  # pass@1 = c / n
    (5, 2, 2, 1 - 3 / 10),             # 1 - C(3,2)/C(5,2)
    (5, 2, 4, 1.0),                    # n - c = 3 < k = 4: every 4-subset holds a correct sample
    (4, 1, 2, 1 - 3 / 6),              # 1 - C(3,2)/C(4,2)
    (8, 3, 4, 1 - 5 / 70),             # 1 - C(5,4)/C(8,4)
    (8, 1, 8, 1.0), (8, 0, 8, 0.0),    # n = k: 1 if any sample is right
    (4, 0, 1, 0.0), (4, 0, 2, 0.0),    # c = 0
    (4, 4, 1, 1.0), (4, 4, 4, 1.0),    # c = n
    (1, 1, 1, 1.0), (1, 0, 1, 0.0),
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_refuses_impossible_counts():
    for n, c, k in [(4, 1, 5), (4, 5, 1), (4, -1, 1), (4, 1, 0)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_sample_ks_doubles_up_to_and_including_K():
    assert sample_ks(1) == [1]
    assert sample_ks(8) == [1, 2, 4, 8]
    assert sample_ks(6) == [1, 2, 4, 6]
    assert sample_ks(3) == [1, 2, 3]


def test_pass_at_k_does_not_depend_on_where_the_correct_sample_is():
    """The biased "best of the first k" gives 0 for pass@2 when the one right sample is the last of four."""
    early = sampled_metrics({"q": [True, False, False, False]}, {"q": False})
    late = sampled_metrics({"q": [False, False, False, True]}, {"q": False})
    assert early["pass@2"]["value"] == late["pass@2"]["value"] == pytest.approx(0.5)


# ---------------------------------------------------------------- intervals over questions


def test_mean_ci_normal_over_per_question_values():
    mean, (lo, hi), kind = mean_ci([0.5, 1.0, 0.0, 0.5])
    half = Z95 * math.sqrt((0.25 + 0.25) / 3 / 4)   # sample variance 0.5/3 over 4 questions
    assert kind == "normal" and mean == 0.5
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert (lo, hi) == pytest.approx((0.0999234, 0.9000766), abs=1e-6)


def test_mean_ci_wilson_when_each_question_is_right_or_wrong():
    mean, ci, kind = mean_ci([1.0, 0.0, 1.0, 1.0])
    assert (mean, kind) == (0.75, "wilson") and ci == pytest.approx(wilson_interval(3, 4))
    assert mean_ci([1.0, 1.0])[1][1] == 1.0 and mean_ci([1.0, 1.0])[1][0] < 1.0   # not a zero-width interval
    assert mean_ci([]) == (0.0, (0.0, 1.0), "none")


def test_sampled_metrics_hand_computed():
    """Three questions, K = 4: c = 0, 2 and 4 correct samples; the majority is right on the last two only."""
    correct = {"a": [False] * 4, "b": [True, False, True, False], "c": [True] * 4}
    out = sampled_metrics(correct, {"a": False, "b": True, "c": True})
    assert out["k"] == 4 and list(out) == ["k", "pass@1", "pass@2", "pass@4", "maj@4", "mean@4"]
    # pass@2 of question b: 1 - C(2,2)/C(4,2) = 5/6
    assert out["pass@1"]["value"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert out["pass@2"]["value"] == pytest.approx((0 + 5 / 6 + 1) / 3)
    assert out["pass@4"]["value"] == pytest.approx(2 / 3)
    assert out["maj@4"]["value"] == pytest.approx(2 / 3)
    assert out["mean@4"]["value"] == out["pass@1"]["value"]
    assert out["pass@4"]["interval"] == out["maj@4"]["interval"] == "wilson"
    assert out["pass@4"]["ci95"] == pytest.approx(list(wilson_interval(2, 3)))
    assert out["pass@2"]["interval"] == "normal"
    mean, ci, _ = mean_ci([0, 5 / 6, 1])
    assert out["pass@2"]["ci95"] == pytest.approx(list(ci))
    with pytest.raises(ValueError, match="same number of samples"):
        sampled_metrics({"a": [True], "b": [True, False]}, {"a": True, "b": True})


# ---------------------------------------------------------------- majority vote


def test_majority_index_largest_group_then_earliest():
    assert majority_index([0, 1, 1, 2]) == 1          # group 1 has two votes; its first member is sample 1
    assert majority_index([0, 1, 1, 0]) == 0          # tie 2-2: the group seen first wins
    assert majority_index([None, 1, 0, 0]) == 2       # an unparseable answer does not vote
    assert majority_index([None, None]) is None


def _count_calls(same):
    calls = []

    def many(pairs):
        calls.extend(pairs)
        return [same(a, b) for a, b in pairs]
    return many, calls


def test_group_answers_compares_with_representatives_only():
    same = lambda a, b: float(a) == float(b)  # noqa: E731
    many, calls = _count_calls(same)
    groups = group_answers({"q": ["0.5", ".5", "2", "0.50", "2", None, "3"]}, many)
    assert groups == {"q": [0, 0, 1, 0, 1, None, 2]}
    # "0.5" opens group 0; ".5" vs 0.5; "2" vs 0.5; "0.50" vs both (joins the first it equals); "2" again: same
    # string, no call; "3" vs both
    assert calls == [(".5", "0.5"), ("2", "0.5"), ("0.50", "0.5"), ("0.50", "2"), ("3", "0.5"), ("3", "2")]
    many, calls = _count_calls(lambda a, b: False)
    group_answers({"q": [str(i) for i in range(8)]}, many)
    assert len(calls) == 28                          # 0 + 1 + ... + 7: each new answer against each group once
    many, calls = _count_calls(lambda a, b: True)
    group_answers({"q": ["x"] * 8, "r": ["y"] * 8}, many)
    assert calls == []                               # identical strings never reach the verifier


def test_group_answers_batches_across_questions():
    batches = []

    def many(pairs):
        batches.append(list(pairs))
        return [a == b for a, b in pairs]
    group_answers({"a": ["1", "2", "3"], "b": ["4", "5"], "c": ["6"]}, many)
    assert len(batches) == 2 and batches[0] == [("2", "1"), ("5", "4")]


def _write_task(tmp_path, answer_type, rows):
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    spec = tmp_path / "t.yaml"
    spec.write_text(f"name: t\ndata: d.jsonl\nanswer_type: {answer_type}\n")
    return get_task(str(spec))


class ScriptedEngine:
    """Sample k of each request answers script[question][k]."""

    name = "scripted"

    def __init__(self, script):
        self.script = script

    def generate(self, requests, *, progress=True):
        out = []
        for r in requests:
            texts = next(v for q, v in self.script.items() if q in r.messages[-1]["content"])
            out.append(Completion(samples=[Sample(text=texts[k], tokens=3, finish_reason="eos") for k in range(r.n)],
                                  prompt_tokens=5))
        return out


def test_math_majority_votes_by_equivalence_not_string(tmp_path):
    """0.5, \\frac12 and \\frac{1}{2} vote together (math-verify) and beat 1/3, which a string vote would pick."""
    task = _write_task(tmp_path, "math", [{"question": "Half of one?", "answer": "\\frac{1}{2}"},
                                          {"question": "A third of one?", "answer": "\\frac{1}{3}"}])
    script = {"Half of one?": ["\\boxed{1/3}", "\\boxed{0.5}", "\\boxed{\\frac12}", "no idea"],
              "A third of one?": ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{\\frac13}", "\\boxed{1/3}"]}
    res = evaluate(ScriptedEngine(script), task, task.load(), model_name="fake", n=4, temperature=0.7)
    s = res.summary["sampled"]
    assert [r["correct"] for r in res.records] == [False, True, True, False, False, False, True, True]
    # question 1: {0.5, \frac12} has 2 votes -> right; question 2: 2-2 tie, the group of sample 0 (0.5) wins -> wrong
    assert s["maj@4"]["value"] == 0.5
    assert s["pass@1"]["value"] == pytest.approx(0.5) and s["pass@4"]["value"] == 1.0
    assert s["pass@2"]["value"] == pytest.approx(1 - 1 / 6)
    assert (s["majority_ties"], s["majority_no_answer"]) == (1, 0)


def test_evaluate_n1_has_no_sampled_metrics_and_number_majority(tmp_path):
    task = _write_task(tmp_path, "number", [{"question": "Two halves?", "answer": 1}])
    script = {"Two halves?": ["The answer is 1.0", "The answer is 2", "The answer is 1", "The answer is 2"]}
    assert "sampled" not in evaluate(ScriptedEngine(script), task, task.load(), model_name="f", n=1).summary
    s = evaluate(ScriptedEngine(script), task, task.load(), model_name="f", n=4, temperature=1.0).summary
    assert s["sampled"]["maj@4"]["value"] == 1.0    # "1.0" and "1" vote together: 2-2 with "2", and seen first


# ---------------------------------------------------------------- on screen: eval, compare, report


def test_cli_eval_n_reports_sampled_metrics(tmp_path, tiny_model_dir):
    from typer.testing import CliRunner

    from forethought.cli import app

    out = tmp_path / "out"
    result = CliRunner().invoke(app, [
        "eval", "--model", str(tiny_model_dir), "--task", "synthetic/arithmetic", "--limit", "3", "--n", "4",
        "--temperature", "1.0", "--max-new-tokens", "6", "--output", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    s = summary["sampled"]
    assert [k for k in s if "@" in k] == ["pass@1", "pass@2", "pass@4", "maj@4", "mean@4"]
    assert s["pass@1"]["value"] == pytest.approx(summary["accuracy"]) == pytest.approx(s["mean@4"]["value"])
    solved = {r["id"] for r in records if r["correct"]}
    assert s["pass@4"]["value"] == pytest.approx(len(solved) / 3)
    assert all(m["ci95"][0] <= m["value"] <= m["ci95"][1] for k, m in s.items() if "@" in k)
    assert "sampled metrics · 4 samples per question" in result.output
    assert "maj@4" in result.output and "pass@2" in result.output


def _run_with_sampled(path, sampled_in_metrics: bool):
    import yaml

    path.mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump({"method": "lepa", "model": "m", "task": {"name": "t"},
                                                      "sampler": {"kind": "lepa"}, "iterations": 1}))
    sampled = {"k": 8, "pass@1": {"value": 0.3, "ci95": [0.241, 0.359], "interval": "normal"},
               "pass@2": {"value": 0.42, "ci95": [0.35, 0.49], "interval": "normal"},
               "pass@4": {"value": 0.55, "ci95": [0.47, 0.63], "interval": "normal"},
               "pass@8": {"value": 0.61, "ci95": [0.51, 0.70], "interval": "wilson"},
               "maj@8": {"value": 0.34, "ci95": [0.25, 0.44], "interval": "wilson"},
               "mean@8": {"value": 0.3, "ci95": [0.241, 0.359], "interval": "normal"},
               "majority_ties": 4, "majority_no_answer": 1}
    lines = []
    for it in (0, 1):
        (path / f"iter_{it:03d}" / "eval").mkdir(parents=True)
        (path / f"iter_{it:03d}" / "eval" / "summary.json").write_text(json.dumps(
            {"accuracy": 0.3, "ci95": [0.2, 0.4], **({"sampled": sampled} if it == 1 else {})}))
        lines.append({"iteration": it, "accuracy": 0.3, "ci95": [0.2, 0.4],
                      **({"sampled": sampled} if it == 1 and sampled_in_metrics else {})})
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return path


@pytest.mark.parametrize("in_metrics", [True, False])
def test_compare_and_report_show_sampled_metrics(tmp_path, in_metrics):
    from rich.console import Console

    from forethought.report.compare import compare_runs, compare_table
    from forethought.report.html import write_report

    run = _run_with_sampled(tmp_path / "r", in_metrics)
    (row,) = compare_runs([run])
    assert row["final_sampled"]["maj@8"]["value"] == 0.34
    console = Console(width=300, record=True)
    console.print(compare_table([row]))
    text = console.export_text()
    assert "pass@1 30.0% [24.1, 35.9]" in text and "pass@8 61.0% [51.0, 70.0]" in text
    assert "maj@8 34.0% [25.0, 44.0]" in text and "pass@2" not in text   # the table keeps pass@1, pass@K, maj@K
    html = write_report(run).read_text()
    assert "<h2>Sampled metrics</h2>" in html
    for cell in ("30.0% [24.1, 35.9]", "42.0% [35.0, 49.0]", "55.0% [47.0, 63.0]", "61.0% [51.0, 70.0]",
                 "34.0% [25.0, 44.0]"):
        assert f"<td>{cell}</td>" in html
    assert "<th>maj@8&nbsp;[95%&nbsp;CI]</th>" in html and "majority_ties" not in html


def test_compare_and_report_without_sampled_metrics(tmp_path):
    from rich.console import Console

    from forethought.report.compare import compare_runs, compare_table
    from forethought.report.html import write_report

    run = _run_with_sampled(tmp_path / "r", False)
    (run / "iter_001" / "eval" / "summary.json").write_text(json.dumps({"accuracy": 0.3}))
    (row,) = compare_runs([run])
    assert row["final_sampled"] is None
    console = Console(width=300, record=True)
    console.print(compare_table([row]))
    assert "pass@" not in console.export_text() and "maj@" not in console.export_text()
    assert "Sampled metrics" not in write_report(run).read_text()


def test_wilson_bounds_hold_the_estimate_at_zero_and_one():
    """0 of 3 gave a lower bound of 5.6e-17 (rounding), an interval that excluded its own estimate."""
    assert wilson_interval(0, 3)[0] == 0.0 and wilson_interval(3, 3)[1] == 1.0
    assert mean_ci([0.0, 0.0, 0.0])[1][0] == 0.0
