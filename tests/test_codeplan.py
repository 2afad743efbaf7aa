"""The CodePlan recipe: task corpus -> annotation -> training with and without plans -> evaluation, and resume."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from forethought import plans
from forethought.codeplan import CodePlanConfig, run_codeplan, training_rows
from forethought.config import load_config
from forethought.engines.base import Completion, Sample
from forethought.plans import code

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("codeplan*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_codeplan_recipes_validate_and_document_their_command(path):
    assert {p.name for p in RECIPES} >= {"codeplan.yaml", "codeplan_cpu.yaml"}
    cfg = load_config(CodePlanConfig, path)
    header = path.read_text().split("\nmodel:")[0]
    assert f"forethought codeplan recipes/{path.name}" in header
    assert cfg.variants == ["code", "none"]


def test_training_rows_with_and_without_plans_use_the_eval_prompts():
    records = [{"index": 3, "prompt": "Q?", "plan": "x = a + b\nreturn x", "response": "So 5. The answer is 5."}]
    (with_plan,) = training_rows(records, "code", "number")
    (vanilla,) = training_rows(records, "none", "number")
    assert with_plan["messages"][0] == plans.code_messages("Q?", "number")[0]
    assert with_plan["messages"][1]["content"] == "```python\nx = a + b\nreturn x\n```\nSo 5. The answer is 5."
    assert vanilla["messages"] == plans.question_messages("Q?", "number") + [
        {"role": "assistant", "content": "So 5. The answer is 5."}]
    assert with_plan["id"] == vanilla["id"] == "3"


class Annotator:
    """Writes a well-formed plan for every other pair and a truncated one for the rest."""

    name = "scripted-annotator"

    def __init__(self):
        self.requests = 0

    def generate(self, requests, *, progress=True):
        self.requests += len(requests)
        return [Completion([Sample("def solve(q):\n    parts = read(q)\n    return combine(parts)\n", 12, "stop")
                            if i % 2 == 0 else Sample("def solve(q", 128, "length")], 40)
                for i, _ in enumerate(requests)]


# How many of the 3 evaluation questions each evaluated model gets right, by (model, plan format): the first k.
RIGHT = {("code", "code"): 2, ("none", "none"): 1, ("base", "code"): 3, ("base", "none"): 0}


class Scripted:
    """Runs the real engine on every request (so each checkpoint is loaded and generates), then replaces each reply
    with a scripted one in the request's format: right for the first RIGHT[model, format] questions, wrong after."""

    def __init__(self, engine, model: str, examples):
        self.engine, self.name, self.model = engine, engine.name, model
        self.golds = {ex.question: (i, ex.gold) for i, ex in enumerate(examples)}

    def generate(self, requests, *, progress=True):
        done = self.engine.generate(requests, progress=progress)
        for request, completion in zip(requests, done):
            fmt = "code" if request.messages[-1] == {"role": "assistant", "content": code.OPEN} else "none"
            user = " ".join(m["content"] for m in request.messages if m["role"] == "user")
            (i, gold), = [v for q, v in self.golds.items() if q in user]
            answer = gold if i < RIGHT[self.model, fmt] else str(int(gold) + 1)
            plan = "x = count()\nreturn x\n```\n" if fmt == "code" else ""  # the reply continues the ```python
            text = f"{plan}So it is {answer}. The answer is {answer}."
            completion.samples = [Sample(text, s.tokens, "stop") for s in completion.samples]
        return done


