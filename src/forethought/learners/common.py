"""What the learners share: LoRA, distributed and stats models, quiet logging, device and dtype, the Trainer
arguments they have in common, the partial-dir-then-rename save, and counts gathered from every rank.

Every learner trains and saves inside a partial directory beside `output_dir` that is renamed to `output_dir` only
when the checkpoint is complete, so an interrupted call leaves no `output_dir`. Under `accelerate launch` all ranks
share rank 0's partial directory (rank 0 creates it and broadcasts its path), rank 0 writes the checkpoint and
renames it, and the others wait for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.tracking import trainer_report_to, trainer_run_args

__all__ = ["DistributedSettings", "LoraSettings", "TrainStats", "checkpointing_key", "device_dtype", "gather_sum",
           "lora_config", "micro_batches", "partial_dir", "publish", "quiet", "save_merged", "stats", "trainer_kwargs", "world_size"]


class LoraSettings(StrictModel):
    """LoRA adapter shape; the adapter is merged into the weights when the checkpoint is saved."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: str | list[str] = "all-linear"


class DistributedSettings(StrictModel):
    """How many training processes and how the model is spread over them (`learner.distributed` in a recipe)."""

    processes: int = Field(1, ge=1)
    strategy: Literal["ddp", "fsdp", "deepspeed"] = "ddp"
    zero_stage: int = Field(2, ge=0, le=3)  # DeepSpeed ZeRO stage (strategy: deepspeed)
    accelerate_config: str | None = None  # an `accelerate config` file; replaces the strategy flags
    main_process_port: int | None = None  # default: a free port on this machine
    threads_per_process: int | None = Field(None, ge=1)  # CPU only; default: cores / processes


class TrainStats(StrictModel):
    """What one training call did; trained_tokens counts the loss-bearing tokens processed, over every rank (SFT:
    assistant tokens; Step-APO: chosen and rejected step tokens; value model: every token of each state)."""

    steps: int
    train_loss: float
    trained_tokens: int
    seconds: float
    tokens_per_second: float
    processes: int = 1
    truncated_rows: int = 0  # SFT: rows that lost loss tokens to max_length (trained on what was left)
    dropped_rows: int = 0  # SFT: rows left with no loss token by max_length (not trained on)
    batches: list[list[list[str]]] | None = None  # with trace=True: per rank, per step, each row's fingerprint


def world_size() -> int:
    """Training processes in this run (accelerate launch sets WORLD_SIZE; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def device_dtype():
    """(cuda, dtype): bfloat16 on CUDA, float32 on CPU."""
    import torch

    cuda = torch.cuda.is_available()
    return cuda, torch.bfloat16 if cuda else torch.float32


def lora_config(lora: LoraSettings | None, task_type: str = "CAUSAL_LM"):
    """PEFT's LoraConfig for the settings, or None for full fine-tuning."""
    if lora is None:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type=task_type)


def checkpointing_key(args_class) -> str:
    """transformers 5 renamed gradient_checkpointing (a deprecated alias that warns) to activation_checkpointing."""
    return "activation_checkpointing" if hasattr(args_class, "activation_checkpointing") else "gradient_checkpointing"


