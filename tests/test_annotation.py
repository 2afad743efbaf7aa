"""CodePlan annotation: filter rules, streaming with bounded memory, kill-and-resume without loss or duplicates."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from forethought.annotation import AnnotateConfig, annotate, pipeline
from forethought.annotation.filters import final_answer, judge
from forethought.engines.base import Completion, Sample
from forethought.errors import UserError

PROMPT = "Janet's ducks lay 16 eggs per day. She eats 3 and bakes with 4, and sells the rest at $2. How much?"
RESPONSE = ("Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = $18 every day at the farmer's market.\n"
            "#### 18")
GOOD = "def daily_income(laid, eaten, baked, price):\n    left = laid - eaten - baked\n    return left * price"


@pytest.mark.parametrize("plan,finish,reason", [
    (GOOD, "stop", None),
    ("eggs = count_eggs()\nfor use in uses:\n    eggs -= use\nincome = eggs * price", "stop", None),
    (GOOD[:40], "length", "truncated"),                                   # cut off by the token limit
    (GOOD, "eos", "unterminated"),                                        # ended without closing the block
    ("   \n", "stop", "empty"),
    ("# nothing but comments", "stop", "empty"),
    ("def daily_income(laid, eaten:\n    return laid", "stop", "unbalanced"),
    ("left = laid - eaten\nfor use in uses:", "stop", "unfinished_block"),
    ("First subtract what she eats and bakes, then multiply by the price.", "stop", "not_code"),
    ('sold = "Janet sells 16 - 3 - 4 = 9 duck eggs a day."\nprint("She makes 9 * 2 = $18 every day at the market")',
     "stop", "copies_response"),
    ("left = 16 - 3 - 4\nreturn 18", "stop", "states_answer"),
    ("income = left * price  # 18 dollars", "stop", "states_answer"),
])
def test_filter_rules(plan, finish, reason):
    assert judge(plan, finish, PROMPT, RESPONSE, final_answer(RESPONSE), 0.5) == reason


def test_no_answer_no_leak_check_and_final_answer_forms():
    assert judge("total = 18", "stop", PROMPT, RESPONSE, None, 0.5) is None
    assert final_answer(RESPONSE) == "18"
    assert final_answer("So we get $\\boxed{\\frac{1}{2}}$.") == "\\frac{1}{2}"
    assert final_answer("Adding up. The answer is 1,250.") == "1,250"
    assert final_answer("No stated answer here.") is None
    assert judge("total = 1250", "stop", "Q", "The answer is 1,250.", "1,250", 0.5) == "states_answer"


def _corpus(path: Path, n: int, dup_every: int = 0) -> Path:
    with path.open("w") as f:
        for i in range(n):
            j = i - 1 if dup_every and i % dup_every == dup_every - 1 else i  # a repeat of the previous pair
            f.write(json.dumps({"q": f"Question {j}: what is {j} plus 3?", "a": f"Add three to {j}: {j} + 3 = {j + 3}.\n#### {j + 3}"})
                    + "\n")
    return path


class FakeAnnotator:
    """A plan that depends only on the pair: good, truncated, copied, answer-stating or unterminated."""

    name = "fake"

    def __init__(self, sleep: float = 0.0):
        self.sleep, self.calls, self.requests = sleep, 0, 0

    def generate(self, requests, *, progress=True):
        self.calls += 1
        self.requests += len(requests)
        time.sleep(self.sleep)
        out = []
        for r in requests:
            i = int(r.messages[0]["content"].split("Question ")[1].split(":")[0])
            text, finish = [
                (f"value = read(question_{i})\nreturn add(value, 3)", "stop"),
                ("value = read(", "length"),
                (f'explain("Add three to {i}: {i} + 3 = {i + 3}.")', "stop"),
                (f"return {i + 3}", "stop"),
                ("value = read(question)", "eos"),
            ][i % 5]
            out.append(Completion([Sample(text, len(text), finish)], prompt_tokens=50))
        return out


def _cfg(path, **kw):
    return AnnotateConfig(input=str(path), prompt_field="q", response_field="a", **kw)


def _lines(out: Path) -> tuple[list[str], list[str]]:
    return out.read_text().splitlines(), out.with_name(out.stem + ".rejected.jsonl").read_text().splitlines()


def test_annotation_keeps_filters_dedupes_and_counts(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 40, dup_every=8)
    out = tmp_path / "out.jsonl"
    engine = FakeAnnotator()
    stats = annotate(engine, _cfg(corpus, chunk_size=6), out, model_name="fake", progress=False)
    kept, rejected = _lines(out)
    assert stats["processed"] == 40 and len(kept) + len(rejected) == 40 and stats["kept"] == len(kept)
    assert stats["filtered"]["duplicate"] == 5 and engine.requests == 35  # repeats are never sent to the annotator
    assert {"truncated", "copies_response", "states_answer", "unterminated"} <= set(stats["filtered"])
    first = json.loads(kept[0])
    assert set(first) == {"index", "prompt", "plan", "response"} and first["plan"].startswith("value = read(")
    assert [json.loads(x)["index"] for x in kept] == sorted(json.loads(x)["index"] for x in kept)
    assert stats["mean_words"]["plan"] == 6.0 and stats["kept_fraction"] == pytest.approx(len(kept) / 40)
    assert stats["tokens_generated"] > 0 and stats["records_per_second"] > 0 and stats["input_exhausted"]
    saved = json.loads((tmp_path / "out.stats.json").read_text())
    assert saved["kept"] == stats["kept"] and saved["filtered"] == stats["filtered"]


class Killed(Exception):
    """Stands in for SIGKILL at a chosen moment."""


def _kill_on_call(monkeypatch, module, name, n):
    real, count = getattr(module, name), [0]

    def wrapper(*args, **kwargs):
        count[0] += 1
        if count[0] == n:
            if name == "append":  # die halfway through writing: half a line reaches the file
                f, records = args
                if records:
                    f.write(json.dumps(records[0])[:25])
                    f.flush()
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


@pytest.mark.parametrize("point", [("append", 1), ("append", 4), ("append", 7), ("write_json", 2),
                                   ("write_json", 5), ("generate", 3)])
def test_kill_at_any_point_then_resume_gives_the_uninterrupted_result(tmp_path, monkeypatch, point):
    corpus = _corpus(tmp_path / "c.jsonl", 30, dup_every=7)
    annotate(FakeAnnotator(), _cfg(corpus, chunk_size=4), tmp_path / "full.jsonl", model_name="fake", progress=False)
    full = _lines(tmp_path / "full.jsonl")

    out, engine = tmp_path / "out.jsonl", FakeAnnotator()
    name, n = point
    with monkeypatch.context() as m:
        if name == "generate":
            _kill_on_call(m, engine, "generate", n)
        else:
            _kill_on_call(m, pipeline, name, n)
        with pytest.raises(Killed):
            annotate(engine, _cfg(corpus, chunk_size=4), out, model_name="fake", progress=False)
    stats = annotate(FakeAnnotator(), _cfg(corpus, chunk_size=4), out, model_name="fake", progress=False)
    assert _lines(out) == full
    assert stats["processed"] == 30 and stats["filtered"]["duplicate"] == 4


def test_sigkill_then_resume_has_no_duplicate_or_missing_records(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 120, dup_every=9)
    annotate(FakeAnnotator(), _cfg(corpus, chunk_size=5), tmp_path / "full.jsonl", model_name="fake", progress=False)
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_annotation import FakeAnnotator, _cfg
        from forethought.annotation import annotate
        annotate(FakeAnnotator(sleep=0.02), _cfg({str(corpus)!r}, chunk_size=5), {str(tmp_path / "out.jsonl")!r},
                 model_name="fake", progress=False)
    """))
    stats_file = tmp_path / "out.stats.json"
    proc = subprocess.Popen([sys.executable, str(script)])
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if stats_file.exists() and json.loads(stats_file.read_text() or "{}").get("processed", 0) >= 40:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the annotation finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = json.loads(stats_file.read_text())["processed"]
    assert 40 <= partial < 120
    stats = annotate(FakeAnnotator(), _cfg(corpus, chunk_size=5), tmp_path / "out.jsonl", model_name="fake",
                     progress=False)
    kept, rejected = _lines(tmp_path / "out.jsonl")
    indices = sorted(json.loads(x)["index"] for x in kept + rejected)
    assert indices == list(range(120))  # none missing, none twice
    assert (kept, rejected) == _lines(tmp_path / "full.jsonl") and stats["processed"] == 120


