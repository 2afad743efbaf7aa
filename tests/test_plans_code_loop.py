"""Plan format `code` inside the loop's samplers (LEPA, PPS, resume) and in one-pass evaluation, with a scripted engine."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from forethought import plans
from forethought.engines.base import Completion, Sample
from forethought.evaluate import evaluate
from forethought.plans import code, prompts
from forethought.samplers import SamplerConfig, read_records, run_sampler, training_rows
from forethought.tasks import get_task

PLAN = "def solve(amounts):\n    total = combine(amounts)\n    return total"


class CodeEngine:
    """Answers with `answer(stage, question_index, attempt, request)`; a reply that opens a ```python block ends at
    its closing ``` when the request stops there (finish "stop"), as the hf engine does."""

    name = "scripted"

    def __init__(self, examples, answer):
        self.examples, self.answer = examples, answer
        self.asked: Counter = Counter()
        self.calls: list = []

    @staticmethod
    def stage(req) -> str:
        last, users = req.messages[-1], [m["content"] for m in req.messages if m["role"] == "user"]
        if last["role"] == "user":
            return "reflect" if "Reflect on why" in last["content"] else "other"
        if last["content"] == code.OPEN:
            return "newplan" if users[-1] == prompts.NEW_CODE_PLAN else "plan"
        return "solve"

    def generate(self, requests, *, progress=True):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            i = next(i for i, ex in enumerate(self.examples) if ex.question in r.messages[0]["content"])
            stage = self.stage(r)
            attempt = self.asked[stage, i]
            self.asked[stage, i] += 1
            text, finish = self.answer(stage, i, attempt, r), "eos"
            if code.CLOSE in r.stop and code.CLOSE in text:
                text, finish = text[: text.index(code.CLOSE)], "stop"
            elif text.startswith("CUT:"):
                finish = "length"
            out.append(Completion([Sample(text, len(text.split()), finish)] * r.n,
                                  prompt_tokens=sum(len(m["content"].split()) for m in r.messages)))
        return out

    def requests(self, stage):
        return [r for call in self.calls for r in call if self.stage(r) == stage]


def _examples(n):
    return get_task("synthetic/arithmetic", train_size=n, test_size=1).load(split="train")


def _run(tmp_path, examples, answer, **cfg):
    engine = CodeEngine(examples, answer)
    task = get_task("synthetic/arithmetic", train_size=len(examples), test_size=1)
    out = tmp_path / "samples.jsonl"
    stats = run_sampler(SamplerConfig(plan_format="code", **cfg), engine, task, examples, out_path=out, iteration=1,
                        seed=7, method=cfg.get("kind", "rejection"), progress=False)
    return engine, stats, read_records(out)


def _groups(records, examples):
    """Each example's records in trial order."""
    return [sorted((r for r in records if r["question_id"] == ex.id), key=lambda r: r["trial"]) for ex in examples]


def test_lepa_with_code_plans(tmp_path):
    examples = _examples(4)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if stage == "plan":  # q3's first plan never closes its brackets; with no solution to reflect on, it replans
            if i == 3:
                return "total = combine(a, b\n```" if attempt == 0 else f"# v1\n{PLAN}\n```"
            return PLAN + "\n```\nignored tail"
        if stage == "reflect":
            return f"REFLECTION {attempt}"
        if stage == "newplan":  # q1's first new plan returns the gold: a leak
            return (f"return {gold}\n```" if i == 1 and attempt == 0 else f"# v{attempt + 1}\n{PLAN}\n```")
        plan = code.parse(req.messages[-1]["content"]).plan
        right = {0: PLAN, 1: f"# v2\n{PLAN}", 2: None, 3: f"# v1\n{PLAN}"}[i]
        return f"Following the plan. The answer is {gold if plan.strip() == right else -1}."

    engine, stats, records = _run(tmp_path, examples, answer, kind="lepa", trials=4)
    q0, q1, q2, q3 = _groups(records, examples)
    assert [r["rejected_reason"] for r in q0] == [None]
    assert [r["rejected_reason"] for r in q1] == ["wrong", "leak", None]
    assert [r["rejected_reason"] for r in q2] == ["wrong"] * 4
    assert [r["rejected_reason"] for r in q3] == ["bad_plan", None] and q3[0]["solution"] is None
    assert engine.asked["reflect", 3] == 0 and q3[1]["reflection"] is None and not q3[1]["hint_used"]
    assert stats.trials == 10 and stats.accepted == 3
    assert q0[0]["plan"] == PLAN and q1[2]["plan"] == f"# v2\n{PLAN}"
    for r in engine.requests("plan") + engine.requests("newplan"):
        assert r.stop == (code.CLOSE,)
    for r in engine.requests("solve"):  # the test-time reply: code prompt, the plan's block, nothing about the gold
        ex = next(ex for ex in examples if ex.question in r.messages[0]["content"])
        plan = code.parse(r.messages[-1]["content"]).plan
        assert r.messages == plans.code_solve_messages(ex.question, plan, "number")
    rows = training_rows(records, "code", "number")
    assert len(rows) == 3
    row = next(row for row in rows if row["question_id"] == examples[1].id)
    assert row["messages"][0] == plans.code_messages(examples[1].question, "number")[0]
    reply = row["messages"][1]["content"]
    assert len(row["messages"]) == 2 and reply.startswith(f"```python\n# v2\n{PLAN}\n```\nFollowing the plan.")
    assert "REFLECTION" not in json.dumps(row) and f"return {examples[1].gold}" not in reply