def trainer_kwargs(cfg, output_dir: Path, *, seed: int, max_steps: int | None, progress: bool, cuda: bool) -> dict:
    """TrainingArguments every learner passes: no checkpoints mid-run, logging every step, bf16 only on CUDA, no
    reporting unless configured (the learner's report_to plus its run's, tracking.py); `cfg.batch_size` is the global
    batch, split over the processes."""
    return dict(
        output_dir=str(output_dir), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
        max_steps=max_steps or cfg.max_steps or -1, per_device_train_batch_size=max(1, cfg.batch_size // world_size()),
        report_to=trainer_report_to(getattr(cfg, "report_to", "none")), **trainer_run_args(), seed=seed,
        data_seed=seed, bf16=cuda, use_cpu=not cuda,
        save_strategy="no", logging_steps=1, disable_tqdm=not progress, dataloader_num_workers=0,
    )


# Padded tokens per training forward pass on CPU. A forward keeps every layer's activations for the backward, about
# 1.3 MB a token for SmolLM2-135M in fp32: a batch of 8 rows of 300-500 tokens held 5-7 GB. Micro-batches of at
# most this many tokens, with gradient accumulation, train on the same rows per optimiser step. 512 (one row of
# the quickstart's max_length) against 1,024: peak 0.78x and CPU time 0.75x (no padding), the same loss
# (bench/bench_train_memory.py, BENCHMARKS.md).
CPU_TRAIN_TOKENS = 512
# Tokens per tile of TRL's fused LM head (log-probs without full logits): its CPU fallback keeps several fp32
# [tokens, 32768] temporaries per tile, 2-3 GB at TRL's 4,096 tokens; 256 keeps them near 200 MB.
CPU_LOGPROB_TILE = 256


def narrow_logprob_tiles() -> None:
    """On CPU: TRL's fused LM head scores at most CPU_LOGPROB_TILE tokens per tile, so fewer tokens' [tokens,
    vocabulary] temporaries are held at once (the same log-probs up to float rounding: smaller matmuls may round
    differently)."""
    try:
        from trl.kernels import chunked_logprob

        chunked_logprob.TOKEN_CHUNK_SIZE = min(chunked_logprob.TOKEN_CHUNK_SIZE, CPU_LOGPROB_TILE)
    except (ImportError, AttributeError):
        pass


def micro_batches(kwargs: dict, cfg, cuda: bool, sequences_per_row: int = 1) -> dict:
    """Trainer kwargs (trainer_kwargs plus gradient_accumulation_steps) with, on CPU, the per-device batch split into
    micro-batches of at most CPU_TRAIN_TOKENS tokens (`cfg.max_length` per sequence) and accumulation raised to
    match, so an optimiser step sees the same rows; also narrows TRL's fused LM head tiles on CPU."""
    if cuda:
        return kwargs
    narrow_logprob_tiles()
    rows = kwargs["per_device_train_batch_size"]
    micro = max(1, min(rows, CPU_TRAIN_TOKENS // (cfg.max_length * sequences_per_row)))
    while rows % micro:
        micro -= 1
    return {**kwargs, "per_device_train_batch_size": micro,
            "gradient_accumulation_steps": kwargs.get("gradient_accumulation_steps", 1) * (rows // micro)}


@contextlib.contextmanager
def quiet(enabled: bool):
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



@contextlib.contextmanager
def partial_dir(output_dir: Path, *, again: str) -> Iterator[Path]:
    """A fresh partial directory beside `output_dir` (one for all ranks), removed on exit whatever happens.

    `output_dir` must not exist yet (`again` completes the message: "delete it to {again}"). Call `publish` inside
    to write the checkpoint and rename it to `output_dir`."""
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UserError(f"{output_dir} already exists; delete it to {again}")
    rank0 = int(os.environ.get("RANK", "0")) == 0
    tmp = None
    if rank0:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent)
    if world_size() > 1:
        import torch
        from accelerate import PartialState
        from accelerate.utils import broadcast_object_list

        PartialState(cpu=not torch.cuda.is_available())  # joins the process group (the Trainer reuses it)
        shared = [tmp]
        broadcast_object_list(shared, from_process=0)
        tmp = shared[0]
    try:
        yield Path(tmp)
    finally:
        if rank0:
            shutil.rmtree(tmp, ignore_errors=True)


def publish(trainer, tmp: Path, output_dir: Path, save: Callable[[Path], None]) -> None:
    """Rank 0 writes the checkpoint with `save(dest)` inside `tmp` and renames it to `output_dir`; all ranks wait."""
    if trainer.is_world_process_zero():
        save(tmp / "checkpoint")
        (tmp / "checkpoint").rename(output_dir)
    trainer.accelerator.wait_for_everyone()


def save_merged(trainer, tokenizer, merge: bool, dest: Path) -> None:
    """Write the trained model (LoRA merged into the weights) and tokenizer as a plain HF checkpoint."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if merge:
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(dest)
    tokenizer.save_pretrained(dest)



def fit(trainer, progress: bool):
    """Train (without the Trainer's per-step log lines unless `progress`); returns (result, seconds, tokens summed
    over the ranks)."""
    if not progress:
        from transformers import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    start = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - start
    return result, seconds, gather_sum(trainer, trainer.trained_tokens)


def gather_sum(trainer, count: int) -> int:
    """`count` summed over every rank (every rank must call this)."""
    if trainer.accelerator.num_processes == 1:
        return count
    from accelerate.utils import gather_object

    return sum(gather_object([count]))


def stats(trainer, result, tokens: int, seconds: float, batches=None) -> TrainStats:
    """TrainStats from the Trainer's result; `tokens` already summed over the ranks."""
    return TrainStats(
        steps=result.global_step, train_loss=float(result.training_loss), trained_tokens=tokens,
        seconds=round(seconds, 3), tokens_per_second=round(tokens / seconds, 2) if seconds else 0.0,
        processes=trainer.accelerator.num_processes, batches=batches,
    )