def test_codeplan_runs_end_to_end_and_resumes(tmp_path, tiny_model_dir, monkeypatch):
    import forethought.engines as engines
    from forethought.tasks import get_task

    real, built = engines.get_engine, []
    examples = get_task("synthetic/arithmetic", seed=3, train_size=6, test_size=3).load()
    golds = [int(e.gold) for e in examples]
    assert len(set(golds) | {g + 1 for g in golds}) == 6  # no scripted answer is right for another question

    def get_engine(kind, model, **options):
        built.append(model)
        if model == "annotator":
            return Annotator()
        name = "base" if model == str(tiny_model_dir) else Path(model).parent.name
        return Scripted(real(kind, model, **options), name, examples)

    monkeypatch.setattr(engines, "get_engine", get_engine)
    if importlib.util.find_spec("forethought.runs.stages"):  # the stage runner opens the engines
        monkeypatch.setattr("forethought.runs.stages.get_engine", get_engine)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"model: {tiny_model_dir}\nannotator: annotator\n"
        "corpus_task: {name: synthetic/arithmetic, options: {train_size: 6, test_size: 3}, limit: 6}\n"
        "annotate: {max_new_tokens: 128, chunk_size: 4}\n"
        "engine: {batch_size: 8, device: cpu}\n"
        "learner: {max_steps: 2, batch_size: 2, max_length: 256, lora: {r: 4, alpha: 8}}\n"
        "eval: {task: synthetic/arithmetic, options: {seed: 3, train_size: 6, test_size: 3}, max_new_tokens: 4, "
        "plan_max_new_tokens: 4}\n"
        f"eval_base: true\noutput: {tmp_path / 'run'}\n"
    )
    summary = run_codeplan(recipe, [], progress=False)
    root = tmp_path / "run"
    assert summary["annotation"]["processed"] == 6 and summary["annotation"]["kept"] == 3
    assert summary["annotation"]["filtered"] == {"truncated": 3}
    assert set(summary["models"]) == {"code", "none", "base_code", "base_none"}
    for name, m in summary["models"].items():
        fmt = name.removeprefix("base_")
        records = [json.loads(x) for x in (root / name / "eval" / "records.jsonl").read_text().splitlines()]
        right = RIGHT["base" if name.startswith("base_") else name, fmt]
        assert [r["correct"] for r in records] == [i < right for i in range(3)]
        assert [r["gold"] for r in records] == [e.gold for e in examples]
        assert m["accuracy"] == sum(r["correct"] for r in records) / len(records) == right / 3
        assert m["n"] == 3 and m["plan_format"] == fmt and m["truncated"] == 0
    # code right on questions 0 and 1, none on question 0: the paired differences are 0, 1, 0
    assert summary["code_minus_none"]["delta"] == pytest.approx(1 / 3)
    half = 1.959963984540054 * (1 / 3)  # sample sd of (0, 1, 0) is sqrt(1/3); over sqrt(3) questions: 1/3
    assert summary["code_minus_none"]["ci95"] == pytest.approx([1 / 3 - half, 1 / 3 + half])
    assert summary["models"]["code"]["train"]["steps"] == 2 and summary["models"]["base_code"]["train"] is None
    assert "code_minus_none" in summary and set(summary["seconds"]) >= {"annotate", "train_code", "eval_none"}
    code_rows = [json.loads(x) for x in (root / "code" / "train.jsonl").read_text().splitlines()]
    none_rows = [json.loads(x) for x in (root / "none" / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in code_rows] == [r["id"] for r in none_rows] == ["0", "2", "4"]  # the same kept pairs
    assert all(r["messages"][-1]["content"].startswith(code.OPEN) for r in code_rows)
    assert not any(code.OPEN in json.dumps(r) for r in none_rows)
    corpus = [json.loads(x) for x in (root / "corpus.jsonl").read_text().splitlines()]
    assert len(corpus) == 6 and all(set(r) == {"prompt", "response", "answer"} for r in corpus)
    assert all(r["response"].endswith(f"The answer is {r['answer']}.") for r in corpus)

    built.clear()
    assert run_codeplan(recipe, [], progress=False)["models"] == summary["models"]
    assert built == []  # everything was done: no model is loaded again


def test_eval_sampling_settings_reach_the_evaluation(tmp_path, monkeypatch):
    """eval.n, eval.temperature and eval.top_p are honoured (n > 1 gives the sampled metrics)."""
    import forethought.evaluate
    from forethought.codeplan import CodePlanRun

    seen = {}

    class Result:
        summary, records = {"accuracy": 0.5}, []

        def write(self, out):
            seen["written"] = out

    def fake_evaluate(engine, task, examples, **kwargs):
        seen.update(kwargs)
        return Result()

    monkeypatch.setattr(forethought.evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr("forethought.runs.stages.get_engine", lambda kind, model, **o: object())
    recipe = tmp_path / "r.yaml"
    recipe.write_text("annotate: {input: corpus.jsonl}\n"
                      "eval: {task: synthetic/arithmetic, n: 4, temperature: 0.7, top_p: 0.9}\n"
                      f"output: {tmp_path / 'run'}\n")
    run = CodePlanRun(load_config(CodePlanConfig, recipe), progress=False)
    with run.stages:
        run.evaluate("none", "some-model")
    assert (seen["n"], seen["temperature"], seen["top_p"], seen["plan_format"]) == (4, 0.7, 0.9, "none")
