"""SFT learner: assistant-only masks, training that learns, merged atomic checkpoints, determinism, STaR schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from forethought.errors import UserError
from forethought.learners.sft import LoraSettings, SFTConfig, tokenize_chat, train_sft

ONE_TURN = [
    {"role": "system", "content": "You plan before you answer."},
    {"role": "user", "content": "Janet has 16 eggs and eats 3. How many are left?"},
    {"role": "assistant", "content": "16 - 3 = 13. The answer is 13."},
]
LEPA = [
    {"role": "user", "content": "Question: 2 + 1? Make a plan first."},
    {"role": "assistant", "content": "Plan: find the total, then answer."},
    {"role": "user", "content": "Now solve it with the plan."},
    {"role": "assistant", "content": "2 + 1 = 3. The answer is 3."},
]
ROWS = [
    {"messages": LEPA},
    {"messages": ONE_TURN},
    {"messages": [{"role": "user", "content": "Last letter of Elon Musk?"}, {"role": "assistant", "content": "nk"}]},
    {"messages": [{"role": "user", "content": "def solve(x)?"}, {"role": "assistant", "content": "return x * 2 + 1"}]},
]


def spans(ids: list[int], mask: list[int]) -> list[list[int]]:
    """The masked tokens, grouped into contiguous runs."""
    runs, prev = [], 0
    for tok, bit in zip(ids, mask):
        if bit and not prev:
            runs.append([])
        if bit:
            runs[-1].append(tok)
        prev = bit
    return runs


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize("chat", [ONE_TURN, LEPA], ids=["one-turn", "lepa-two-turn"])
def test_mask_covers_exactly_the_assistant_turns(tokenizer, chat):
    out = tokenize_chat(tokenizer, chat, max_length=1024)
    assert len(out["input_ids"]) == len(out["assistant_masks"])
    got = [tokenizer.decode(run) for run in spans(out["input_ids"], out["assistant_masks"])]
    assert got == [m["content"] + "<|im_end|>" for m in chat if m["role"] == "assistant"]
    unmasked = tokenizer.decode([t for t, b in zip(out["input_ids"], out["assistant_masks"]) if not b])
    for m in chat:
        assert (m["content"] in unmasked) == (m["role"] != "assistant")


def test_mask_truncates_to_max_length(tokenizer):
    out = tokenize_chat(tokenizer, LEPA, max_length=20)
    assert len(out["input_ids"]) == len(out["assistant_masks"]) == 20


def test_inconsistent_chat_template_is_a_user_error(tiny_model_dir):
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (  # renders assistant turns under a different header than its generation prompt
        "{% for m in messages %}{{ '<|im_start|>' + ('bot' if m['role'] == 'assistant' else m['role']) + '\n' "
        "+ m['content'] + '<|im_end|>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
        "{% endif %}"
    )
    with pytest.raises(UserError, match="chat template does not render chat prefixes consistently"):
        tokenize_chat(tok, ONE_TURN, max_length=1024)


def test_malformed_rows_are_user_errors(tokenizer):
    with pytest.raises(UserError, match="no assistant turn"):
        tokenize_chat(tokenizer, ONE_TURN[:2], max_length=1024)
    with pytest.raises(UserError, match="'messages' must be a list"):
        tokenize_chat(tokenizer, [{"role": "user"}], max_length=1024)


def test_no_rows_is_a_user_error(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="no accepted samples to train on"):
        train_sft(tiny_model_dir, [], tmp_path / "ckpt", SFTConfig(), seed=0, progress=False)
    assert not (tmp_path / "ckpt").exists()


def masked_nll(model_dir: Path, rows: list[dict]) -> float:
    """Mean NLL of the assistant tokens under the checkpoint in `model_dir`."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, count = 0.0, 0
    for row in rows:
        out = tokenize_chat(tok, row["messages"], 1024)
        ids = torch.tensor([out["input_ids"]])
        labels = torch.where(torch.tensor([out["assistant_masks"]]) == 1, ids, -100)
        n = int((labels[:, 1:] != -100).sum())
        with torch.no_grad():
            total += float(model(input_ids=ids, labels=labels).loss) * n
        count += n
    return total / count


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return {k: v for f in sorted(model_dir.glob("*.safetensors")) for k, v in load_file(f).items()}


LORA = SFTConfig(learning_rate=5e-3, epochs=8, batch_size=4, lora=LoraSettings(r=8, alpha=16, dropout=0.0))


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft") / "iter_001" / "checkpoint"
    return out, train_sft(tiny_model_dir, ROWS, out, LORA, seed=3, progress=False)


def test_lora_training_lowers_loss_and_saves_a_merged_checkpoint(tiny_model_dir, tokenizer, lora_run):
    out, stats = lora_run
    assert masked_nll(out, ROWS) < 0.8 * masked_nll(tiny_model_dir, ROWS)
    names = {p.name for p in out.iterdir()}
    assert not any(n.startswith("adapter") for n in names)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= names
    trained, base = weights(out), weights(tiny_model_dir)
    assert trained.keys() == base.keys()  # plain HF names: no lora_A/lora_B, no base_model.model prefix
    assert any(not torch.equal(trained[k], base[k]) for k in base)
    AutoModelForCausalLM.from_pretrained(out)
    assert not [p for p in out.parent.iterdir() if p != out]  # no temporary leftovers
    per_epoch = sum(sum(tokenize_chat(tokenizer, r["messages"], 1024)["assistant_masks"]) for r in ROWS)
    assert stats.steps == 8 and stats.trained_tokens == 8 * per_epoch
    assert stats.train_loss > 0 and stats.tokens_per_second > 0


