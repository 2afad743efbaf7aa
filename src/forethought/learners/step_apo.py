"""Step-APO (CPL): DPO on sibling plan steps whose logit also subtracts the advantage gap of the pair.

    L = -log sigmoid( beta * [(log pi(w|s) - log ref(w|s)) - (log pi(l|s) - log ref(l|s))] - alpha * (Q_w - Q_l) )

Built on TRL's DPOTrainer (sigmoid loss, reference log-probs precomputed once per dataset): adding
alpha / beta * (Q_w - Q_l) to the cached reference log-prob of the chosen step turns TRL's loss into exactly this
one, so no loss code is rewritten. alpha = 0 is plain step-level DPO. Rows follow search/extract.py's pairs.

The trainer overrides private DPOTrainer methods (`_prepare_dataset`, `_precompute_ref_logps`), so it is pinned to
the TRL versions it was tested with (`TRL_SUPPORTED`, the same range as pyproject.toml); `train_step_apo` checks the
installed version first.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Literal

from pydantic import Field

from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.learners.common import (DistributedSettings, LoraSettings, TrainStats, checkpointing_key,
                                         device_dtype, fit, lora_config, micro_batches, partial_dir, publish,
                                         quiet, save_merged, stats, trainer_kwargs, world_size)

__all__ = ["TRL_SUPPORTED", "StepAPOConfig", "check_trl", "margin_offset", "step_apo_loss", "tokenize_pairs",
           "train_step_apo"]

TRL_SUPPORTED = ">=1.16,<1.17"  # keep equal to pyproject.toml's trl pin (tests/test_step_apo.py checks)


def check_trl() -> None:
    """Fail with one clear error unless the installed TRL is in `TRL_SUPPORTED` (the trainer relies on its
    private methods, which TRL changes between minor versions)."""
    from packaging.specifiers import SpecifierSet

    try:
        installed = importlib.metadata.version("trl")
    except importlib.metadata.PackageNotFoundError:
        raise UserError(f"Step-APO needs TRL {TRL_SUPPORTED}, which is not installed: "
                        f"pip install 'trl{TRL_SUPPORTED}'") from None
    if not SpecifierSet(TRL_SUPPORTED).contains(installed, prereleases=True):
        raise UserError(f"Step-APO supports TRL {TRL_SUPPORTED} (it overrides private DPOTrainer methods), but TRL "
                        f"{installed} is installed: pip install 'trl{TRL_SUPPORTED}'")


class StepAPOConfig(StrictModel):
    """Step-APO settings (CPL: beta 0.3, alpha 1.0, lr 1e-6, 3 epochs, the SFT model as reference)."""

    kind: Literal["step_apo"] = "step_apo"
    beta: float = Field(0.3, gt=0)
    alpha: float = Field(1.0, ge=0)  # 0: step-level DPO
    learning_rate: float = 1e-6
    epochs: float = 3.0
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    lora: LoraSettings | None = None  # None = full fine-tuning, as in the paper
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    gradient_checkpointing: bool = False  # TRL turns it on by default; it trades compute for memory
    report_to: str | list[str] = "none"
    distributed: DistributedSettings = DistributedSettings()  # processes > 1: accelerate launch (DDP/FSDP/DeepSpeed)


def margin_offset(q_chosen: float, q_rejected: float, beta: float, alpha: float) -> float:
    """What is added to the chosen step's reference log-prob so that TRL's sigmoid DPO loss is Step-APO's."""
    return alpha / beta * (q_chosen - q_rejected)


def step_apo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, q_chosen, q_rejected, *,
                  beta: float, alpha: float):
    """The Step-APO loss per pair, from summed step log-probs (tensors); the formula, for tests and reference."""
    import torch.nn.functional as F

    logits = beta * ((policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)) - alpha * (q_chosen - q_rejected)
    return -F.logsigmoid(logits)


def _common(a: list[int], b: list[int]) -> int:
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    return k


def tokenize_pairs(tokenizer, rows: list[dict], cfg: StepAPOConfig) -> list[dict]:
    """prompt_ids (chat template, assistant prefix continued) and the chosen/rejected step ids, plus each margin."""
    out = []
    for i, row in enumerate(rows):
        missing = [k for k in ("messages", "prefix", "chosen", "rejected", "q_chosen", "q_rejected") if k not in row]
        if missing:
            raise UserError(f"Step-APO pair {i} lacks {', '.join(missing)}; pairs come from `forethought search`")
        prompt = tokenizer.apply_chat_template(row["messages"] + [{"role": "assistant", "content": row["prefix"]}],
                                               tokenize=False, continue_final_message=True)
        ids = tokenizer(prompt, add_special_tokens=False).input_ids
        chosen = tokenizer(prompt + row["chosen"], add_special_tokens=False).input_ids
        rejected = tokenizer(prompt + row["rejected"], add_special_tokens=False).input_ids
        k = min(_common(ids, chosen), _common(ids, rejected))  # tokens may merge across the boundary
        if k >= len(chosen) or k >= len(rejected):
            continue  # a step that adds no token cannot be scored
        out.append({"prompt_ids": ids[:k], "chosen_ids": chosen[k:], "rejected_ids": rejected[k:],
                    "margin": margin_offset(row["q_chosen"], row["q_rejected"], cfg.beta, cfg.alpha)})
    return out


