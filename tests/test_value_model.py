"""CPL value model: tanh range, training lowers the MSE on step Q values, save/load round trip."""

from __future__ import annotations

import pytest

from forethought.errors import UserError
from forethought.learners.value_model import ValueConfig, ValueModel, train_value_model

MESSAGES = [{"role": "user", "content": "What is 3 + 4?"}]
ROWS = [{"messages": MESSAGES, "prefix": f"<plan>\n<step>Plan 1: {text} {i}</step>", "q": q, "question_id": "q"}
        for i in range(4) for text, q in (("add the numbers", 0.8), ("guess wildly", -0.8))]


def mse(values, rows):
    return sum((v - r["q"]) ** 2 for v, r in zip(values, rows)) / len(rows)


def test_training_fits_step_values_and_round_trips(tiny_model_dir, tmp_path):
    states = [(r["messages"], r["prefix"]) for r in ROWS]
    cfg = ValueConfig(learning_rate=3e-3, max_steps=12, batch_size=8)
    stats = train_value_model(str(tiny_model_dir), ROWS, tmp_path / "value", cfg, seed=0, progress=False)
    assert stats.steps == 12
    trained = ValueModel.load(tmp_path / "value", device="cpu")
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