def test_same_seed_gives_identical_weights(tiny_model_dir, tmp_path):
    cfg = LORA.model_copy(update={"epochs": 2})
    first = train_sft(tiny_model_dir, ROWS, tmp_path / "first", cfg, seed=3, progress=False)
    again = train_sft(tiny_model_dir, ROWS, tmp_path / "again", cfg, seed=3, progress=False)
    train_sft(tiny_model_dir, ROWS, tmp_path / "other", cfg, seed=4, progress=False)
    a, b, c = (weights(tmp_path / name) for name in ("first", "again", "other"))
    assert all(torch.equal(a[k], b[k]) for k in a) and again.train_loss == first.train_loss
    assert any(not torch.equal(a[k], c[k]) for k in a)  # the comparison does see a different seed


def test_full_fine_tuning(tiny_model_dir, tmp_path):
    cfg = SFTConfig(learning_rate=1e-3, batch_size=2, lora=None)
    stats = train_sft(tiny_model_dir, ROWS, tmp_path / "full", cfg, seed=0, max_steps=3, progress=False)
    assert stats.steps == 3
    trained, base = weights(tmp_path / "full"), weights(tiny_model_dir)
    changed = [k for k in base if not torch.equal(trained[k], base[k])]
    assert any("embed_tokens" in k for k in changed) and any("layers.1.mlp" in k for k in changed)


def test_existing_output_dir_is_refused(tiny_model_dir, lora_run):
    with pytest.raises(UserError, match="already exists"):
        train_sft(tiny_model_dir, ROWS, lora_run[0], LORA, seed=3, progress=False)


def test_failed_save_leaves_no_output_dir(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import PreTrainedModel

    def half_save(self, path, *args, **kwargs):
        Path(path).mkdir(parents=True)
        (Path(path) / "config.json").write_text("{}")
        raise KeyboardInterrupt  # killed while writing

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", half_save)
    with pytest.raises(KeyboardInterrupt):
        train_sft(tiny_model_dir, ROWS, tmp_path / "ckpt", LORA, seed=0, max_steps=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_rows_cut_by_max_length_are_counted_and_reported(tiny_model_dir, tmp_path, capsys):
    """A row whose answer is cut by max_length is trained on what is left and counted as truncated; one left with
    no answer token is dropped and counted; both are said on stderr rather than passed over silently."""
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    long_answer = [{"role": "user", "content": "Count."}, {"role": "assistant", "content": " one two" * 40}]
    late_answer = [{"role": "user", "content": "word " * 60}, {"role": "assistant", "content": "ok"}]
    rows = [{"messages": ONE_TURN}, {"messages": long_answer}, {"messages": late_answer}]
    cfg = LORA.model_copy(update={"epochs": 1, "max_length": 96})
    assert len(tokenize_chat(tok, ONE_TURN, 1024)["input_ids"]) <= 96  # the first row fits whole
    stats = train_sft(tiny_model_dir, rows, tmp_path / "ckpt", cfg, seed=0, max_steps=1, progress=False)
    assert (stats.truncated_rows, stats.dropped_rows) == (1, 1)
    err = " ".join(capsys.readouterr().err.split())
    assert "1 lose answer tokens to max_length=96" in err and "1 are dropped" in err
    fits = train_sft(tiny_model_dir, ROWS, tmp_path / "fits", LORA.model_copy(update={"epochs": 1}), seed=0,
                     max_steps=1, progress=False)
    assert (fits.truncated_rows, fits.dropped_rows) == (0, 0) and "warning" not in capsys.readouterr().err


def test_cpu_micro_batches_bound_the_tokens_and_train_the_same_step(tiny_model_dir, tmp_path, monkeypatch):
    """On CPU a batch is split into micro-batches of at most CPU_TRAIN_TOKENS padded tokens with gradient
    accumulation raised to match, so each optimiser step still trains on the same rows: the weights after two steps
    equal those of training each batch in one pass."""
    from forethought.learners import common

    cfg = LORA.model_copy(update={"epochs": 1, "batch_size": 4, "max_length": 256})
    split = common.micro_batches({"per_device_train_batch_size": 4}, cfg, cuda=False)
    assert split["per_device_train_batch_size"] * cfg.max_length <= common.CPU_TRAIN_TOKENS
    assert split["per_device_train_batch_size"] * split["gradient_accumulation_steps"] == 4
    assert split["per_device_train_batch_size"] < 4  # the case below does split
    train_sft(tiny_model_dir, ROWS * 2, tmp_path / "micro", cfg, seed=0, max_steps=2, progress=False)
    monkeypatch.setattr(common, "CPU_TRAIN_TOKENS", 4 * cfg.max_length)
    train_sft(tiny_model_dir, ROWS * 2, tmp_path / "whole", cfg, seed=0, max_steps=2, progress=False)
    micro, whole, base = weights(tmp_path / "micro"), weights(tmp_path / "whole"), weights(tiny_model_dir)
    assert any(not torch.equal(micro[k], base[k]) for k in base)
    for k in micro:
        torch.testing.assert_close(micro[k], whole[k], rtol=1e-4, atol=1e-6)