def _trainer_class():
    from trl import DPOTrainer

    class StepAPOTrainer(DPOTrainer):
        """DPOTrainer on pre-tokenized step pairs whose cached chosen reference log-probs carry the margin."""

        reference_batches = 0  # reference forward passes (all in the one precompute)
        trained_tokens = 0  # chosen + rejected step tokens scored in training, this rank

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                self.trained_tokens += int(inputs["completion_mask"].sum())
            return super().compute_loss(model, inputs, *args, **kwargs)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # tokenized by tokenize_pairs: no EOS after a step, prefix continued

        def compute_ref_log_probs(self, model, inputs):
            self.reference_batches += 1
            return super().compute_ref_log_probs(model, inputs)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            dataset = super()._precompute_ref_logps(dataset, name, batch_size)
            # in memory: under accelerate launch every rank maps, and a cache file beside the data would be shared
            return dataset.map(lambda row: {"ref_chosen_logps": row["ref_chosen_logps"] + row["margin"]},
                               keep_in_memory=True)

    return StepAPOTrainer


def _pairs_dataset(examples: list[dict], tmp: Path):
    """The tokenized pairs as a dataset stored in the (shared) partial directory: TRL caches the reference log-probs
    in a file beside the dataset's, and rank 0 writes that file for all ranks, so it must not be a per-process
    temporary directory."""
    import datasets

    data = datasets.Dataset.from_list(examples)
    if world_size() == 1:
        data.save_to_disk(str(tmp / "pairs"))
    else:
        from accelerate import PartialState

        state = PartialState()
        if state.is_main_process:
            data.save_to_disk(str(tmp / "pairs"))
        state.wait_for_everyone()
    return datasets.load_from_disk(str(tmp / "pairs"))


def train_step_apo(model: str | Path, rows: list[dict], output_dir: Path, cfg: StepAPOConfig, *, seed: int,
                   max_steps: int | None = None, progress: bool = True) -> TrainStats:
    """Train `model` (also the reference) on Step-APO pairs; save a merged HF checkpoint to `output_dir` atomically.

    `max_steps` overrides `cfg.max_steps`. Under `accelerate launch` every rank calls this (see `forethought.learners
    .train`): `cfg.batch_size` is the global batch, rank 0 saves, and trained_tokens counts every rank's steps."""
    check_trl()
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig

    from forethought.models import resolve_model

    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UserError(f"{output_dir} already exists; delete it to train this stage again")
    path = resolve_model(str(model))
    cuda, dtype = device_dtype()
    with quiet(not progress):
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        examples = tokenize_pairs(tokenizer, rows, cfg)
        if not examples:
            raise UserError("no Step-APO pairs to train on: the search found no sibling steps with Q > 0 and Q < 0; "
                            "search more (more iterations or questions) or use a stronger model")
        with partial_dir(output_dir, again="train this stage again") as tmp:
            transformers.set_seed(seed)
            base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            kwargs = trainer_kwargs(cfg, tmp / "trainer", seed=seed, max_steps=max_steps, progress=progress, cuda=cuda)
            args = DPOConfig(
                **micro_batches({**kwargs, "gradient_accumulation_steps": cfg.grad_accum}, cfg, cuda, 2),
                max_length=cfg.max_length, beta=cfg.beta,
                loss_type=["sigmoid"], precompute_ref_log_probs=True, lr_scheduler_type=cfg.lr_scheduler,
                warmup_steps=cfg.warmup_ratio, **{checkpointing_key(DPOConfig): cfg.gradient_checkpointing},
            )
            trainer = _trainer_class()(model=base, args=args, train_dataset=_pairs_dataset(examples, tmp),
                                       processing_class=tokenizer, peft_config=lora_config(cfg.lora))
            result, seconds, tokens = fit(trainer, progress)
            publish(trainer, tmp, output_dir, lambda dest: save_merged(trainer, tokenizer, cfg.lora is not None, dest))
    return stats(trainer, result, tokens, seconds)
