"""The hf engine's memory: what generate allocates is given back once it returns and the engine is closed, and
prefill never asks the model for logits at every prompt position (at batch 64 x 700 tokens x a 49k vocabulary those
are several GB)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys

import pytest
import torch

from forethought.engines import Request, close_engine
from forethought.engines.hf import HFEngine
from forethought.runs.stages import peak_rss_mb, reset_peak_rss

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def _rss_mb() -> int:
    """VmRSS of this process in MB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) // 1024 for line in f if line.startswith("VmRSS:"))


def _kv_heavy_model(tokenizer_dir):
    """A random Llama (about 1M parameters) whose KV cache is large for its compute: 16 layers of 4 kv heads x 128."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tokenizer.padding_side = "left"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=16,
                         num_attention_heads=4, num_key_value_heads=4, head_dim=128, max_position_embeddings=2048,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval(), tokenizer


def _requests(count: int, words: int, new_tokens: int) -> list[Request]:
    return [Request(prompt=f"{i} " + " ".join(["compute the input, then print it"] * words), temperature=0.7, seed=i,
                    max_new_tokens=new_tokens) for i in range(count)]


def _measure(tokenizer_dir: str) -> dict:
    """RSS before a large generate, its peak, and RSS after the engine is closed, in MB."""
    model, tokenizer = _kv_heavy_model(tokenizer_dir)
    engine = HFEngine.from_loaded(model, tokenizer, batch_size=64)
    engine.eos_ids = set()  # every row decodes all its tokens: the cache reaches its full size
    engine.generate(_requests(2, 2, 4), progress=False)  # warm-up: thread pools, lazily built kernels
    del model
    gc.collect()
    before = _rss_mb()
    reset_peak_rss()
    engine.generate(_requests(64, 6, 16), progress=False)  # 64 rows of about 100 tokens: a cache of about 400 MB
    peak = peak_rss_mb()
    close_engine(engine)
    del engine
    gc.collect()
    return {"before": before, "peak": peak, "after": _rss_mb()}


def test_generate_then_close_gives_the_memory_back(tiny_model_dir):
    # In a fresh process: late in a long test session the allocator already holds memory freed by earlier tests,
    # which generate reuses without raising the peak (seen as peak == before in the full suite).
    child = subprocess.run([sys.executable, __file__, str(tiny_model_dir)], capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, child.stderr[-3000:]
    m = json.loads(child.stdout.strip().splitlines()[-1])
    assert m["peak"] - m["before"] > 200, f"generate should have needed a large cache: {m} (MB)"
    assert m["after"] - m["before"] < 40, f"RSS did not come back after close: {m} (MB)"


def test_prefill_and_decode_ask_for_the_last_position_logits_only(tiny_engine, monkeypatch):
    seen = []
    forward = tiny_engine.model.forward

    def spy(*args, **kwargs):
        out = forward(*args, **kwargs)
        seen.append((kwargs["input_ids"].shape[1], out.logits.shape[1]))
        return out

    monkeypatch.setattr(tiny_engine.model, "forward", spy)
    for share_prefix in (True, False):
        monkeypatch.setattr(tiny_engine, "share_prefix", share_prefix)
        tiny_engine.generate(_requests(4, 12, 3) + [Request(prompt="short one", n=3, max_new_tokens=3)], progress=False)
    assert any(width > 20 for width, _ in seen), seen  # prompts were encoded many positions at a time
    assert {kept for _, kept in seen} == {1}, seen


if __name__ == "__main__":  # the fresh process of test_generate_then_close_gives_the_memory_back
    print(json.dumps(_measure(sys.argv[1])))
