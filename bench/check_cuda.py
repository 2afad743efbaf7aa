"""GPU check (not a test: CI has no GPU): on CUDA the hf engine's greedy tokens equal `model.generate` one prompt at
a time, and seeded sampling is reproducible (also: how many samples survive turning the fast paths off); the SFT
learner trains on CUDA (bf16, LoRA and full) and the engine generates from the saved checkpoint; the Step-APO and
value-model learners train on CUDA.
Run: python bench/check_cuda.py MODEL [OUT_DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from forethought.engines import Request
from forethought.engines.hf import HFEngine

PROMPTS = ["Janet has 16 eggs and sells", "def solve(x):", "Question: what is 3 + 4? Let us plan first.", "A",
           "Let's plan first: find the total, subtract what is used, then"]


def main(model: str) -> None:
    engine = HFEngine(model, device="cuda", batch_size=4)
    same = 0
    for prompt in PROMPTS:
        request = Request(prompt=prompt, max_new_tokens=24)
        ids = engine.encode(request)
        with engine._attention():  # the kernels the engine uses, so only the decode loop differs
            out = engine.model.generate(torch.tensor([ids], device="cuda"), do_sample=False, max_new_tokens=24,
                                        attention_mask=torch.ones(1, len(ids), dtype=torch.long, device="cuda"),
                                        eos_token_id=sorted(engine.eos_ids), pad_token_id=engine.pad_id)
        expected = engine.tokenizer.decode(out[0, len(ids):], skip_special_tokens=True)
        same += engine.generate([request], progress=False)[0].samples[0].text == expected
    print(f"greedy tokens equal to generate, one prompt at a time: {same}/{len(PROMPTS)}")
    requests = [Request(prompt=p, max_new_tokens=n, temperature=0.8, seed=3, n=2)
                for p, n in zip(PROMPTS, [5, 20, 9, 14, 7])]
    first, second = ([[s.text for s in c.samples] for c in engine.generate(requests, progress=False)] for _ in range(2))
    engine.share_prefix = engine.preallocate = False
    engine.prefill_tokens = None
    plain = [[s.text for s in c.samples] for c in engine.generate(requests, progress=False)]
    kept = sum(a == b for xs, ys in zip(first, plain) for a, b in zip(xs, ys))
    print(f"seeded sampling reproducible: {first == second}; identical with fast paths off: {kept}/{sum(map(len, first))}")


def train(model: str, out: Path) -> None:
    from forethought.learners.sft import LoraSettings, SFTConfig, train_sft

    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": f"Plan: add the two numbers. {i} + {i} = {2 * i}. "
                                                           f"The answer is {2 * i}."}]} for i in range(32)]
    for name, lora in (("lora", LoraSettings()), ("full", None)):
        cfg = SFTConfig(learning_rate=1e-4, max_steps=4, batch_size=8, max_length=128, lora=lora)
        stats = train_sft(model, rows, out / name, cfg, seed=0, progress=False)
        engine = HFEngine(str(out / name), device="cuda")
        text = engine.generate([Request(messages=[{"role": "user", "content": "What is 3 + 3?"}],
                                        max_new_tokens=16)], progress=False)[0].samples[0].text
        print(f"train_sft on CUDA ({name}): {stats.steps} steps, loss {stats.train_loss:.3f}, "
              f"{stats.tokens_per_second:.0f} tok/s, {engine.model.dtype}; checkpoint generates {len(text)} chars")
    from forethought.learners.step_apo import StepAPOConfig, train_step_apo
    from forethought.learners.value_model import ValueConfig, ValueModel, train_value_model

    pairs = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "prefix": "<plan>",
              "chosen": "\n<step>Plan 1: add the numbers</step>", "rejected": "\n<step>Plan 1: guess</step>",
              "q_chosen": 0.5, "q_rejected": -0.5} for i in range(16)]
    stats = train_step_apo(model, pairs, out / "apo", StepAPOConfig(max_steps=4, batch_size=8), seed=0,
                           progress=False)
    print(f"train_step_apo on CUDA: {stats.steps} steps, loss {stats.train_loss:.3f}")
    rows = [{**p, "prefix": p["prefix"] + p["chosen"], "q": 0.5} for p in pairs]
    stats = train_value_model(model, rows, out / "value", ValueConfig(max_steps=4, batch_size=8), seed=0,
                              progress=False)
    values = ValueModel.load(out / "value").value([(r["messages"], r["prefix"]) for r in rows[:4]])
    print(f"train_value_model on CUDA: {stats.steps} steps, loss {stats.train_loss:.3f}; values {values}")


if __name__ == "__main__":
    main(sys.argv[1])
    train(sys.argv[1], Path(sys.argv[2]) if len(sys.argv) > 2 else Path(tempfile.mkdtemp()))
