"""Step-APO: the loss formula, its equality with TRL's DPO loss through the margin trick, one reference pass,
and real training steps on a tiny model."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from forethought.learners.step_apo import (StepAPOConfig, _trainer_class, margin_offset, step_apo_loss,
                                           tokenize_pairs, train_step_apo)

PAIRS = [
    {"messages": [{"role": "user", "content": f"What is {i} + {i}?"}], "prefix": "<plan>",
     "chosen": f"\n<step>Plan 1: add {i} twice</step>", "rejected": "\n<step>Plan 1: guess</step>",
     "q_chosen": 0.5 + 0.1 * i, "q_rejected": -0.5, "kind": "step", "question_id": str(i)}
    for i in range(6)
]


def test_loss_equals_the_formula_on_hand_computed_numbers():
    t = torch.tensor
    loss = step_apo_loss(t([-3.0]), t([-5.0]), t([-4.0]), t([-4.5]), t([0.6]), t([-0.4]), beta=0.3, alpha=1.0)
    # logit = 0.3 * ((-3 + 4) - (-5 + 4.5)) - 1.0 * (0.6 + 0.4) = 0.45 - 1 = -0.55; loss = log(1 + e^0.55)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.55)), rel=1e-6)
    dpo = step_apo_loss(t([-3.0]), t([-5.0]), t([-4.0]), t([-4.5]), t([0.6]), t([-0.4]), beta=0.3, alpha=0.0)
    assert dpo.item() == pytest.approx(-math.log(1 / (1 + math.exp(-0.45))), rel=1e-6)  # plain sigmoid DPO
    # the offset on the chosen reference log-prob gives the same logit inside DPO's sigmoid
    m = margin_offset(0.6, -0.4, 0.3, 1.0)
    shifted = step_apo_loss(t([-3.0]), t([-5.0]), t([-4.0 + m]), t([-4.5]), t([0.0]), t([0.0]), beta=0.3, alpha=0.0)
    assert shifted.item() == pytest.approx(loss.item(), rel=1e-6)


def test_loss_rises_with_the_q_gap_at_fixed_log_ratios():
    """A wider Q_w - Q_l gap asks for a wider log-ratio margin: at the same log-probs the loss is higher."""
    t = torch.tensor
    gaps = [-0.5, 0.0, 0.2, 0.6, 1.0, 1.6, 2.0]  # q_chosen - q_rejected, split around zero
    logps = (t([-3.0] * len(gaps)), t([-5.0] * len(gaps)), t([-4.0] * len(gaps)), t([-4.5] * len(gaps)))
    q_w, q_l = t([g / 2 for g in gaps]), t([-g / 2 for g in gaps])
    losses = step_apo_loss(*logps, q_w, q_l, beta=0.3, alpha=1.0).tolist()
    assert all(a < b for a, b in zip(losses, losses[1:]))
    shifted = step_apo_loss(*logps, q_w + 0.7, q_l + 0.7, beta=0.3, alpha=1.0).tolist()
    assert shifted == pytest.approx(losses)  # only the gap matters, not the Q level
    dpo = step_apo_loss(*logps, q_w, q_l, beta=0.3, alpha=0.0).tolist()
    assert dpo == pytest.approx([dpo[0]] * len(gaps))  # alpha = 0: the Q values play no part
    # a 0.5 wider gap costs exactly what a 0.5 / beta narrower log-ratio margin costs
    narrower = step_apo_loss(t([-3.0 - 0.5 / 0.3]), *(x[:1] for x in logps[1:]), t([0.0]), t([0.0]), beta=0.3,
                             alpha=1.0)
    wider = step_apo_loss(*(x[:1] for x in logps), t([0.25]), t([-0.25]), beta=0.3, alpha=1.0)
    assert wider.item() == pytest.approx(narrower.item(), rel=1e-5)


def _step_logps(model, example) -> tuple[float, float]:
    """Summed log-probs of the chosen and rejected step tokens after the prompt, by a plain forward pass."""
    out = []
    for key in ("chosen_ids", "rejected_ids"):
        ids = torch.tensor([example["prompt_ids"] + example[key]])
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        targets = ids[0, 1:]
        start = len(example["prompt_ids"]) - 1
        out.append(float(logps[start:].gather(1, targets[start:, None]).sum()))
    return out[0], out[1]


@pytest.mark.parametrize("alpha", [1.0, 0.0])
def test_trl_dpo_loss_with_cached_margin_equals_step_apo(tiny_model_dir, tmp_path, alpha):
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = StepAPOConfig(alpha=alpha)
    examples = tokenize_pairs(tokenizer, PAIRS, cfg)
    assert len(examples) == len(PAIRS) and all(e["chosen_ids"] and e["rejected_ids"] for e in examples)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    args = DPOConfig(output_dir=str(tmp_path), beta=cfg.beta, loss_type=["sigmoid"], precompute_ref_log_probs=True,
                     per_device_train_batch_size=4, precompute_ref_batch_size=4, use_cpu=True, report_to="none",
                     max_length=256)
    trainer = _trainer_class()(model=model, args=args, train_dataset=datasets.Dataset.from_list(examples),
                               processing_class=tokenizer)
    assert trainer.reference_batches == 2  # 6 pairs, batches of 4: the reference runs once over the dataset
    reference = copy.deepcopy(trainer.model)
    with torch.no_grad():  # move the policy away from the reference so both log-ratio terms matter
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    rows = [trainer.train_dataset[i] for i in range(len(examples))]
    batch = trainer.data_collator(rows)
    got = trainer.compute_loss(model, batch).item()
    # the policy's summed step log-probs by TRL's own log-prob code; the reference's from the cache, margin removed
    pol_w, pol_l = DPOTrainer.compute_ref_log_probs(trainer, model, batch)
    t = torch.tensor
    margins = t([margin_offset(r["q_chosen"], r["q_rejected"], cfg.beta, alpha) for r in PAIRS])
    ref_w, ref_l = batch["ref_chosen_logps"] - margins, batch["ref_rejected_logps"]
    fresh_w, fresh_l = DPOTrainer.compute_ref_log_probs(trainer, reference, batch)
    assert torch.allclose(ref_w, fresh_w, rtol=1e-3) and torch.allclose(ref_l, fresh_l, rtol=1e-3)
    assert not torch.allclose(pol_w, ref_w, rtol=1e-3)
    want = step_apo_loss(pol_w, pol_l, ref_w, ref_l, t([r["q_chosen"] for r in PAIRS]),
                         t([r["q_rejected"] for r in PAIRS]), beta=cfg.beta, alpha=alpha).mean().item()
    # TRL's training forward (with grad) and its no-grad log-prob pass differ by ~3e-4 relative on this random
    # model, which beta turns into ~1% of the loss; a wrong margin (sign, scale, missing) moves it by far more
    assert got == pytest.approx(want, rel=2e-2)
    if alpha:
        no_margin = step_apo_loss(pol_w, pol_l, ref_w, ref_l, margins * 0, margins * 0, beta=cfg.beta,
                                  alpha=0.0).mean().item()
        assert abs(got - no_margin) > 10 * 2e-2 * got
    trainer.train()
    assert trainer.reference_batches == 2  # training never runs the reference again


def test_training_moves_the_implicit_reward_margin_and_saves_a_checkpoint(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    cfg = StepAPOConfig(learning_rate=5e-3, max_steps=4, batch_size=6, lora=None)
    stats = train_step_apo(str(tiny_model_dir), PAIRS, tmp_path / "apo", cfg, seed=0, progress=False)
    assert stats.steps == 4 and math.isfinite(stats.train_loss)
    before = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "apo", dtype=torch.float32)
    examples = tokenize_pairs(tokenizer, PAIRS, cfg)
    gap = lambda m: sum(c - r for c, r in (_step_logps(m, e) for e in examples))  # noqa: E731
    assert gap(after) > gap(before)  # chosen steps became likelier relative to rejected ones
    with pytest.raises(Exception, match="already exists"):
        train_step_apo(str(tiny_model_dir), PAIRS, tmp_path / "apo", cfg, seed=0, progress=False)


def test_bad_pairs_are_one_clear_error(tiny_model_dir, tmp_path):
    from forethought.errors import UserError

    with pytest.raises(UserError, match="lacks q_chosen"):
        train_step_apo(str(tiny_model_dir), [{k: v for k, v in PAIRS[0].items() if k != "q_chosen"}],
                       tmp_path / "x", StepAPOConfig(), seed=0, progress=False)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("installed", ["1.17.0", "1.15.2"])
def test_unsupported_trl_is_one_clear_error(tiny_model_dir, tmp_path, monkeypatch, installed):
    import importlib.metadata

    from forethought.errors import UserError
    from forethought.learners import train
    from forethought.learners.distributed import DistributedSettings

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "trl" else real(name))
    message = rf"supports TRL >=1\.16,<1\.17 .* but TRL {installed} is installed"
    with pytest.raises(UserError, match=message):
        train_step_apo(str(tiny_model_dir), PAIRS, tmp_path / "apo", StepAPOConfig(), seed=0, progress=False)
    two = StepAPOConfig(distributed=DistributedSettings(processes=2))
    with pytest.raises(UserError, match=message):  # checked before any process starts
        train("step_apo", str(tiny_model_dir), PAIRS, tmp_path / "apo", two, seed=0, progress=False)
    assert not list(tmp_path.iterdir())


def test_supported_trl_range_is_the_installed_one_and_the_pin():
    import re
    from pathlib import Path

    from forethought.learners.step_apo import TRL_SUPPORTED, check_trl

    check_trl()  # the TRL these tests run against is in the supported range
    pyproject = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert re.findall(r'"trl([^"]*)"', pyproject) == [TRL_SUPPORTED]  # the pin pip installs by is the checked range
