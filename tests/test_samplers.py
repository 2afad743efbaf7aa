"""Samplers with a scripted engine: exact trial accounting, hints kept out of training text, LEPA, resume."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from forethought import plans
from forethought.config import validate
from forethought.engines.base import Completion, Request, Sample
from forethought.errors import UserError
from forethought.evaluate import evaluate
from forethought.plans import prompts
from forethought.samplers import SamplerConfig, read_records, run_sampler, training_rows
from forethought.tasks import get_task
from forethought.tasks.base import Task, choice_example

PLAN = "PLAN: read the amounts, then combine them."


class ScriptedEngine:
    """Answers with `answer(stage, question_index, attempt, request)`; counts every request per (stage, question)."""

    name = "scripted"

    def __init__(self, examples, answer):
        self.examples, self.answer = examples, answer
        self.asked: Counter = Counter()
        self.calls: list[list[Request]] = []

    def stage(self, req: Request) -> str:
        last = req.messages[-1]["content"]
        if "Reflect on why" in last:
            return "reflect"
        if last == prompts.NEW_PLAN:
            return "newplan"
        return "plan" if "anticipatory plan" in last and len(req.messages) == 1 else "solve"

    def generate(self, requests, *, progress=True):
        self.calls.append(list(requests))
        out = []
        for r in requests:
            assert r.n == 1
            i = next(i for i, ex in enumerate(self.examples) if ex.question.split("\n")[0] in r.messages[0]["content"])
            stage = self.stage(r)
            attempt = self.asked[stage, i]
            self.asked[stage, i] += 1
            text = self.answer(stage, i, attempt, r)
            finish = "length" if text.startswith("CUT:") else "eos"  # "CUT:" marks text stopped by the token limit
            out.append(Completion([Sample(text=text, tokens=len(text.split()), finish_reason=finish)],
                                  prompt_tokens=sum(len(m["content"].split()) for m in r.messages)))
        return out

    def requests(self, stage):
        return [r for call in self.calls for r in call if self.stage(r) == stage]


def _examples(n=4):
    return get_task("synthetic/arithmetic", train_size=n, test_size=1).load(split="train")


def _run(tmp_path, examples, answer, task=None, **cfg):
    engine = ScriptedEngine(examples, answer)
    task = task or get_task("synthetic/arithmetic", train_size=len(examples), test_size=1)
    out = tmp_path / "iter_001" / "samples.jsonl"
    stats = run_sampler(SamplerConfig(**cfg), engine, task, examples, out_path=out, iteration=1, seed=7,
                        method=cfg.get("kind", "rejection"), progress=False)
    return engine, stats, read_records(out)


def _by_question(records):
    groups = {}
    for r in records:
        groups.setdefault(r["question_id"], []).append(r)
    return groups


def test_rejection_exact_trials_and_first_correct(tmp_path):
    examples = _examples(3)
    right_at = {0: None, 1: 2, 2: 0}  # q0 never right, q1 right at trial 2, q2 at once

    def answer(stage, i, attempt, req):
        return f"The answer is {examples[i].gold}." if attempt == right_at[i] else "The answer is -1."

    engine, stats, records = _run(tmp_path, examples, answer)
    groups = _by_question(records)
    assert [len(groups[ex.id]) for ex in examples] == [5, 3, 1]
    assert [r["rejected_reason"] for r in groups[examples[0].id]] == ["wrong"] * 5
    assert [r["accepted"] for r in groups[examples[1].id]] == [False, False, True]
    assert len(engine.requests("solve")) == 9 == stats.trials == len({r["id"] for r in records})
    assert stats.questions == 3 and stats.accepted == 2 and abs(stats.acceptance_rate - 2 / 9) < 1e-9
    assert stats.tokens_out == sum(r["tokens_out"] for r in records) > 0
    assert stats.tokens_in == sum(r["tokens_in"] for r in records) > 0
    rec = groups[examples[1].id][2]
    assert rec["id"] == f"{examples[1].id}/t2" and rec["trial"] == 2 and rec["extracted"] == examples[1].gold
    assert rec["hint_used"] is False and rec["plan"] is None and rec["engine"] == "scripted"
    assert rec["prompts_version"] == prompts.PROMPTS_VERSION and rec["seed"] == 7 and rec["iteration"] == 1
    seeds = [r.seed for r in engine.requests("solve")]
    assert len(set(seeds)) == len(seeds)  # a fresh seed per trial


def test_rejection_max_accepted_dedupe_and_over_budget(tmp_path):
    examples = _examples(3)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if i == 0:  # always the same correct text: one kept, the rest duplicates, budget used up
            return f"The answer is {gold}."
        if i == 1:  # correct, wrong | correct, correct: the 2nd block over-delivers
            return f"Attempt {attempt}. The answer is {gold if attempt != 1 else -1}."
        return f"Attempt {attempt}. The answer is {gold}."  # all correct and distinct: stops after K

    _, stats, records = _run(tmp_path, examples, answer, max_accepted=2)
    groups = _by_question(records)
    assert [r["rejected_reason"] for r in groups[examples[0].id]] == [None] + ["duplicate"] * 4
    assert [r["rejected_reason"] for r in groups[examples[1].id]] == [None, "wrong", None, "over_budget"]
    assert [r["rejected_reason"] for r in groups[examples[2].id]] == [None, None]
    assert stats.accepted == 5 and stats.trials == 11
    kept = Counter(r["question_id"] for r in records if r["accepted"])
    assert max(kept.values()) == 2

    _, _, no_dedupe = _run(tmp_path / "b", examples, answer, max_accepted=2, dedupe=False)
    assert [r["accepted"] for r in _by_question(no_dedupe)[examples[0].id]] == [True, True]


def test_rejection_with_natural_plans_and_chunking(tmp_path):
    examples = _examples(5)

    def answer(stage, i, attempt, req):
        return PLAN if stage == "plan" else f"The answer is {examples[i].gold if attempt == 1 else -1}."

    engine, stats, records = _run(tmp_path, examples, answer, plan_format="natural", chunk_size=2)
    assert stats.trials == 10 and stats.accepted == 5
    assert all(len(call) <= 2 for call in engine.calls)
    assert all(r["plan"] == PLAN for r in records)
    rows = training_rows(records, "natural", "number")
    assert len(rows) == 5
    assert rows[0]["messages"][:3] == plans.solve_with_plan_messages(examples[0].question, PLAN, "number")


def test_star_hint_in_prompt_never_in_training_text(tmp_path):
    examples = _examples(3)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if attempt == 0:
            return "The answer is -1."
        if i == 0 and attempt == 1:
            return f"Using the hint, the answer is {gold}."
        return f"{attempt} steps. The answer is {gold}."

    engine, stats, records = _run(tmp_path, examples, answer, kind="star")
    solve = engine.requests("solve")
    hinted = [r for r in solve if any(f"{ex.question} ({ex.gold})" in r.messages[0]["content"] for ex in examples)]
    assert len(solve) == 7 and len(hinted) == 4  # 3 first tries without hint, 4 rationalizations
    groups = _by_question(records)
    assert [r["rejected_reason"] for r in groups[examples[0].id]] == ["wrong", "hint_mention", None]
    assert [r["hint_used"] for r in groups[examples[0].id]] == [False, True, True]
    rows = training_rows(records, "none", "number")
    assert len(rows) == 3
    for row in rows:
        ex = next(ex for ex in examples if ex.id == row["question_id"])
        assert row["messages"][0] == plans.question_messages(ex.question, "number")[0]
        assert f"({ex.gold})" not in json.dumps(row["messages"]) and "hint" not in json.dumps(row["messages"])


def test_star_hints_only_after_an_unhinted_failure(tmp_path):
    """A correct first try cut off by the token limit is rejected but is no failure: STaR tries again without the
    hint, and rationalizes only after that unhinted try is wrong."""
    examples = _examples(2)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        return [f"CUT: so the answer is {gold}.", "The answer is -1.", f"So it is {gold}. The answer is {gold}."][attempt]

    engine, stats, records = _run(tmp_path, examples, answer, kind="star")
    for ex in examples:
        group = _by_question(records)[ex.id]
        assert [r["rejected_reason"] for r in group] == ["truncated", "wrong", None]
        assert [r["hint_used"] for r in group] == [False, False, True]
    hinted = [r for r in engine.requests("solve") if any(f"({ex.gold})" in r.messages[0]["content"] for ex in examples)]
    assert len(hinted) == 2


class ChoiceTask(Task):
    name, answer_type = "test/choice", "choice"


def test_star_marks_the_correct_option_for_choice_tasks(tmp_path):
    examples = [choice_example(f"c/{i}", f"Question {i}: which one?", ["red", "green", "blue"], i) for i in range(3)]

    def answer(stage, i, attempt, req):
        return f"The answer is ({'ABC'[i] if attempt else 'ABC'[(i + 1) % 3]})."

    engine, stats, records = _run(tmp_path, examples, answer, task=ChoiceTask(), kind="star")
    assert stats.trials == 6 and stats.accepted == 3
    hinted = [r.messages[0]["content"] for r in engine.requests("solve") if "(CORRECT)" in r.messages[0]["content"]]
    assert len(hinted) == 3 and f"{'ABC'[1]}) green (CORRECT)" in hinted[1]
    assert all("(CORRECT)" not in json.dumps(row) for row in training_rows(records, "none", "choice"))


def test_pps_always_hinted_and_leaking_plan_rejected(tmp_path):
    examples = _examples(3)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if stage == "plan":
            return f"The total is {gold}." if i == 0 and attempt == 0 else PLAN
        return f"The answer is {gold}."

    engine, stats, records = _run(tmp_path, examples, answer, kind="pps", plan_format="natural")
    for r in engine.requests("plan") + engine.requests("solve"):
        assert any(f"{ex.question} ({ex.gold})" in r.messages[0]["content"] for ex in examples)
    groups = _by_question(records)
    assert [r["rejected_reason"] for r in groups[examples[0].id]] == ["leak", None]
    assert groups[examples[0].id][0]["solution"] is None
    assert len(engine.requests("solve")) == 3 and stats.trials == 4 and stats.accepted == 3
    assert all(r["hint_used"] for r in records)
    for row in training_rows(records, "natural", "number"):
        ex = next(ex for ex in examples if ex.id == row["question_id"])
        assert row["messages"][:3] == plans.solve_with_plan_messages(ex.question, PLAN, "number")


def test_lepa_reflects_replans_and_keeps_only_the_final_plan(tmp_path):
    examples = _examples(3)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if stage == "plan":
            return "PLAN v0"
        if stage == "reflect":
            return f"REFLECTION {attempt}"
        if stage == "newplan":  # q1: the first new plan leaks the answer
            return f"The result is {gold}." if i == 1 and attempt == 0 else f"PLAN v{attempt + 1}"
        plan = req.messages[1]["content"]
        right = {0: None, 1: "PLAN v2", 2: "PLAN v1"}[i]
        return f"The answer is {gold if plan == right else -1}."

    engine, stats, records = _run(tmp_path, examples, answer, kind="lepa", plan_format="natural")
    groups = _by_question(records)
    q0, q1, q2 = (groups[ex.id] for ex in examples)
    assert len(q0) == 5 and all(r["rejected_reason"] == "wrong" for r in q0)  # 1 + 4 reflections, never more
    assert engine.asked["reflect", 0] == 4 and engine.asked["plan", 0] == 1
    assert [r["rejected_reason"] for r in q1] == ["wrong", "leak", None]
    assert [r["rejected_reason"] for r in q2] == ["wrong", None]
    assert stats.trials == 10 and stats.accepted == 2
    for r in engine.requests("reflect"):  # the reflection sees the gold answer
        ex = next(ex for ex in examples if ex.question in r.messages[0]["content"])
        assert f"the correct final answer is {ex.gold}" in r.messages[0]["content"]
    q1_reflections = [r.messages[0]["content"] for r in engine.requests("reflect") if examples[1].question in r.messages[0]["content"]]
    assert len(q1_reflections) == 2 and all("PLAN v0" in c for c in q1_reflections)  # the leak is not reflected on
    for r in engine.requests("solve"):  # the solve turn is the test-time one: question + plan, no gold, no reflection
        ex = next(ex for ex in examples if ex.question in r.messages[0]["content"])
        assert r.messages == plans.solve_with_plan_messages(ex.question, r.messages[1]["content"], "number")
    assert q1[2]["reflection"] == "REFLECTION 1" and q1[2]["plan"] == "PLAN v2" and q1[2]["hint_used"]
    rows = training_rows(records, "natural", "number")
    (row,) = [row for row in rows if row["question_id"] == examples[1].id]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant", "user", "assistant"]
    assert row["messages"][1]["content"] == "PLAN v2" and "REFLECTION" not in json.dumps(row)
    assert examples[1].gold not in row["messages"][1]["content"]


def test_lepa_without_plans_retries_after_reflection(tmp_path):
    examples = _examples(2)

    def answer(stage, i, attempt, req):
        gold = examples[i].gold
        if stage == "reflect":
            return "REFLECTION"
        if attempt == 0:
            return "The answer is -1."
        return f"As the hint says, {gold}." if i == 0 and attempt == 1 else f"Try {attempt}: the answer is {gold}."

    engine, stats, records = _run(tmp_path, examples, answer, kind="lepa")
    groups = _by_question(records)
    assert [r["rejected_reason"] for r in groups[examples[0].id]] == ["wrong", "hint_mention", None]
    retries = [r for r in engine.requests("solve") if len(r.messages) > 1]
    assert len(retries) == 2 and all(r.messages[1] == {"role": "assistant", "content": "REFLECTION"} for r in retries)
    # q0's hint-mentioning answer was correct: its last trial is a fresh, hint-free try, not a reflection on it
    assert engine.requests("solve")[-1].messages == plans.question_messages(examples[0].question, "number")
    assert [r["reflection"] for r in groups[examples[0].id]] == [None, "REFLECTION", None]
    rows = training_rows(records, "none", "number")
    assert sorted(row["question_id"] for row in rows) == sorted(ex.id for ex in examples)
    for row in rows:
        ex = next(ex for ex in examples if ex.id == row["question_id"])
        assert row["messages"] == plans.question_messages(ex.question, "number") + [
            {"role": "assistant", "content": next(r["solution"] for r in records if r["accepted"] and r["question_id"] == ex.id)}]


def test_lepa_reflects_only_on_a_wrong_solution(tmp_path):
    """A correct solution rejected for another reason (truncated, hint mention) is never reflected on: the next
    trial plans afresh, without the gold; after a wrong solution the next trial reflects on exactly that one."""
    examples = _examples(2)
    solutions = {"PLAN fresh 0": "The answer is -1.", "PLAN new 0": "CUT: The answer is {gold}",
                 "PLAN fresh 1": "The answer is -2.", "PLAN new 1": "As the hint says, the answer is {gold}.",
                 "PLAN fresh 2": "The answer is {gold}."}

    def answer(stage, i, attempt, req):
        if stage == "plan":
            return f"PLAN fresh {attempt}"
        if stage == "reflect":
            return f"REFLECTION {attempt}"
        if stage == "newplan":
            return f"PLAN new {attempt}"
        return solutions.get(req.messages[1]["content"], "The answer is -9.").format(gold=examples[i].gold)

    engine, stats, records = _run(tmp_path, examples, answer, kind="lepa", plan_format="natural")
    for i, ex in enumerate(examples):
        group = sorted(_by_question(records)[ex.id], key=lambda r: r["trial"])
        assert [r["rejected_reason"] for r in group] == ["wrong", "truncated", "wrong", "hint_mention", None]
        assert [r["correct"] for r in group] == [False, True, False, True, True]
        assert [r["plan"] for r in group] == list(solutions)
        assert [r["reflection"] is not None for r in group] == [False, True, False, True, False]
        assert [r["hint_used"] for r in group] == [False, True, False, True, False]
        assert engine.asked["plan", i] == 3 and engine.asked["reflect", i] == 2
        reflected = [r.messages for r in engine.requests("reflect") if ex.question in r.messages[0]["content"]]
        assert reflected == [plans.reflect_messages(ex.question, f"PLAN fresh {n}", f"The answer is -{n + 1}.", ex.gold)
                             for n in range(2)]
        fresh = [r.messages for r in engine.requests("plan") if ex.question in r.messages[0]["content"]]
        assert fresh == [plans.plan_messages(ex.question)] * 3  # no reflection, no gold


def _budgeted(text, req):
    """`text` as an engine with `req.max_new_tokens` returns it: cut after that many words (marked "CUT:")."""
    words = text.split()
    return text if len(words) <= req.max_new_tokens else "CUT: " + " ".join(words[:req.max_new_tokens])


@pytest.mark.parametrize("plan_format", ["none", "natural"])
def test_lepa_never_reflects_on_a_correct_solution(tmp_path, plan_format):
    """Many correct answers are cut by a small solution budget; no reflection follows a correct solution."""
    examples = _examples(12)

    def answer(stage, i, attempt, req):
        s = req.seed
        if stage in ("plan", "newplan"):
            return f"PLAN {s % 3}"
        if stage == "reflect":
            return "REFLECTION"
        if s % 3 == 0:
            return "The answer is -1."
        return _budgeted(f"The answer is {examples[i].gold}." + " Let me check that once more." * (s % 3 - 1), req)

    _, _, records = _run(tmp_path, examples, answer, kind="lepa", plan_format=plan_format, max_new_tokens=6)
    after_correct = reflections = 0
    for group in _by_question(records).values():
        previous = None  # the latest earlier trial with a solution
        for r in sorted(group, key=lambda r: r["trial"]):
            if r["reflection"] is not None:
                reflections += 1
                assert previous is not None and not previous["correct"], r["id"]
            after_correct += previous is not None and previous["correct"]
            if r["solution"] is not None:
                previous = r
    assert reflections and after_correct  # both paths were taken
    assert any(r["rejected_reason"] == "truncated" and r["correct"] for r in records)


def _deterministic(examples):
    """Outputs that depend only on the request's seed (like a seeded engine), with leaks, hints and duplicates."""

    def answer(stage, i, attempt, req):
        s = req.seed
        gold = examples[i].gold
        if stage in ("plan", "newplan"):
            return f"The result is {gold}." if s % 5 == 0 else f"PLAN {s % 3}"
        if stage == "reflect":
            return f"REFLECT {s % 7}"
        return f"Work {s % 2}. The answer is {gold if s % 3 else -1}."

    return answer


