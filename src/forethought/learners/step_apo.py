"""Step-APO (CPL): DPO on sibling plan steps whose logit also subtracts the advantage gap of the pair.

    L = -log sigmoid( beta * [(log pi(w|s) - log ref(w|s)) - (log pi(l|s) - log ref(l|s))] - alpha * (Q_w - Q_l) )

Built on TRL's DPOTrainer (sigmoid loss, reference log-probs precomputed once per dataset): adding
alpha / beta * (Q_w - Q_l) to the cached reference log-prob of the chosen step turns TRL's loss into exactly this
one, so no loss code is rewritten. alpha = 0 is plain step-level DPO. Rows follow search/extract.py's pairs.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.learners.sft import LoraSettings, TrainStats, _quiet, _save_merged

__all__ = ["StepAPOConfig", "margin_offset", "step_apo_loss", "tokenize_pairs", "train_step_apo"]


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


def _checkpointing(args_class) -> str:
    """transformers 5 renamed gradient_checkpointing (a deprecated alias now) to activation_checkpointing."""
    return "activation_checkpointing" if hasattr(args_class, "activation_checkpointing") else "gradient_checkpointing"


def _trainer_class():
    from trl import DPOTrainer

    class StepAPOTrainer(DPOTrainer):
        """DPOTrainer on pre-tokenized step pairs whose cached chosen reference log-probs carry the margin."""

        reference_batches = 0  # reference forward passes (all in the one precompute)

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset  # tokenized by tokenize_pairs: no EOS after a step, prefix continued

        def compute_ref_log_probs(self, model, inputs):
            self.reference_batches += 1
            return super().compute_ref_log_probs(model, inputs)

        def _precompute_ref_logps(self, dataset, name, batch_size):
            dataset = super()._precompute_ref_logps(dataset, name, batch_size)
            return dataset.map(lambda row: {"ref_chosen_logps": row["ref_chosen_logps"] + row["margin"]})

    return StepAPOTrainer


def train_step_apo(model: str | Path, rows: list[dict], output_dir: Path, cfg: StepAPOConfig, *, seed: int,
                   progress: bool = True) -> TrainStats:
    """Train `model` (also the reference) on Step-APO pairs; save a merged HF checkpoint to `output_dir` atomically."""
    import datasets
    import torch
    import transformers
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOConfig

    from forethought.models import resolve_model

    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UserError(f"{output_dir} already exists; delete it to train this stage again")
    path = resolve_model(str(model))
    cuda = torch.cuda.is_available()
    with _quiet(not progress):
        tokenizer = AutoTokenizer.from_pretrained(path)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        examples = tokenize_pairs(tokenizer, rows, cfg)
        if not examples:
            raise UserError("no Step-APO pairs to train on: the search found no sibling steps with Q > 0 and Q < 0; "
                            "search more (more iterations or questions) or use a stronger model")
        transformers.set_seed(seed)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
        lora = cfg.lora and LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                                       target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
        try:
            args = DPOConfig(
                output_dir=str(tmp / "trainer"), learning_rate=cfg.learning_rate, num_train_epochs=cfg.epochs,
                max_steps=cfg.max_steps or -1, per_device_train_batch_size=cfg.batch_size,
                gradient_accumulation_steps=cfg.grad_accum, max_length=cfg.max_length, beta=cfg.beta,
                loss_type=["sigmoid"], precompute_ref_log_probs=True, lr_scheduler_type=cfg.lr_scheduler,
                warmup_steps=cfg.warmup_ratio, report_to=cfg.report_to, seed=seed, data_seed=seed, bf16=cuda,
                use_cpu=not cuda, save_strategy="no", logging_steps=1, disable_tqdm=not progress,
                dataloader_num_workers=0, **{_checkpointing(DPOConfig): cfg.gradient_checkpointing},
            )
            trainer = _trainer_class()(model=base, args=args, train_dataset=datasets.Dataset.from_list(examples),
                                       processing_class=tokenizer, peft_config=lora)
            if not progress:
                trainer.remove_callback(PrinterCallback)
            start = time.perf_counter()
            result = trainer.train()
            seconds = time.perf_counter() - start
            per_pair = sum(len(e["chosen_ids"]) + len(e["rejected_ids"]) for e in examples) / len(examples)
            tokens = int(per_pair * result.global_step * cfg.batch_size * cfg.grad_accum)  # step tokens scored
            _save_merged(trainer, tokenizer, cfg.lora is not None, tmp / "checkpoint")
            (tmp / "checkpoint").rename(output_dir)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return TrainStats(steps=result.global_step, train_loss=float(result.training_loss), trained_tokens=tokens,
                      seconds=round(seconds, 3), tokens_per_second=round(tokens / seconds, 2) if seconds else 0.0)
