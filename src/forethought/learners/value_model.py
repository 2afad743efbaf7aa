"""CPL's value model: the LM with a scalar head read at the last token, tanh output, MSE on step Q values.

Built on transformers' sequence-classification head (one label) and Trainer; only the loss (MSE after tanh) is
ours. `ValueModel.value` scores (messages, prefix) states in batches for the search. Training and search read a
state through one function, `encode`: the zero-shot chat (search leaves its demonstrations out) with the prefix
continued, cut from the left.
"""

from __future__ import annotations

from pathlib import Path


from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.learners.common import (DistributedSettings, TrainStats, device_dtype, fit, partial_dir,
                                         publish, quiet, stats, trainer_kwargs)

__all__ = ["ValueConfig", "ValueModel", "train_value_model"]


class ValueConfig(StrictModel):
    """Value-model training (CPL: lr 1e-5, 7 epochs)."""

    learning_rate: float = 1e-5
    epochs: float = 7.0
    max_steps: int | None = None
    batch_size: int = 8
    max_length: int = 1024
    distributed: DistributedSettings = DistributedSettings()  # processes > 1: accelerate launch (DDP/FSDP/DeepSpeed)


def render(tokenizer, messages: list[dict], prefix: str) -> str:
    """The state as text: the chat with the assistant prefix continued (the same rendering as Step-APO pairs)."""
    return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": prefix}], tokenize=False,
                                         continue_final_message=True)


def encode(tokenizer, messages: list[dict], prefix: str, max_length: int) -> list[int]:
    """The token ids the head reads for a state, in training and in search alike: `render`, then cut from the LEFT
    to `max_length`, so the last token (where the head reads) is always kept. `messages` are zero-shot (no demos)."""
    ids = tokenizer(render(tokenizer, messages, prefix), add_special_tokens=False)["input_ids"]
    return ids[-max_length:]


def features(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """What training reads: each value row (messages, prefix, q; from `search.extract`) as `encode` ids, label q."""
    out = []
    for r in rows:
        ids = encode(tokenizer, r["messages"], r["prefix"], max_length)
        out.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": float(r["q"])})
    return out


def _load(path, dtype):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def train_value_model(model: str | Path, rows: list[dict], output_dir: Path, cfg: ValueConfig, *, seed: int,
                      max_steps: int | None = None, progress: bool = True) -> TrainStats:
    """Fit tanh(head(last token)) to each row's q by MSE; save the checkpoint (LM + head) to `output_dir` atomically.

    `max_steps` overrides `cfg.max_steps`. Under `accelerate launch` every rank calls this (see `forethought.learners
    .train`): `cfg.batch_size` is the global batch, rank 0 saves, and trained_tokens counts every rank's tokens."""
    import datasets
    import torch
    import transformers
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from forethought.models import resolve_model

    if not rows:
        raise UserError("no value targets: the search reached no solution; search more or use a stronger model")
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise UserError(f"{output_dir} already exists; delete it to train the value model again")
    cuda, dtype = device_dtype()
    with quiet(not progress):
        transformers.set_seed(seed)
        net, tokenizer = _load(resolve_model(str(model)), dtype)
        data = features(tokenizer, rows, cfg.max_length)

        class TanhMSETrainer(Trainer):
            trained_tokens = 0  # state tokens processed in training, this rank

            def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
                if model.training:
                    self.trained_tokens += int(inputs["attention_mask"].sum())
                labels = inputs.pop("labels")
                outputs = model(**inputs)
                loss = torch.nn.functional.mse_loss(torch.tanh(outputs.logits[:, 0].float()), labels.float())
                return (loss, outputs) if return_outputs else loss

        def save(dest: Path) -> None:
            import json

            trainer.accelerator.unwrap_model(trainer.model).save_pretrained(dest)
            tokenizer.save_pretrained(dest)
            # for ValueModel.load
            (dest / SETTINGS).write_text(json.dumps({"max_length": cfg.max_length}) + "\n", encoding="utf-8")

        with partial_dir(output_dir, again="train the value model again") as tmp:
            args = TrainingArguments(**trainer_kwargs(cfg, tmp / "trainer", seed=seed, max_steps=max_steps,
                                                      progress=progress, cuda=cuda))
            trainer = TanhMSETrainer(model=net, args=args, train_dataset=datasets.Dataset.from_list(data),
                                     data_collator=DataCollatorWithPadding(tokenizer))
            result, seconds, tokens = fit(trainer, progress)
            publish(trainer, tmp, output_dir, save)
    return stats(trainer, result, tokens, seconds)


SETTINGS = "value_model.json"  # in a checkpoint: the max_length it was trained with


class ValueModel:
    """A trained value model: `value([(messages, prefix), ...])` -> estimates in [-1, 1], batched; each state is
    read as `encode` gives it, with the training run's max_length."""

    def __init__(self, net, tokenizer, batch_size: int = 16, max_length: int = ValueConfig().max_length) -> None:
        self.net, self.tokenizer, self.batch_size = net.eval(), tokenizer, batch_size
        self.max_length = max_length

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, batch_size: int = 16) -> ValueModel:
        import json

        import torch

        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        net, tokenizer = _load(Path(path), torch.float32 if device == "cpu" else torch.bfloat16)
        settings = Path(path) / SETTINGS
        max_length = (json.loads(settings.read_text(encoding="utf-8"))["max_length"] if settings.exists()
                      else ValueConfig().max_length)
        return cls(net.to(device), tokenizer, batch_size, max_length)

    def value(self, states: list[tuple[list[dict], str]]) -> list[float]:
        import torch

        out: list[float] = []
        device = next(self.net.parameters()).device
        with torch.inference_mode():
            for i in range(0, len(states), self.batch_size):
                ids = [encode(self.tokenizer, m, p, self.max_length) for m, p in states[i: i + self.batch_size]]
                enc = self.tokenizer.pad({"input_ids": ids}, padding=True, padding_side="right",
                                         return_tensors="pt").to(device)
                out += torch.tanh(self.net(**enc).logits[:, 0].float()).tolist()
        return out

    __call__ = value
