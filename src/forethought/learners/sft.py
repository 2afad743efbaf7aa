"""SFT learner (the M-step): fine-tune on accepted chats, loss on assistant turns only; save a plain HF checkpoint."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path
from typing import Literal

from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.learners.chat_mask import tokenize_chat
from forethought.learners.distributed import DistributedSettings

__all__ = ["LoraSettings", "SFTConfig", "TrainStats", "steps_for_iteration", "tokenize_chat", "train_sft"]


class LoraSettings(StrictModel):
    """LoRA adapter shape; the adapter is merged into the weights when the checkpoint is saved."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


class SFTConfig(StrictModel):
    """How one M-step trains: optimiser, length, LoRA or full fine-tuning, and the per-iteration schedule."""

    kind: Literal["sft"] = "sft"
    learning_rate: float = 1e-4
    epochs: float = 1.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 1024
    lora: LoraSettings | None = LoraSettings()  # None = full fine-tuning
    restart_from_base: bool = False  # ReST-EM / STaR: each iteration trains the base model; ReST / LEPA continue
    star_base_steps: int | None = None  # STaR schedule: steps at iteration 1 (40 in the paper) ...
    star_step_growth: float = 1.2  # ... multiplied by this each iteration
    lr_scheduler: str = "constant"
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    gradient_checkpointing: bool = False  # trades compute for memory on large models
    report_to: str | list[str] = "none"  # e.g. "wandb" (needs the wandb extra)
    distributed: DistributedSettings = DistributedSettings()  # processes > 1: accelerate launch (DDP/FSDP/DeepSpeed)


class TrainStats(StrictModel):
    """What one training call did; trained_tokens counts assistant (loss-bearing) tokens processed."""

    steps: int
    train_loss: float
    trained_tokens: int
    seconds: float
    tokens_per_second: float
    processes: int = 1
    batches: list[list[list[str]]] | None = None  # with trace=True: per rank, per step, each row's fingerprint


def steps_for_iteration(cfg: SFTConfig, iteration: int) -> int | None:
    """Training steps for a 1-based iteration: STaR's round(base * growth**(iteration-1)) (40, 48, 58, 69, 83 ...)
    when `star_base_steps` is set, else `cfg.max_steps` (None = train for `cfg.epochs`)."""
    if iteration < 1:
        raise ValueError(f"iterations count from 1, got {iteration}")
    if cfg.star_base_steps is None:
        return cfg.max_steps
    return max(1, round(cfg.star_base_steps * cfg.star_step_growth ** (iteration - 1)))


def _tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """Tokenize every row's chat, naming the row on malformed input; rows left without loss tokens are dropped."""
    examples = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or "messages" not in row:
            raise UserError(f"training row {n}: expected a dict with a 'messages' list")
        try:
            example = tokenize_chat(tokenizer, row["messages"], max_length)
        except UserError as e:
            raise UserError(f"training row {n}: {e}") from None
        if any(example["assistant_masks"]):
            examples.append(example)
    if not examples:
        raise UserError(f"every training chat's assistant turns start beyond max_length={max_length}; raise max_length")
    return examples


@contextlib.contextmanager
def _quiet(enabled: bool):
    """Silence transformers/datasets logging and progress bars while training, then restore them."""
    import datasets
    from transformers.utils import logging

    if not enabled:
        yield
        return
    verbosity = logging.get_verbosity()
    bars, data_bars = logging.is_progress_bar_enabled(), datasets.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    datasets.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside TRL/PEFT, not the user's to fix
            yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
        if data_bars:
            datasets.enable_progress_bar()


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


def _trl_args(cfg: SFTConfig, output_dir: Path, *, seed: int, max_steps: int | None, progress: bool, cuda: bool,
              world: int = 1):
    """TRL's SFTConfig for our settings: no checkpoints mid-run, no reporting unless configured, bf16 only on CUDA;
    `cfg.batch_size` is the global batch, split over `world` processes."""
    from trl import SFTConfig as TrlSFTConfig

    # transformers 5 renamed gradient_checkpointing (now a deprecated alias that warns) to activation_checkpointing
    renamed = hasattr(TrlSFTConfig, "activation_checkpointing")
    checkpointing = "activation_checkpointing" if renamed else "gradient_checkpointing"
    return TrlSFTConfig(
        output_dir=str(output_dir),
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.epochs,
        max_steps=max_steps or cfg.max_steps or -1,
        per_device_train_batch_size=max(1, cfg.batch_size // world),
        gradient_accumulation_steps=cfg.grad_accum,
        max_length=cfg.max_length,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=cfg.weight_decay,
        **{checkpointing: cfg.gradient_checkpointing},
        report_to=cfg.report_to,
        seed=seed,
        data_seed=seed,
        bf16=cuda,
        use_cpu=not cuda,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )


def _save_merged(trainer, tokenizer, merge: bool, dest: Path) -> None:
    """Write the trained model (LoRA merged into the weights) and tokenizer as a plain HF checkpoint."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if merge:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)


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
    import torch
    import transformers
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

    from forethought.models import resolve_model

    if not rows:
        raise UserError(
            "no accepted samples to train on: the sampler kept no correct trajectory this iteration; "
            "sample more (more trials per question, more questions, a higher temperature) or use a stronger model"
        )
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UserError(f"{output_dir} already exists; delete it to train this iteration again")
    path = resolve_model(str(model))
    cuda = torch.cuda.is_available()
    with _quiet(not progress):
        tokenizer = AutoTokenizer.from_pretrained(path)
        examples = _tokenize_rows(tokenizer, rows, cfg.max_length)
        transformers.set_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
        lora = cfg.lora and LoraConfig(
            r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM",
        )
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            args = _trl_args(cfg, tmp / "trainer", seed=seed, max_steps=max_steps, progress=progress, cuda=cuda,
                             world=world)
            trainer = _trainer_class()(
                model=base, args=args, train_dataset=datasets.Dataset.from_list(examples),
                processing_class=tokenizer, peft_config=lora,
            )
            trainer.trace = [] if trace else None
            if not progress:
                trainer.remove_callback(PrinterCallback)
            start = time.perf_counter()
            result = trainer.train()
            seconds = time.perf_counter() - start
            tokens, batches = trainer.trained_tokens, [trainer.trace] if trace else None
            if trainer.accelerator.num_processes > 1:
                from accelerate.utils import gather_object

                tokens = sum(gather_object([tokens]))
                batches = gather_object([trainer.trace]) if trace else None
            if trainer.is_world_process_zero():
                _save_merged(trainer, tokenizer, cfg.lora is not None, tmp / "checkpoint")
                (tmp / "checkpoint").rename(output_dir)
            trainer.accelerator.wait_for_everyone()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return TrainStats(
        steps=result.global_step, train_loss=float(result.training_loss), trained_tokens=tokens,
        seconds=round(seconds, 3), tokens_per_second=round(tokens / seconds, 2) if seconds else 0.0,
        processes=trainer.accelerator.num_processes, batches=batches,
    )
