"""SFT learner (the M-step): fine-tune on accepted chats, loss on assistant turns only; save a plain HF checkpoint."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Literal

from rich.console import Console

from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.learners.chat_mask import tokenize_chat
from forethought.learners.common import (DistributedSettings, LoraSettings, TrainStats, checkpointing_key,
                                         device_dtype, fit, lora_config, micro_batches, partial_dir, publish,
                                         quiet, save_merged, stats, trainer_kwargs)

__all__ = ["LoraSettings", "SFTConfig", "TrainStats", "tokenize_chat", "train_sft"]


class SFTConfig(StrictModel):
    """How one M-step trains: optimiser, length, LoRA or full fine-tuning (the run loop adds its schedule)."""

    kind: Literal["sft"] = "sft"
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    lora: LoraSettings | None = LoraSettings()  # None = full fine-tuning
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False  # trades compute for memory on large models
    report_to: str | list[str] = "none"  # e.g. "wandb" (needs the wandb extra)
    distributed: DistributedSettings = DistributedSettings()  # processes > 1: accelerate launch (DDP/FSDP/DeepSpeed)


def _tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> tuple[list[dict], int, int]:
    """Tokenize every row's chat to at most `max_length` tokens, naming the row on malformed input.

    Returns (examples, truncated, dropped): rows that lose loss tokens to the cut are counted as truncated, rows
    left without any loss token are dropped and counted, so that the stats and a warning say what was not trained.
    """
    examples, truncated, dropped = [], 0, 0
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "messages" not in row:
            raise UserError(f"training row {n}: expected a dict with a 'messages' list")
        try:
            full = tokenize_chat(tokenizer, row["messages"], sys.maxsize)
        except UserError as e:
            raise UserError(f"training row {n}: {e}") from None
        example = {key: value[:max_length] for key, value in full.items()}
        if not any(example["assistant_masks"]):
            dropped += 1
        else:
            truncated += any(full["assistant_masks"][max_length:])
            examples.append(example)
    if not examples:
        raise UserError(f"every training chat's assistant turns start beyond max_length={max_length}; raise max_length")
    if truncated or dropped:
        Console(stderr=True).print(
            f"[yellow]warning:[/] of {len(rows)} training rows, {truncated} lose answer tokens to max_length="
            f"{max_length} and {dropped} are dropped (no answer token left); raise learner max_length to keep them",
            soft_wrap=True)
    return examples, truncated, dropped


def _trainer_class():
    """SFTTrainer that also counts the loss-bearing tokens it trains on."""
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        trained_tokens = 0
        trace: list[list[str]] | None = None  # set to [] to record each step's row fingerprints

        def compute_loss(self, model, inputs, *args, **kwargs):
            if model.training:
                self.trained_tokens += int((inputs["labels"][:, 1:] != -100).sum())
                if self.trace is not None:
                    while len(self.trace) <= self.state.global_step:
                        self.trace.append([])
                    masks = inputs.get("attention_mask")
                    for k, ids in enumerate(inputs["input_ids"]):
                        row = (ids if masks is None else ids[masks[k].bool()]).tolist()
                        self.trace[self.state.global_step].append(hashlib.sha1(str(row).encode()).hexdigest()[:12])
            return super().compute_loss(model, inputs, *args, **kwargs)

    return CountingSFTTrainer


def _trl_args(cfg: SFTConfig, output_dir: Path, *, seed: int, max_steps: int | None, progress: bool, cuda: bool):
    """TRL's SFTConfig for our settings (see common.trainer_kwargs; `cfg.batch_size` is the global batch)."""
    from trl import SFTConfig as TrlSFTConfig

    kwargs = trainer_kwargs(cfg, output_dir, seed=seed, max_steps=max_steps, progress=progress, cuda=cuda)
    return TrlSFTConfig(
        **micro_batches({**kwargs, "gradient_accumulation_steps": cfg.grad_accum}, cfg, cuda),
        max_length=cfg.max_length,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        **{checkpointing_key(TrlSFTConfig): cfg.gradient_checkpointing},
    )


def train_sft(
    model: str | Path,
    rows: list[dict],
    output_dir: Path,
    cfg: SFTConfig,
    *,
    seed: int,
    max_steps: int | None = None,
    progress: bool = True,
    trace: bool = False,
) -> TrainStats:
    """Fine-tune `model` on rows [{"messages": [...]}] and save a merged HF checkpoint to `output_dir`, atomically.

    Training and saving happen in a temporary sibling directory that is renamed to `output_dir` only when complete,
    so an interrupted call leaves no `output_dir` and the iteration is simply trained again. `max_steps`, when
    given, overrides `cfg.max_steps` (see `steps_for_iteration`). Under `accelerate launch` every rank calls this;
    rank 0 saves, and the stats count every rank's tokens (see learners/distributed.py).
    """
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from forethought.models import resolve_model

    if not rows:
        raise UserError(
            "no accepted samples to train on: the sampler kept no correct trajectory this iteration; "
            "sample more (more trials per question, more questions, a higher temperature) or use a stronger model"
        )
    output_dir = Path(output_dir)
    path = resolve_model(str(model))
    cuda, dtype = device_dtype()
    with quiet(not progress), partial_dir(output_dir, again="train this iteration again") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(path)
        examples, truncated, dropped = _tokenize_rows(tokenizer, rows, cfg.max_length)
        transformers.set_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        args = _trl_args(cfg, tmp / "trainer", seed=seed, max_steps=max_steps, progress=progress, cuda=cuda)
        trainer = _trainer_class()(
            model=base, args=args, train_dataset=datasets.Dataset.from_list(examples),
            processing_class=tokenizer, peft_config=lora_config(cfg.lora),
        )
        trainer.trace = [] if trace else None
        result, seconds, tokens = fit(trainer, progress)
        batches = [trainer.trace] if trace else None
        if trace and trainer.accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            batches = gather_object([trainer.trace])
        publish(trainer, tmp, output_dir, lambda dest: save_merged(trainer, tokenizer, cfg.lora is not None, dest))
    return stats(trainer, result, tokens, seconds, batches).model_copy(
        update={"truncated_rows": truncated, "dropped_rows": dropped})