def test_limit_can_be_raised_and_a_finished_run_does_nothing(tmp_path):
    corpus = _corpus(tmp_path / "c.jsonl", 20)
    out = tmp_path / "out.jsonl"
    annotate(FakeAnnotator(), _cfg(corpus, limit=8, chunk_size=3), out, model_name="fake", progress=False)
    engine = FakeAnnotator()
    stats = annotate(engine, _cfg(corpus, limit=20, chunk_size=3), out, model_name="fake", progress=False)
    assert stats["processed"] == 20 and engine.requests == 12
    annotate(FakeAnnotator(), _cfg(corpus, chunk_size=3), tmp_path / "full.jsonl", model_name="fake", progress=False)
    assert _lines(out) == _lines(tmp_path / "full.jsonl")
    again = FakeAnnotator()
    annotate(again, _cfg(corpus, limit=20), out, model_name="fake", progress=False)
    assert again.calls == 0


def test_user_errors_name_what_to_fix(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"q": "a", "a": "b"}) + "\n" + json.dumps({"question": "a", "a": "b"}) + "\n")
    with pytest.raises(UserError, match=r"line 2: field 'q' is missing \(choose the field with --prompt-field\)"):
        annotate(FakeAnnotator(), _cfg(corpus), tmp_path / "o1.jsonl", model_name="fake", progress=False)
    with pytest.raises(UserError, match="file not found"):
        annotate(FakeAnnotator(), _cfg(tmp_path / "nope.jsonl"), tmp_path / "o2.jsonl", model_name="fake")
    precious = tmp_path / "o3.jsonl"
    precious.write_text("someone's data\n")
    with pytest.raises(UserError, match="not a resumable annotation"):
        annotate(FakeAnnotator(), _cfg(corpus), precious, model_name="fake", progress=False)
    assert precious.read_text() == "someone's data\n"
    good = _corpus(tmp_path / "g.jsonl", 3)
    annotate(FakeAnnotator(), _cfg(good), tmp_path / "o4.jsonl", model_name="fake", progress=False)
    with pytest.raises(UserError, match="different model"):
        annotate(FakeAnnotator(), _cfg(good), tmp_path / "o4.jsonl", model_name="other", progress=False)


