"""evaluate() with a scripted engine: prompts, seeds, records and summary, both plan formats."""

from forethought.engines.base import Completion, Request, Sample, request_seed
from forethought.evaluate import evaluate
from forethought.tasks import get_task


class ScriptedEngine:
    """Answers with a function of the request; records what it was asked."""

    name = "scripted"

    def __init__(self, answer):
        self.answer = answer
        self.calls: list[list[Request]] = []

    def generate(self, requests, *, progress=True):
        self.calls.append(list(requests))
        return [
            Completion(samples=[Sample(text=self.answer(r, k), tokens=5, finish_reason="eos") for k in range(r.n)],
                       prompt_tokens=10)
            for r in requests
        ]


def _gold_by_question(examples):
    return {ex.question: ex.gold for ex in examples}


def test_evaluate_none_scores_and_summarises():
    task = get_task("synthetic/arithmetic", test_size=10)
    examples = task.load(split="test")
    golds = _gold_by_question(examples)
    # correct on even-indexed questions, unparseable on the rest
    order = [ex.question for ex in examples]

    def answer(req, k):
        q = next(q for q in order if q in req.messages[-1]["content"])
        return f"So the answer is {golds[q]}." if order.index(q) % 2 == 0 else "I do not know."

    engine = ScriptedEngine(answer)
    res = evaluate(engine, task, examples, model_name="fake", n=1)
    s = res.summary
    assert s["n"] == 10 and s["correct"] == 5 and s["accuracy"] == 0.5
    assert s["unparseable"] == 5
    assert s["ci95"][0] < 0.5 < s["ci95"][1]
    assert s["tokens_generated"] == 50
    assert len(res.records) == 10
    rec = res.records[0]
    assert set(rec) >= {"id", "prompt", "output", "extracted", "correct", "tokens"}
    assert rec["correct"] is True and rec["extracted"] is not None
    # one engine call, seeds stable per question id
    (reqs,) = engine.calls
    assert [r.seed for r in reqs] == [request_seed(0, ex.id) for ex in examples]
    assert "The answer is" in reqs[0].messages[-1]["content"]


def test_evaluate_n_samples_per_question():
    task = get_task("synthetic/arithmetic", test_size=4)
    examples = task.load(split="test")
    golds = _gold_by_question(examples)

    def answer(req, k):
        q = next(q for q in golds if q in req.messages[-1]["content"])
        return f"The answer is {golds[q]}." if k == 0 else "The answer is -1."

    res = evaluate(ScriptedEngine(answer), task, examples, model_name="fake", n=3, temperature=0.7)
    assert res.summary["n"] == 4 and res.summary["samples_per_question"] == 3
    assert len(res.records) == 12
    assert abs(res.summary["accuracy"] - 1 / 3) < 1e-9
    assert [r["sample"] for r in res.records[:3]] == [0, 1, 2]


def test_evaluate_natural_plan_then_solution():
    task = get_task("synthetic/arithmetic", test_size=3)
    examples = task.load(split="test")
    golds = _gold_by_question(examples)

    def answer(req, k):
        if len(req.messages) == 1:
            return "PLAN: read the numbers, combine them."
        assert req.messages[1] == {"role": "assistant", "content": "PLAN: read the numbers, combine them."}
        q = next(q for q in golds if q in req.messages[0]["content"])
        return f"The answer is {golds[q]}."

    engine = ScriptedEngine(answer)
    res = evaluate(engine, task, examples, model_name="fake", plan_format="natural")
    assert len(engine.calls) == 2
    assert res.summary["accuracy"] == 1.0 and res.summary["plan_format"] == "natural"
    assert res.records[0]["plan"].startswith("PLAN:")
    assert res.records[0]["tokens"] == 10  # plan + solution tokens


def test_fewshot_is_honoured_or_refused():
    """Few-shot prompts exist for plan formats none and code; elsewhere, or for a task without one, it is an error
    rather than a setting silently ignored."""
    import pytest

    from forethought.errors import UserError

    engine = ScriptedEngine(lambda r, k: "The answer is 1.")
    arithmetic = get_task("synthetic/arithmetic", train_size=2, test_size=2)
    questions = arithmetic.load(split="test")
    for plan_format in ("natural", "steps"):
        with pytest.raises(UserError, match=f"not '{plan_format}'"):
            evaluate(engine, arithmetic, questions, model_name="m", plan_format=plan_format, fewshot=True)
    with pytest.raises(UserError, match="has no few-shot prompt"):
        evaluate(engine, arithmetic, questions, model_name="m", fewshot=True)
    assert engine.calls == []  # refused before anything was generated