def test_pps_code_plan_truncated_or_leaking_is_rejected_before_solving(tmp_path):
    examples = _examples(3)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if stage == "plan":
            return {0: f"answer = {gold}\n```", 1: "CUT: total = (a +"}.get(i, PLAN + "\n```") if attempt == 0 \
                else PLAN + "\n```"
        return f"The answer is {gold}."

    engine, stats, records = _run(tmp_path, examples, answer, kind="pps")
    assert [[r["rejected_reason"] for r in g] for g in _groups(records, examples)] == [["leak", None], ["truncated", None], [None]]
    assert len(engine.requests("solve")) == 3 and stats.trials == 5
    assert all(f"({ex.gold})" not in json.dumps(training_rows(records, "code", "number")) for ex in examples)


def test_code_resume_after_a_kill_reproduces_the_run(tmp_path):
    examples = _examples(5)

    def answer(stage, i, attempt, req):
        s, gold = req.seed, examples[i].gold
        if stage in ("plan", "newplan"):
            return [f"x = {s % 3}\n```", f"return {gold}\n```", "bad = (\n```"][s % 3]
        if stage == "reflect":
            return f"R {s % 5}"
        return f"The answer is {gold if s % 2 else -1}."

    _, full_stats, full = _run(tmp_path / "full", examples, answer, kind="lepa", chunk_size=2)
    lines = (tmp_path / "full" / "samples.jsonl").read_text().splitlines(keepends=True)
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in rs)  # noqa: E731
    for cut in (1, len(lines) // 2, len(lines) - 1):
        (tmp_path / f"c{cut}").mkdir()
        (tmp_path / f"c{cut}" / "samples.jsonl").write_text("".join(lines[:cut]) + lines[cut][:7])
        _, stats, resumed = _run(tmp_path / f"c{cut}", examples, answer, kind="lepa", chunk_size=2)
        assert strip(resumed) == strip(full) and stats.trials == full_stats.trials


def test_eval_code_is_one_pass_and_reads_the_answer_after_the_plan():
    examples = _examples(3)
    task = get_task("synthetic/arithmetic", train_size=3, test_size=1)
    replies = {
        0: lambda gold: f"{PLAN}\n```\nSo the answer is {gold}.",
        1: lambda gold: f"result = {gold}\n```\nI think the answer is 12345.",  # the gold in the plan does not count
        2: lambda gold: f"x = {gold}\nstill planning",                         # never closes: no answer
    }
    engine = CodeEngine(examples, lambda stage, i, attempt, req: replies[i](examples[i].gold))
    res = evaluate(engine, task, examples, model_name="fake", plan_format="code", max_new_tokens=50,
                   plan_max_new_tokens=30, progress=False)
    assert len(engine.calls) == 1 and all(r.max_new_tokens == 80 and r.stop == () for r in engine.calls[0])
    assert [r["correct"] for r in res.records] == [True, False, False]
    assert res.records[0]["plan"] == PLAN + "\n" and res.records[0]["output"] == f"So the answer is {examples[0].gold}."
    assert res.records[2]["extracted"] is None and res.records[2]["output"] == ""
    assert res.records[0]["prompt"] == plans.code_plan_messages(examples[0].question, "number")
    assert res.summary["plan_format"] == "code" and res.summary["accuracy"] == pytest.approx(1 / 3)


def test_training_rows_match_what_eval_sends(tmp_path):
    examples = _examples(2)

    def answer(stage, i, attempt, req):
        return PLAN + "\n```" if stage == "plan" else f"The answer is {examples[i].gold}."

    _, _, records = _run(tmp_path, examples, answer)
    rows = training_rows(records, "code", "number")
    task = get_task("synthetic/arithmetic", train_size=2, test_size=1)
    one_pass = lambda stage, i, attempt, req: rows[i]["messages"][-1]["content"][len(code.OPEN):]  # noqa: E731
    res = evaluate(CodeEngine(examples, one_pass), task, examples, model_name="fake", plan_format="code",
                   progress=False)
    for row, rec in zip(rows, res.records):
        assert row["messages"][:-1] == rec["prompt"][:-1] and rec["prompt"][-1]["content"] == code.OPEN
        assert row["messages"][-1]["content"] == code.render(rec["plan"], rec["output"])
        assert rec["correct"]
