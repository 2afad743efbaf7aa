"""The command line: eval and score write what they promise; user errors give one clear line and exit 2."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from forethought.cli import app, main

runner = CliRunner()


def run_main(monkeypatch, capsys, *args) -> tuple[int, str]:
    """Run the real entry point (with its UserError handling) and return (exit code, stderr)."""
    monkeypatch.setattr("sys.argv", ["forethought", *args])
    with pytest.raises(SystemExit) as exc:
        main()
    return exc.value.code, capsys.readouterr().err


def test_score_gsm8k_predictions(tmp_path):
    src = tmp_path / "in.jsonl"
    rows = [
        {"prediction": "16 - 3 - 4 = 9 eggs, 9 * $2 = $18. The answer is 18.", "gold": "18", "extra": 1},
        {"prediction": "So she pays $1,234.00 in total", "gold": "1234"},
        {"prediction": "The answer is 17.", "gold": "18"},
        {"prediction": "I cannot tell.", "gold": "5"},
    ]
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    dst = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["score", "--task", "gsm8k", "--input", str(src), "--output", str(dst)])
    assert result.exit_code == 0, result.output
    out = [json.loads(line) for line in dst.read_text().splitlines()]
    assert [r["correct"] for r in out] == [True, True, False, False]
    assert [r["extracted"] for r in out] == ["18", "1234", "17", None]
    assert out[0]["extra"] == 1 and out[0]["prediction"] == rows[0]["prediction"]
    assert "0.500" in result.output  # accuracy in the summary table


def test_score_math_and_choice(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prediction": "so $\\boxed{\\dfrac{1}{2}}$", "gold": "0.5"}) + "\n")
    dst = tmp_path / "out.jsonl"
    assert runner.invoke(app, ["score", "-t", "math500", "-i", str(src), "-o", str(dst)]).exit_code == 0
    assert json.loads(dst.read_text())["correct"] is True
    src.write_text(json.dumps({"prediction": "Thinking... The answer is (c).", "gold": "C"}) + "\n")
    assert runner.invoke(app, ["score", "-t", "arc_challenge", "-i", str(src), "-o", str(dst)]).exit_code == 0
    assert json.loads(dst.read_text())["extracted"] == "C"


def test_score_malformed_line_names_file_line_and_field(tmp_path, monkeypatch, capsys):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"prediction": "1", "gold": "1"}) + "\n" + json.dumps({"prediction": "2"}) + "\n")
    dst = tmp_path / "out.jsonl"
    dst.write_text("precious earlier output\n")
    code, err = run_main(monkeypatch, capsys, "score", "-t", "gsm8k", "-i", str(src), "-o", str(dst))
    assert code == 2
    assert "line 2" in err and "'gold'" in err and "Traceback" not in err
    assert dst.read_text() == "precious earlier output\n"  # nothing already written is lost


@pytest.mark.parametrize(
    "args, expected",
    [
        (["eval", "--task", "gsm8kk", "--output", "o"], "unknown task 'gsm8kk'"),
        (["eval", "--task", "gsm8k", "--data", "/nonexistent/gsm8k", "--output", "o"], "/nonexistent/gsm8k"),
        (["eval", "--task", "gsm8k", "--plan-format", "mindmap", "--output", "o"], "unknown plan format 'mindmap'"),
        (["score", "-t", "gsm8k", "-i", "/nonexistent.jsonl", "-o", "x.jsonl"], "/nonexistent.jsonl"),
        (["run", "/nonexistent/recipe.yaml"], "file not found"),
    ],
)
def test_user_errors_are_one_clear_line(args, expected, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, *args)
    assert code == 2
    assert expected in err and "Traceback" not in err


def test_unknown_model_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, err = run_main(monkeypatch, capsys, "eval", "--task", "synthetic/arithmetic", "--limit", "1",
                         "--model", "no-such-model", "--output", "o")
    assert code == 2 and "no-such-model" in err and "Traceback" not in err


def test_offline_hub_model_is_a_clear_error(monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, err = run_main(monkeypatch, capsys, "eval", "--task", "synthetic/arithmetic", "--limit", "1",
                         "--model", "some-org/some-model", "--output", "o")
    assert code == 2 and "some-org/some-model" in err and "offline" in err.lower()


def test_eval_with_tiny_model_writes_records_and_summary(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    result = runner.invoke(app, [
        "eval", "--model", str(tiny_model_dir), "--task", "synthetic/arithmetic", "--limit", "5",
        "--max-new-tokens", "8", "--output", str(out), "--quiet",
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    for key in ("task", "model", "n", "accuracy", "ci95", "unparseable", "tokens_generated", "tokens_per_second"):
        assert key in summary
    assert summary["n"] == 5 and summary["task"] == "synthetic/arithmetic"
    assert len(summary["ci95"]) == 2 and summary["ci95"][0] <= summary["accuracy"] <= summary["ci95"][1]
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert len(records) == 5
    assert all({"prompt", "output", "extracted", "correct", "tokens"} <= set(r) for r in records)
    assert summary["tokens_generated"] == sum(r["tokens"] for r in records) > 0
    assert summary["unparseable"] == sum(r["extracted"] is None for r in records)