MEMORY_SCRIPT = """
import json, sys
from forethought.annotation import AnnotateConfig, annotate
from forethought.engines.base import Completion, Sample

class Fake:
    name = "fake"
    def generate(self, requests, progress=False):
        return [Completion([Sample("x = read(q)\\ny = f(x)", 6, "stop" if k % 4 == 0 else "length")], 30)
                for k, _ in enumerate(requests)]

corpus, out = sys.argv[1], sys.argv[2]
stats = annotate(Fake(), AnnotateConfig(input=corpus, chunk_size=2000), out, model_name="fake", progress=False)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))
print(json.dumps({"processed": stats["processed"], "kept": stats["kept"], "peak_kib": peak}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
def test_streams_100k_lines_in_bounded_memory(tmp_path):
    """Peak memory of a 100,000-line annotation is that of a 2,000-line one: nothing grows with the corpus."""
    script = tmp_path / "mem.py"
    script.write_text(MEMORY_SCRIPT)
    filler = "x" * 400  # ~0.5 KB per line: holding the corpus or its records would cost tens of MB
    results = {}
    for n in (2_000, 100_000):
        corpus = tmp_path / f"c{n}.jsonl"
        with corpus.open("w") as f:
            f.writelines(json.dumps({"prompt": f"Q{i} {filler}", "response": f"R{i} {filler}"}) + "\n"
                         for i in range(n))
        run = subprocess.run([sys.executable, str(script), str(corpus), str(tmp_path / f"o{n}.jsonl")],
                             capture_output=True, text=True, check=True)
        results[n] = json.loads(run.stdout.strip().splitlines()[-1])
    big, small = results[100_000], results[2_000]
    assert big["processed"] == 100_000 and big["kept"] == 25_000
    assert (tmp_path / "o100000.jsonl").read_text().count("\n") == 25_000
    assert big["peak_kib"] - small["peak_kib"] < 16 * 1024, results  # the corpus itself is ~90 MB


def test_cli_annotate_with_a_tiny_model_and_a_one_line_error(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from typer.testing import CliRunner

    from forethought.cli import app, main

    corpus = _corpus(tmp_path / "c.jsonl", 3)
    out = tmp_path / "ann.jsonl"
    args = ["annotate", "--model", str(tiny_model_dir), "--input", str(corpus), "--prompt-field", "q",
            "--response-field", "a", "--output", str(out), "--max-new-tokens", "4", "--device", "cpu", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "ann.stats.json").read_text())
    assert stats["processed"] == 3 and stats["model"] == str(tiny_model_dir) and "filtered" in result.output
    assert stats["tokens_generated"] > 0
    bad = ["annotate", "--model", str(tiny_model_dir), "--input", str(corpus), "--output", str(tmp_path / "b.jsonl")]
    monkeypatch.setattr("sys.argv", ["forethought", *bad])  # default --prompt-field 'prompt' is not in the corpus
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "field 'prompt' is missing" in err and "Traceback" not in err