@pytest.mark.parametrize("cfg", [
    dict(kind="rejection", max_accepted=2, trials=6),
    dict(kind="star", plan_format="natural", chunk_size=3),
    dict(kind="pps", plan_format="natural", max_accepted=3),
    dict(kind="lepa", plan_format="natural", chunk_size=2),
])
def test_resume_after_a_kill_reproduces_an_uninterrupted_run(tmp_path, cfg):
    examples = _examples(6)
    _, full_stats, full = _run(tmp_path / "full", examples, _deterministic(examples), **cfg)
    assert len({r["id"] for r in full}) == len(full) and all(r["trial"] < cfg.get("trials", 5) for r in full)
    strip = lambda rs: sorted((json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in rs))  # noqa: E731
    lines = (tmp_path / "full" / "iter_001" / "samples.jsonl").read_text().splitlines(keepends=True)
    for cut in range(0, len(lines), max(1, len(lines) // 7)):
        out = tmp_path / f"cut{cut}" / "iter_001" / "samples.jsonl"
        out.parent.mkdir(parents=True)
        out.write_text("".join(lines[:cut]) + (lines[cut][: len(lines[cut]) // 2] if cut < len(lines) else ""))
        engine, stats, resumed = _run(tmp_path / f"cut{cut}", examples, _deterministic(examples), **cfg)
        assert strip(resumed) == strip(full)
        assert len(engine.requests("solve")) == sum(r["solution"] is not None for r in full[cut:])
        assert (stats.trials, stats.accepted, stats.tokens_out) == (
            full_stats.trials, full_stats.accepted, full_stats.tokens_out)
        assert out.read_text().endswith("\n")
    # a finished file: nothing is asked again
    engine, _, again = _run(tmp_path / "full", examples, _deterministic(examples), **cfg)
    assert engine.calls == [] and len(again) == len(full)


def test_resume_refuses_another_runs_file(tmp_path):
    examples = _examples(1)
    answer = _deterministic(examples)
    _run(tmp_path, examples, answer)
    with pytest.raises(UserError, match="another run"):
        _run(tmp_path, examples, answer, kind="star")


def test_training_rows_match_what_evaluate_sends(tmp_path):
    examples = _examples(2)
    task = get_task("synthetic/arithmetic", train_size=2, test_size=1)

    def answer(stage, i, attempt, req):
        return PLAN if stage == "plan" else f"The answer is {examples[i].gold}."

    for fmt in ("none", "natural"):
        _, _, records = _run(tmp_path / fmt, examples, answer, plan_format=fmt)
        rows = training_rows(records, fmt, "number")
        res = evaluate(ScriptedEngine(examples, answer), task, examples, model_name="fake", plan_format=fmt,
                       progress=False)
        assert [row["messages"][:-1] for row in rows] == [r["prompt"] for r in res.records]
        assert [row["messages"][-1]["content"] for row in rows] == [r["output"] for r in res.records]
        assert rows[0]["id"] == f"{examples[0].id}/t0" and rows[0]["question_id"] == examples[0].id


def test_config_rejects_unimplemented_formats_and_bad_values():
    assert SamplerConfig().kind == "rejection"
    with pytest.raises(UserError, match="not implemented yet"):
        validate(SamplerConfig, {"plan_format": "steps"}, "recipe.yaml")
    with pytest.raises(UserError, match="unknown key 'trails'"):
        validate(SamplerConfig, {"trails": 3}, "recipe.yaml")
    with pytest.raises(UserError, match="trials"):
        validate(SamplerConfig, {"trials": 0}, "recipe.yaml")


@pytest.mark.parametrize("kind", ["star", "lepa"])
def test_star_and_lepa_refuse_more_than_one_accepted(kind, monkeypatch, capsys, tmp_path):
    """STaR hints only after a failed unhinted try and LEPA's trials are a chain: both keep one trajectory per
    question, so max_accepted > 1 is one clear config error (and `forethought run` exits 2 with one line)."""
    from pathlib import Path

    from forethought.cli import main

    with pytest.raises(UserError, match=rf"sampler\.max_accepted must be 1 with sampler\.kind={kind}"):
        validate(SamplerConfig, {"kind": kind, "max_accepted": 2}, "recipe.yaml")
    assert SamplerConfig(kind=kind).max_accepted == 1
    for other in ("rejection", "pps"):
        assert SamplerConfig(kind=other, max_accepted=2).max_accepted == 2
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "quickstart.yaml"
    monkeypatch.setattr("sys.argv", ["forethought", "run", str(recipe), f"sampler.kind={kind}",
                                     "sampler.max_accepted=3", f"output={tmp_path / 'run'}"])
    with pytest.raises(SystemExit) as exc:
        main()
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "sampler.max_accepted" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_real_engine_lepa_resume_is_exact(tmp_path, tiny_engine):
    """The hf engine with a tiny random model: LEPA runs end to end and a resumed run repeats the records."""
    task = get_task("synthetic/arithmetic", train_size=3, test_size=1)
    examples = task.load(split="train")
    cfg = SamplerConfig(kind="lepa", plan_format="natural", trials=2, max_new_tokens=6, plan_max_new_tokens=6)

    def run(out):
        return run_sampler(cfg, tiny_engine, task, examples, out_path=out, iteration=0, seed=3, method="lepa",
                           progress=False)

    stats = run(tmp_path / "a.jsonl")
    full = (tmp_path / "a.jsonl").read_text().splitlines(keepends=True)
    assert stats.trials == len(full) <= 6 and stats.tokens_out > 0
    (tmp_path / "b.jsonl").write_text("".join(full[:2]) + full[2][:10])
    run(tmp_path / "b.jsonl")
    strip = lambda rs: sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}) for r in rs)  # noqa: E731
    assert strip(read_records(tmp_path / "b.jsonl")) == strip(read_records(tmp_path / "a.jsonl"))


@pytest.mark.parametrize("reject", [True, False])
def test_truncated_correct_answers_are_not_kept(tmp_path, reject):
    examples = _examples(2)

    def answer(stage, i, attempt, r):
        gold = examples[i].gold
        return f"CUT: so it is {gold}" if attempt == 0 else f"The answer is {gold}."

    _, stats, recs = _run(tmp_path, examples, answer, kind="rejection", trials=3, max_accepted=1,
                          reject_truncated=reject)
    for group in _by_question(recs).values():
        group.sort(key=lambda r: r["trial"])
        if reject:
            assert [r["rejected_reason"] for r in group] == ["truncated", None]
            assert group[0]["correct"] is True and group[1]["accepted"] is True
        else:
            assert len(group) == 1 and group[0]["accepted"] is True
    assert stats.trials == (4 if reject else 2)


class DemoStripping(ScriptedEngine):
    """Checks that every conversation starts with the demonstration turns, then answers the rest as scripted."""

    def __init__(self, examples, answer, demo_turns):
        super().__init__(examples, answer)
        self.demo_turns = demo_turns

    def generate(self, requests, *, progress=True):
        for r in requests:
            assert r.messages[:len(self.demo_turns)] == self.demo_turns
        return super().generate([Request(messages=r.messages[len(self.demo_turns):], temperature=r.temperature,
                                         max_new_tokens=r.max_new_tokens, seed=r.seed, stop=r.stop)
                                 for r in requests], progress=progress)


@pytest.mark.parametrize("plan_format", ["none", "natural"])
def test_demos_precede_every_conversation_and_never_reach_training_text(tmp_path, plan_format):
    examples = _examples(3)
    task = get_task("synthetic/arithmetic", train_size=3, test_size=1)
    demos = task.demos(2)
    turns = plans.demo_messages(demos, plan_format, "number")
    assert len(turns) == 2 * (4 if plan_format == "natural" else 2)
    assert [m["content"] for m in turns if m["role"] == "assistant"][-1] == demos[1].solution

    def answer(stage, i, attempt, req):
        if stage == "plan":
            return PLAN
        return f"The answer is {examples[i].gold if attempt or i == 0 else -1}."

    engine = DemoStripping(examples, answer, turns)
    out = tmp_path / "samples.jsonl"
    stats = run_sampler(SamplerConfig(kind="lepa", plan_format=plan_format, trials=2, demos=2), engine, task,
                        examples, out_path=out, iteration=1, seed=0, method="lepa", progress=False)
    assert stats.trials == 5 and stats.accepted == 3
    text = json.dumps(training_rows(read_records(out), plan_format, "number"))
    assert all(d.question not in text and d.solution not in text for d in demos)


def test_demos_need_a_task_that_has_them_and_a_text_plan_format(tmp_path):
    task = get_task("gsm8k")
    with pytest.raises(UserError, match="no worked demonstrations; set sampler.demos: 0"):
        run_sampler(SamplerConfig(demos=1), ScriptedEngine([], None), task, [], out_path=tmp_path / "s.jsonl",
                    iteration=1, seed=0, method="rest_em", progress=False)
    demos = get_task("synthetic/arithmetic").demos(1)
    with pytest.raises(UserError, match="plan formats none and natural"):
        plans.demo_messages(demos, "code", "number")