def test_a_killed_evaluation_resumes_at_its_first_unfinished_chunk(tmp_path):
    """With `partial`, questions are answered in chunks of the engine's batch size, each kept as it ends: a kill
    in chunk 3 of 3 leaves 2 chunks, the rerun asks the engine only for the third (plan and solution turns), and the
    records equal an uninterrupted evaluation's; other settings do not reuse them; write() removes the file."""
    import pytest

    from forethought.evaluate import partial_path

    task = get_task("synthetic/arithmetic", test_size=10)
    examples = task.load(split="test")
    golds = _gold_by_question(examples)

    def answer(req, k):
        q = next(q for q in golds if q in req.messages[0]["content"])
        return f"PLAN: add up {q[:12]}" if len(req.messages) == 1 else f"The answer is {golds[q]}."

    class Killed(Exception):
        pass

    class Dies(ScriptedEngine):
        batch_size = 4

        def generate(self, requests, *, progress=True):
            if len(self.calls) == 4:  # chunks 1 and 2 took two calls each (plan, solution); chunk 3 dies
                raise Killed
            return super().generate(requests, progress=progress)

    kwargs = dict(model_name="fake", plan_format="natural", max_new_tokens=32)
    path = partial_path(tmp_path / "eval")
    with pytest.raises(Killed):
        evaluate(Dies(answer), task, examples, partial=path, **kwargs)
    assert [len(r["ids"]) for _, r in read_lines(path)] == [4, 4]
    again = Dies(answer)
    again.calls = [None] * 10  # it would die only on its 5th call
    resumed = evaluate(again, task, examples, partial=path, **kwargs)
    assert [len(c) for c in again.calls[10:]] == [2, 2]  # the last chunk's 2 questions: plans, then solutions
    whole = ScriptedEngine(answer)
    whole.batch_size = 4
    reference = evaluate(whole, task, examples, **kwargs)
    assert resumed.records == reference.records and resumed.summary["accuracy"] == 1.0
    other = ScriptedEngine(answer)
    other.batch_size = 4
    evaluate(other, task, examples, partial=path, **{**kwargs, "max_new_tokens": 16})
    assert sum(len(c) for c in other.calls) == 2 * len(examples)  # other settings answer everything again
    resumed.write(tmp_path / "eval")
    assert not path.exists() and (tmp_path / "eval" / "summary.json").is_file()


def read_lines(path):
    from forethought.jsonl import read_jsonl

    return list(read_jsonl(path))


_SLOW_EVAL = """
import sys, time
from pathlib import Path
from forethought.engines.base import Completion, Sample
from forethought.evaluate import evaluate, partial_path
from forethought.runs import stages
from forethought.tasks import get_task
stages.HEARTBEAT_S, stages.STOPPED_S = 0.1, 0.5

class Slow:
    name, batch_size = "slow", 2

    def generate(self, requests, *, progress=True):
        time.sleep(1.0)  # wall time: it runs on while the process is stopped
        return [Completion(samples=[Sample(text="So the answer is 1.", tokens=5, finish_reason="eos")],
                           prompt_tokens=10) for _ in requests]

task = get_task("synthetic/arithmetic", test_size=4)
examples = task.load(split="test")
partial = None if sys.argv[2] == "whole" else partial_path(Path(sys.argv[1]))
print("started", flush=True)
evaluate(Slow(), task, examples, model_name="slow", partial=partial).write(Path(sys.argv[1]))
"""


def test_an_evaluations_seconds_leave_out_time_the_process_was_stopped(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import time

    for way in ("whole", "chunks"):  # one engine call of 4 questions, or 2 chunks of 2
        out = tmp_path / way
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_EVAL, str(out), way], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "started"
        start = time.monotonic()
        time.sleep(0.4)
        proc.send_signal(signal.SIGSTOP)
        time.sleep(2.5)
        proc.send_signal(signal.SIGCONT)
        assert proc.wait(timeout=60) == 0
        wall = time.monotonic() - start
        seconds = json.loads((out / "summary.json").read_text())["seconds"]
        assert wall - 3.0 <= seconds <= wall - 2.0, (way, wall, seconds)  # less the 2.5 s it was stopped
