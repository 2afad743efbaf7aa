"""A full CPL round on a tiny model: batched search with the hf engine, extraction, one Step-APO step."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml

from forethought.engines.hf import HFEngine
from forethought.learners.sft import SFTConfig, train_sft
from forethought.learners.step_apo import StepAPOConfig, train_step_apo
from forethought.search import SearchConfig, Tree, extract, run_search
from forethought.plans import steps
from forethought.tasks import get_task
from forethought.tasks.base import Example

QUESTIONS = [f"Question {i}: what is {i} times zero, plus one?" for i in range(8)]
ANSWER = "<plan>\n<step>Plan 1: multiply by zero, then add one</step>\n</plan>\n<solution>The answer is 1.</solution>"


@pytest.fixture(scope="module")
def warm(tiny_model_dir, tmp_path_factory):
    """The tiny random model after a few full fine-tuning steps on the step format (answers are always 1)."""
    rows = [{"messages": steps.messages(q, "number") + [{"role": "assistant", "content": ANSWER}]} for q in QUESTIONS]
    out = tmp_path_factory.mktemp("cpl") / "warm"
    train_sft(tiny_model_dir, rows, out, SFTConfig(lora=None, learning_rate=3e-3, max_steps=30, batch_size=8),
              seed=0, progress=False)
    return out


def test_search_extract_and_one_step_apo_step(warm, tmp_path):
    task = get_task("synthetic/arithmetic", difficulty=1)  # only its number verifier is used
    examples = [Example(f"q{i}", q, "1" if i % 4 else "2") for i, q in enumerate(QUESTIONS)]  # some golds unreachable
    engine = Counting(HFEngine(str(warm), device="cpu", batch_size=32))
    cfg = SearchConfig(iterations=6, root_children=3, children=3, max_new_tokens=64, temperature=1.0)
    trees, stats = run_search(engine, task, examples, cfg, out=tmp_path / "trees.jsonl")
    assert stats.engine_calls == engine.calls <= cfg.iterations
    assert stats.tokens == engine.tokens == sum(t.tokens for t in trees)  # every sample's tokens, counted once
    assert sum(n.tokens for t in trees for n in t.nodes) <= stats.tokens
    kinds = {n.kind for t in trees for n in t.nodes}
    assert {"step", "solution"} <= kinds
    assert 0 < stats.solved < len(examples)  # gold 2 is never reached
    saved = [Tree.from_json(json.loads(line)) for line in (tmp_path / "trees.jsonl").read_text().splitlines()]
    assert [t.to_json() for t in saved] == [t.to_json() for t in trees]
    sft, pairs, values = extract(trees, examples, task.answer_type)
    assert sft and pairs and values
    assert all(p["q_chosen"] > 0 > p["q_rejected"] for p in pairs)
    stats = train_step_apo(str(warm), pairs, tmp_path / "apo", StepAPOConfig(max_steps=1, batch_size=4, lora=None),
                           seed=0, progress=False)
    assert stats.steps == 1 and (tmp_path / "apo" / "config.json").exists()
    apo = HFEngine(str(tmp_path / "apo"), device="cpu")
    reply = apo.generate([steps_request(QUESTIONS[1])], progress=False)[0].samples[0]
    # the same greedy continuation from transformers' own generate on the trained checkpoint
    ids, text, finish = reference_reply(tmp_path / "apo", steps_request(QUESTIONS[1]), apo.eos_ids)
    assert (reply.text, reply.tokens, reply.finish_reason) == (text, len(ids), finish)


def steps_request(question):
    from forethought.engines import Request

    return Request(messages=steps.messages(question, "number"), max_new_tokens=16)


def reference_reply(path, request, eos_ids):
    """(generated ids, text, finish reason) of a greedy `generate` on `path` with the chat template applied."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
    prompt = tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=True)
    input_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), do_sample=False,
                             max_new_tokens=request.max_new_tokens, eos_token_id=sorted(eos_ids),
                             pad_token_id=tokenizer.pad_token_id)
    ids = out[0, input_ids.shape[1]:].tolist()
    finish = "eos" if ids[-1] in eos_ids else "length"
    return ids, tokenizer.decode(ids, skip_special_tokens=True), finish


class Counting:
    """An engine wrapper that counts calls and the tokens of every sample it hands back."""

    def __init__(self, engine):
        self.engine, self.name, self.calls, self.tokens = engine, engine.name, 0, 0

    def generate(self, requests, *, progress=True):
        done = self.engine.generate(requests, progress=progress)
        self.calls += 1
        self.tokens += sum(s.tokens for c in done for s in c.samples)
        return done


def ones_task(tmp_path) -> str:
    """A custom task whose every answer is 1 (the warm model's only answer); returns its YAML's path."""
    data = tmp_path / "ones"
    data.mkdir()
    (data / "ones.jsonl").write_text("".join(json.dumps({"question": q, "answer": "1"}) + "\n" for q in QUESTIONS))
    (data / "ones.yaml").write_text("name: ones\nsplits: {train: ones.jsonl, test: ones.jsonl}\n"
                                    "question_field: question\ngold_field: answer\nanswer_type: number\n")
    return str(data / "ones.yaml")


