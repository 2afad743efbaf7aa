"""A full CPL round on a tiny model: batched search with the hf engine, extraction, one Step-APO step."""

from __future__ import annotations

import json

from forethought.engines.hf import HFEngine
from forethought.learners.sft import SFTConfig, train_sft
from forethought.learners.step_apo import StepAPOConfig, train_step_apo
from forethought.search import SearchConfig, Tree, extract, run_search
from forethought.search import steps
from forethought.tasks import get_task
from forethought.tasks.base import Example

QUESTIONS = [f"Question {i}: what is {i} times zero, plus one?" for i in range(8)]
ANSWER = "<plan>\n<step>Plan 1: multiply by zero, then add one</step>\n</plan>\n<solution>The answer is 1.</solution>"


def test_search_extract_and_one_step_apo_step(tiny_model_dir, tmp_path):
    # a few full fine-tuning steps teach the random model the step format (answers are always 1)
    rows = [{"messages": steps.messages(q, "number") + [{"role": "assistant", "content": ANSWER}]} for q in QUESTIONS]
    warm = tmp_path / "warm"
    train_sft(tiny_model_dir, rows, warm, SFTConfig(lora=None, learning_rate=3e-3, max_steps=30, batch_size=8),
              seed=0, progress=False)
    task = get_task("synthetic/arithmetic", difficulty=1)  # only its number verifier is used
    examples = [Example(f"q{i}", q, "1" if i % 4 else "2") for i, q in enumerate(QUESTIONS)]  # some golds unreachable
    engine = HFEngine(str(warm), device="cpu", batch_size=32)
    cfg = SearchConfig(iterations=6, root_children=3, children=3, max_new_tokens=64, temperature=1.0)
    trees, stats = run_search(engine, task, examples, cfg, out=tmp_path / "trees.jsonl")
    assert stats.engine_calls <= cfg.iterations and stats.tokens > 0
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
    reply = HFEngine(str(tmp_path / "apo"), device="cpu").generate(
        [steps_request(QUESTIONS[1])], progress=False)[0].samples[0]
    assert reply.tokens > 0


def steps_request(question):
    from forethought.engines import Request

    return Request(messages=steps.messages(question, "number"), max_new_tokens=16)
