"""CPL value model: tanh range, training lowers the MSE on step Q values, save/load round trip, search and training
read the same tokens (zero-shot chat + prefix, cut from the left)."""

from __future__ import annotations

import pytest

from forethought.engines.base import Completion, Sample
from forethought.errors import UserError
from forethought.learners.value_model import ValueConfig, ValueModel, features, render, train_value_model
from forethought.plans import steps
from forethought.search import SearchConfig, extract, run_search
from forethought.tasks import get_task
from forethought.tasks.base import Example

MESSAGES = [{"role": "user", "content": "What is 3 + 4?"}]
ROWS = [{"messages": MESSAGES, "prefix": f"<plan>\n<step>Plan 1: {text} {i}</step>", "q": q, "question_id": "q"}
        for i in range(4) for text, q in (("add the numbers", 0.8), ("guess wildly", -0.8))]


def mse(values, rows):
    return sum((v - r["q"]) ** 2 for v, r in zip(values, rows)) / len(rows)


def test_training_fits_step_values_and_round_trips(tiny_model_dir, tmp_path):
    states = [(r["messages"], r["prefix"]) for r in ROWS]
    cfg = ValueConfig(learning_rate=3e-3, max_steps=12, batch_size=8, max_length=512)
    stats = train_value_model(str(tiny_model_dir), ROWS, tmp_path / "value", cfg, seed=0, progress=False)
    assert stats.steps == 12
    trained = ValueModel.load(tmp_path / "value", device="cpu")
    assert trained.max_length == 512  # inference cuts where training did
    values = trained.value(states)
    assert all(-1 <= v <= 1 for v in values)
    untrained_head = train_value_model(str(tiny_model_dir), ROWS, tmp_path / "v0", ValueConfig(max_steps=1,
                                       learning_rate=1e-12), seed=0, progress=False)
    assert untrained_head.steps == 1
    before = ValueModel.load(tmp_path / "v0", device="cpu").value(states)
    assert mse(values, ROWS) < 0.5 * mse(before, ROWS)
    good = [v for v, r in zip(values, ROWS) if r["q"] > 0]
    bad = [v for v, r in zip(values, ROWS) if r["q"] < 0]
    assert min(good) > max(bad)
    assert ValueModel.load(tmp_path / "value", device="cpu", batch_size=3).value(states) == pytest.approx(values,
                                                                                                          abs=1e-5)


def test_no_rows_or_existing_output_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="no value targets"):
        train_value_model(str(tiny_model_dir), [], tmp_path / "v", ValueConfig(), seed=0, progress=False)
    (tmp_path / "v").mkdir()
    with pytest.raises(UserError, match="already exists"):
        train_value_model(str(tiny_model_dir), ROWS, tmp_path / "v", ValueConfig(), seed=0, progress=False)


def random_value_model(model_dir, max_length: int) -> ValueModel:
    """The tiny LM with a freshly initialised (seeded) value head."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    net = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=1, dtype=torch.float32)
    return ValueModel(net, tokenizer, batch_size=4, max_length=max_length)


def head(model: ValueModel, ids: list[int]) -> float:
    """tanh(head) on one unpadded sequence of token ids."""
    import torch

    with torch.inference_mode():
        return torch.tanh(model.net(input_ids=torch.tensor([ids])).logits[0, 0]).item()


class TwoStepEngine:
    """Scripted policy: two distinct steps per expansion until two are written, then a solution answering 7."""

    name = "two-steps"

    def generate(self, requests, *, progress=True):
        out = []
        for r in requests:
            depth = steps.step_count(r.messages[-1]["content"])
            texts = ([f"<step>Plan {depth + 1}: idea {k}" for k in range(r.n)] if depth < 2 else
                     ["</plan><solution>The answer is 7."] * r.n)
            out.append(Completion([Sample(t, 4, "stop", -2.0, -0.5) for t in texts], 10))
        return out


def test_a_node_has_the_same_value_in_search_and_in_its_training_row(tiny_model_dir):
    model = random_value_model(tiny_model_dir, max_length=512)
    task = get_task("synthetic/arithmetic", difficulty=1)
    examples = [Example("q0", "What is 3 + 4?", "7")]
    cfg = SearchConfig(iterations=5, root_children=2, children=2, demos=1)  # the policy's prompt has a demo
    trees, _ = run_search(TwoStepEngine(), task, examples, cfg, value_fn=model.value)
    _, _, rows = extract(trees, examples, task.answer_type)
    by_prefix = {trees[0].prefix(n, steps.root_prefix()): n for n in trees[0].nodes}
    assert len(rows) >= 2
    for row, feature in zip(rows, features(model.tokenizer, rows, 512)):
        node = by_prefix[row["prefix"]]
        assert feature["labels"] == row["q"]
        assert node.value == pytest.approx(head(model, feature["input_ids"]), abs=1e-5)


def test_a_state_longer_than_max_length_keeps_its_last_tokens_in_training_and_search(tiny_model_dir):
    model = random_value_model(tiny_model_dir, max_length=48)
    long = "<plan>" + "".join(f"\n<step>Plan {k}: add the numbers</step>" for k in range(1, 9))
    full = model.tokenizer(render(model.tokenizer, MESSAGES, long), add_special_tokens=False)["input_ids"]
    assert len(full) > 48
    row = {"messages": MESSAGES, "prefix": long, "q": 0.5, "question_id": "q"}
    (trained,) = features(model.tokenizer, [row], 48)
    assert trained["input_ids"] == full[-48:]  # cut from the left: the head still reads the last token
    short = ROWS[0]["prefix"]
    values = model.value([(MESSAGES, long), (MESSAGES, short)])  # padded together, each truncated alone
    assert values[0] == pytest.approx(head(model, full[-48:]), abs=1e-5)
    assert values[0] != pytest.approx(head(model, full), abs=1e-3)
    assert values[1] == pytest.approx(head(model, features(model.tokenizer, [ROWS[0]], 48)[0]["input_ids"]),
                                      abs=1e-5)