def test_two_round_pipeline_resumes_and_reports(warm, tmp_path):
    from forethought.cpl import run_cpl

    recipe = {
        "model": str(warm), "task": {"name": ones_task(tmp_path), "train_limit": 6, "eval_limit": 4},
        "engine": {"batch_size": 32},
        "search": {"iterations": 3, "root_children": 3, "children": 3, "max_new_tokens": 64, "temperature": 1.0},
        "round2_iterations": 2,
        "sft": {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-4, "lora": None},
        "step_apo": {"max_steps": 1, "batch_size": 4, "lora": None},
        "value": {"max_steps": 1, "batch_size": 4},
        "rounds": 2, "eval": {"max_new_tokens": 32, "plan_max_new_tokens": 32}, "output": str(tmp_path / "run"),
    }
    (tmp_path / "cpl.yaml").write_text(yaml.safe_dump(recipe))
    summary = run_cpl(tmp_path / "cpl.yaml", [], progress=False)
    assert set(summary["models"]) == {"base", "r1_sft", "r1_apo", "r1_dpo", "r2_sft", "r2_apo", "r2_dpo"}
    assert (tmp_path / "run" / "r1" / "value" / "checkpoint").exists()  # round 2 searched with it
    assert "<details>" in (tmp_path / "run" / "r1" / "trees.html").read_text()
    r2 = [Tree.from_json(json.loads(line)) for line in (tmp_path / "run" / "r2" / "trees.jsonl").read_text().splitlines()]
    assert any(n.value is not None for t in r2 for n in t.nodes if n.kind == "step")  # valued by the value model
    assert {"r1_apo_minus_sft", "r1_dpo_minus_sft", "r1_apo_minus_dpo", "r2_apo_minus_base"} <= set(summary["deltas"])
    r1 = [Tree.from_json(json.loads(x)) for x in (tmp_path / "run" / "r1" / "trees.jsonl").read_text().splitlines()]
    assert summary["search"]["r1"]["tokens"] == sum(t.tokens for t in r1)  # the round's trees, resumed ones too
    assert sum(t.tokens for t in r1) >= sum(n.tokens for t in r1 for n in t.nodes) > 0
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["stages"]) == {"eval/base", *(f"r{k}/{s}" for k in (1, 2) for s in ("search", "sft", "apo", "dpo")),
                                       "r1/value", *(f"eval/r{k}_{m}" for k in (1, 2) for m in ("sft", "apo", "dpo"))}
    assert set(summary["seconds"]) == set(manifest["stages"])
    again = run_cpl(tmp_path / "cpl.yaml", [], progress=False)  # everything done: nothing runs again
    assert again["models"] == summary["models"]
    assert json.loads((tmp_path / "run" / "manifest.json").read_text()) == manifest
    # copied without weights before its last evaluation ended: only the model that evaluation needs trains again
    for name in ("r1/value", "r2/apo"):
        shutil.rmtree(tmp_path / "run" / name / "checkpoint")
    manifest["stages"]["eval/r2_apo"] = "pending"
    (tmp_path / "run" / "manifest.json").write_text(json.dumps(manifest))
    run_cpl(tmp_path / "cpl.yaml", [], progress=False)
    after = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert (tmp_path / "run" / "r2" / "apo" / "checkpoint").exists() and after["stages"]["eval/r2_apo"] == "done"
    assert after["seconds"]["r2/apo"] > manifest["seconds"]["r2/apo"]  # trained again
    assert not (tmp_path / "run" / "r1" / "value" / "checkpoint").exists()  # round 2's search is done: not needed
    assert after["seconds"]["r1/value"] == manifest["seconds"]["r1/value"]


def test_a_search_with_nothing_to_train_on_leaves_the_base_model_and_copies_its_evaluation(tiny_model_dir, tmp_path):
    """The untrained tiny model writes no well-formed step: every learner skips (as an EM iteration that accepted
    nothing), each round's models are the base model, its evaluation is copied rather than repeated, and round 2
    searches with the base model and no value model."""
    from forethought.cpl import run_cpl

    recipe = {
        "model": str(tiny_model_dir), "task": {"name": ones_task(tmp_path), "train_limit": 4, "eval_limit": 4},
        "engine": {"batch_size": 32}, "rounds": 2, "round2_iterations": 2,
        "search": {"iterations": 2, "root_children": 2, "children": 2, "max_new_tokens": 16, "temperature": 1.0},
        "eval": {"max_new_tokens": 16, "plan_max_new_tokens": 16}, "output": str(tmp_path / "run"),
    }
    (tmp_path / "cpl.yaml").write_text(yaml.safe_dump(recipe))
    summary = run_cpl(tmp_path / "cpl.yaml", [], progress=False)
    run = tmp_path / "run"
    for k in (1, 2):
        found = json.loads((run / f"r{k}" / "search.json").read_text())
        assert found["tokens"] > 0 and (found["sft_rows"], found["pairs"], found["value_rows"]) == (0, 0, 0)
    manifest = json.loads((run / "manifest.json").read_text())
    skipped = [f"r{k}/{s}" for k in (1, 2) for s in ("sft", "apo", "dpo")] + ["r1/value"]
    assert all(manifest["stages"][s] == "skipped" for s in skipped)
    assert not any((run / s).exists() for s in skipped)
    copies = [f"eval/r{k}_{m}" for k in (1, 2) for m in ("sft", "apo", "dpo")]
    assert all(manifest["stages"][c] == "done" and manifest["reused"][c] == {"from": "eval/base"} for c in copies)
    base = (run / "eval" / "base" / "records.jsonl").read_text()
    assert all((run / c / "records.jsonl").read_text() == base for c in copies)
    assert summary["models"]["r2_apo"] == summary["models"]["base"]
    assert summary["deltas"]["r2_apo_minus_base"]["delta"] == 0
    assert json.loads((run / "manifest.json").read_text())["stages"] == manifest["stages"]
    again = run_cpl(tmp_path / "cpl.yaml", [], progress=False)  # resumed: nothing runs again
    assert again["models"] == summary["models"]
    assert json.loads((run / "manifest.json").read_text()) == manifest
