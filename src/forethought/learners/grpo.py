"""GRPO learner (online RL with verifiable rewards) on TRL's `GRPOTrainer`; rollouts through Forethought's engine.

One GRPO optimisation spans every iteration of a run: one optimizer, one LR schedule, one reference model (the
base). Iteration t trains optimizer steps (t-1)*S+1 .. t*S (S = `steps_per_iteration`) by resuming TRL's own
checkpoint (weights, optimizer, scheduler, RNG, data order) from the end of iteration t-1, saves TRL checkpoints
every `save_steps` steps inside the iteration (so a killed run resumes from a recent one) and at its end, then
writes a merged HF checkpoint atomically; the run loop evaluates it like any other iteration's model.

Rollouts (`rollout: engine`, the default) go through `HFEngine.from_loaded` wrapped around the trainer's live
model, so every rollout uses the current weights: the engine samples n completions per prompt from one prefill,
with seeded per-sample streams, stop strings, and the exact generated token ids. `rollout: trl` uses TRL's own
generation (transformers `generate`), kept for measuring the two ways against each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from forethought.config import StrictModel
from forethought.errors import UserError
from forethought.learners.common import (CPU_TRAIN_TOKENS, DistributedSettings, LoraSettings, checkpointing_key,
                                         device_dtype, lora_config, narrow_logprob_tiles, partial_dir, quiet,
                                         save_merged)
from forethought.learners.rewards import ONE_PASS, RewardSettings, TaskReward
from forethought.tracking import trainer_report_to, trainer_run_args

__all__ = ["GRPOConfig", "NATURAL_REFUSED", "rollout_messages", "train_grpo_iteration"]

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")
NATURAL_REFUSED = (
    "learner.plan_format=natural is not supported by the GRPO learner: LEPA's plan format is two turns (the plan, "
    "then a new user turn asking for the solution), and TRL's GRPOTrainer scores one completion per prompt, so the "
    "solution turn could not be trained on-policy together with its plan; use a one-pass plan format "
    "(none, code or steps)"
)


SKIP_EXACT_LOSSES = ("dapo", "cispo")  # normalised by the generation batch's token count, not the micro-batch's


class GRPOConfig(StrictModel):
    """`learner:` with `kind: grpo`: TRL's GRPO settings, the schedule across iterations, rewards, LoRA or full."""

    kind: Literal["grpo"]
    plan_format: Literal["none", "natural", "code", "steps"] = "none"
    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"] = "dapo"
    importance_sampling_level: Literal["token", "sequence"] = "token"
    num_generations: int = Field(8, ge=2)  # G completions per question
    questions_per_step: int = Field(8, ge=1)  # each optimizer step sees questions_per_step * G completions
    grad_accum: int = Field(1, ge=1)  # micro-batches per step (splits the questions_per_step * G completions)
    num_iterations: int = Field(1, ge=1)  # TRL's mu: optimizer passes over each batch of rollouts
    steps_per_iteration: int = Field(10, ge=1)  # optimizer steps between evaluations
    save_steps: int = Field(5, ge=1)  # a TRL checkpoint every this many steps inside an iteration (resume point)
    learning_rate: float = Field(1e-5, gt=0)
    lr_scheduler: str = "constant"
    warmup_ratio: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    beta: float = Field(0.0, ge=0)  # KL coefficient against the base model (0: no reference model)
    epsilon: float = Field(0.2, gt=0)  # clipping: ratio in [1 - epsilon, 1 + epsilon_high]
    epsilon_high: float | None = Field(None, gt=0)  # None = epsilon; DAPO: 0.28
    scale_rewards: Literal["group", "batch", "none"] = "group"  # Dr. GRPO: none
    mask_truncated_completions: bool = False
    # Leave rollouts whose advantage is 0 (every completion of a question equally rewarded) out of the loss's forward
    # and backward. Applied only where the gradient and loss stay the same: a loss normalised over the whole
    # generation batch (dapo, cispo) and no KL term (beta 0); DAPO itself filters such groups out
    skip_zero_advantage: bool = True
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_completion_length: int = Field(256, ge=1)  # plan and answer together for the one-pass plan formats
    max_tokens: int | None = Field(None, ge=1)  # budget: rollout tokens per iteration; the iteration ends (and saves)
    # after the optimizer step whose rollouts spent them (at most one rollout call over), even before
    # steps_per_iteration; the next iteration resumes there. A run carries the unspent (or overshot) rest forward
    # engine: Forethought's hf engine on the live policy; trl: TRL's transformers generate; vllm: TRL's colocated
    # vLLM, weights synced every step (GPU, needs the vllm extra). Evaluation always uses the recipe's engine.
    rollout: Literal["engine", "trl", "vllm"] = "engine"
    vllm_gpu_memory_utilization: float = Field(0.3, gt=0, le=1)  # rollout: vllm
    rewards: RewardSettings = RewardSettings()
    lora: LoraSettings | None = LoraSettings()  # None = full fine-tuning
    gradient_checkpointing: bool = False
    report_to: str | list[str] = "none"
    distributed: DistributedSettings = DistributedSettings()

    @model_validator(mode="after")
    def _check(self) -> GRPOConfig:
        if self.plan_format == "natural":
            raise ValueError(NATURAL_REFUSED)
        if self.distributed.processes != 1:
            raise ValueError("learner.distributed.processes must be 1 for the GRPO learner: its rollouts run "
                             "through the engine on the in-process policy; use one process (one GPU)")
        if (self.questions_per_step * self.num_generations) % self.grad_accum:
            raise ValueError(f"learner.questions_per_step * learner.num_generations "
                             f"({self.questions_per_step * self.num_generations}) must be divisible by "
                             f"learner.grad_accum ({self.grad_accum})")
        if self.rewards.format and self.plan_format == "none":
            raise ValueError("learner.rewards.format rewards a plan, but learner.plan_format is none; "
                             "set a plan format (code or steps) or rewards.format: 0")
        if self.rewards.leak_penalty and self.plan_format == "none":
            raise ValueError("learner.rewards.leak_penalty checks a plan, but learner.plan_format is none; "
                             "set a plan format (code or steps) or rewards.leak_penalty: 0")
        if "skip_zero_advantage" in self.model_fields_set and self.skip_zero_advantage and not skips_zero_advantage(self):
            raise ValueError(f"learner.skip_zero_advantage would change the gradient with loss_type={self.loss_type} "
                             f"and beta={self.beta}: it is exact only for loss_type {' or '.join(SKIP_EXACT_LOSSES)} "
                             "with beta 0; remove it or set it to false")
        if self.rollout != "engine" and self.plan_format == "steps":
            raise ValueError(f"learner.rollout={self.rollout} cannot stop at </solution> (plan format steps); "
                             "use rollout: engine")
        return self


def skips_zero_advantage(cfg: GRPOConfig) -> bool:
    """Whether rollouts of advantage 0 are left out of the loss: asked for, and exact for this loss (see the key)."""
    return cfg.skip_zero_advantage and cfg.loss_type in SKIP_EXACT_LOSSES and cfg.beta == 0


def drop_zero_advantage(inputs: dict) -> dict:
    """A micro-batch without its rows of advantage 0 (one kept if none is left, so a step's gradient is a real zero
    as before) and without trailing completion columns that no kept row uses. Those rows add exactly 0 to a dapo or
    cispo loss (normalised by `num_items_in_batch`, the generation batch's tokens) and to its gradient; trailing
    padding cannot change earlier positions of a causal model."""
    import torch

    advantages = inputs["advantages"]
    keep = advantages != 0 if advantages.dim() == 1 else (advantages != 0).any(-1)
    if bool(keep.all()):
        return inputs
    if not bool(keep.any()):
        keep = keep.clone()
        keep[0] = True
    rows, width = len(keep), inputs["completion_ids"].shape[1]
    out = {k: v[keep] if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows else v
           for k, v in inputs.items()}
    used = out["completion_mask"].any(0).nonzero()
    trimmed = int(used.max()) + 1 if len(used) else 1
    if trimmed < width:
        out = {k: v[:, :trimmed] if (isinstance(v, torch.Tensor) and v.dim() >= 2 and v.shape[1] == width
                                      and not k.startswith("prompt")) else v
               for k, v in out.items()}
    return out


def _trainer_class():
    """TRL's GRPOTrainer, leaving rows of advantage 0 out of the training loss when `skip_zero_advantage` is set."""
    from trl import GRPOTrainer

    class Trainer(GRPOTrainer):
        skip_zero_advantage = False

        def _compute_loss(self, model, inputs):
            if self.skip_zero_advantage and self.model.training:
                inputs = drop_zero_advantage(inputs)
            return super()._compute_loss(model, inputs)

    return Trainer


# ---------------------------------------------------------------- prompts and rollouts


def rollout_messages(question: str, answer_type: str, plan_format: str) -> tuple[list[dict], tuple[str, ...]]:
    """The chat a rollout continues and its stop strings, exactly as `forethought eval` prompts the format."""
    from forethought import plans

    if plan_format == "none":
        return plans.question_messages(question, answer_type), ()
    if plan_format == "code":
        return plans.code_plan_messages(question, answer_type), ()
    if plan_format == "steps":
        from forethought.plans import steps

        return (steps.messages(question, answer_type) + [{"role": "assistant", "content": steps.root_prefix()}],
                (steps.SOLUTION_CLOSE,))
    raise UserError(NATURAL_REFUSED if plan_format == "natural" else f"unknown plan format {plan_format!r}")


def _engine_class():
    """HFEngine whose samples also carry their generated token ids (what TRL trains on, eos/stop tokens kept)."""
    from forethought.engines.hf import HFEngine

    class RolloutEngine(HFEngine):
        def _finish(self, row):
            sample = super()._finish(row)
            sample.token_ids = list(row.tokens)
            return sample

    return RolloutEngine


def make_rollout(cfg: GRPOConfig, *, seed: int, stop: tuple[str, ...], engine_options: dict):
    """TRL's `rollout_func(prompts, trainer)`: consecutive copies of a prompt (TRL repeats each G times) become one
    engine request with n = G, seeded by (seed, prompt, optimizer step) so a resumed run redraws the same rollouts;
    the engine wraps the trainer's live model, so rollouts always come from the current weights."""
    from forethought.engines import packed_linear
    from forethought.engines.base import Request

    engine_class = _engine_class()

    def rollout(prompts: list, trainer) -> dict:
        model = trainer.accelerator.unwrap_model(trainer.model)
        # LoRA: decode with the adapter merged into the base weights (the same function, one matmul per layer
        # instead of three; unmerged, the adapter's small matmuls took two thirds of the decode time on a CPU),
        # then unmerge before the loss is computed
        merge = cfg.lora is not None and hasattr(model, "merge_adapter")
        if merge:
            model.merge_adapter()
        packed = bool(engine_options.get("packed_weights"))
        if packed:  # packed from this step's weights, dropped before they change
            packed_linear.pack_linears(model)
        try:
            return _generate(model, prompts, trainer)
        finally:
            if packed:
                packed_linear.unpack_linears(model)
            if merge:
                model.unmerge_adapter()

    def _generate(model, prompts: list, trainer) -> dict:
        engine = engine_class.from_loaded(model, trainer.processing_class, batch_size=engine_options["batch_size"])
        for key in ("prefill_tokens", "shared_kv", "continuous"):
            if engine_options.get(key) is not None:
                setattr(engine, key, engine_options[key])
        groups: list[list] = []
        for p in prompts:
            if groups and groups[-1][0] == p:
                groups[-1][1] += 1
            else:
                groups.append([p, 1])
        step = trainer.state.global_step
        requests = []
        for g, (p, count) in enumerate(groups):
            key = hashlib.sha1(json.dumps(p, sort_keys=True).encode()).hexdigest()[:16]
            s = int.from_bytes(hashlib.sha256(f"{seed}:{step}:{g}:{key}".encode()).digest()[:8], "little") >> 2
            requests.append(Request(messages=p, n=count, temperature=cfg.temperature, top_p=cfg.top_p,
                                    max_new_tokens=cfg.max_completion_length, stop=stop, seed=s, logprobs=True))
        done = engine.generate(requests, progress=False)
        out = {"prompt_ids": [], "completion_ids": [], "logprobs": None, "finish_reason": [], "logprob_sum": [],
               "tokens_in": []}
        for req, completion in zip(requests, done):
            ids = engine.encode(req)
            for k, sample in enumerate(completion.samples):
                out["tokens_in"].append(0 if k else len(ids))  # a request's prompt is prefilled once for its n samples
                out["prompt_ids"].append(ids)
                out["completion_ids"].append(sample.token_ids)
                out["finish_reason"].append(sample.finish_reason)
                out["logprob_sum"].append(sample.logprob_sum)
        return out

    return rollout


# ---------------------------------------------------------------- checkpoints


def _step_of(path: Path) -> int:
    return int(path.name.rsplit("-", 1)[1])


def complete_checkpoints(trainer_dir: Path) -> list[Path]:
    """TRL checkpoints whose trainer_state.json (written last) parses, oldest first."""
    out = []
    for p in trainer_dir.glob("checkpoint-*"):
        try:
            _step_of(p)
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        out.append(p)
    return sorted(out, key=_step_of)


def _keep_rollouts_until(path: Path, step: int) -> None:
    """Drop rollouts of steps after the checkpoint a resumed run restarts from (they are drawn again, the same)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut in half by a kill
        if row.get("step") is not None and row["step"] <= step:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)


def cpu_micro_batch(cfg: GRPOConfig, row_tokens: int) -> tuple[int, int]:
    """(completions per micro-batch, micro-batches per step) on CPU: the configured split, made finer so that a
    micro-batch holds at most CPU_TRAIN_TOKENS tokens (rows of at most `row_tokens`: the longest prompt plus
    max_completion_length), as the SFT learners do. A forward keeps about 2 MB of activations per token for
    SmolLM2-135M, so 8 completions of 160 tokens held 2.7 GB. Every loss but bnpo (normalised per micro-batch) gives
    the same step over equal micro-batches: dapo, cispo and vespo normalise by the generation batch's tokens, the
    others average over rows and divide by the accumulation steps."""
    rows = cfg.questions_per_step * cfg.num_generations // cfg.grad_accum
    if cfg.loss_type == "bnpo":
        return rows, cfg.grad_accum
    micro = max(1, min(rows, CPU_TRAIN_TOKENS // max(1, row_tokens)))
    while rows % micro:
        micro -= 1
    return micro, cfg.grad_accum * rows // micro


def _trl_args(cfg: GRPOConfig, trainer_dir: Path, *, seed: int, max_steps: int, progress: bool, cuda: bool,
              row_tokens: int):
    from trl import GRPOConfig as TrlGRPOConfig

    rows, accumulation = cfg.questions_per_step * cfg.num_generations // cfg.grad_accum, cfg.grad_accum
    if not cuda:
        rows, accumulation = cpu_micro_batch(cfg, row_tokens)
        narrow_logprob_tiles()
    try:
        return TrlGRPOConfig(
            output_dir=str(trainer_dir), learning_rate=cfg.learning_rate, max_steps=max_steps,
            per_device_train_batch_size=rows, gradient_accumulation_steps=accumulation,
            steps_per_generation=accumulation, num_generations=cfg.num_generations,
            num_iterations=cfg.num_iterations, max_completion_length=cfg.max_completion_length,
            temperature=cfg.temperature, top_p=cfg.top_p, beta=cfg.beta, epsilon=cfg.epsilon,
            epsilon_high=cfg.epsilon_high, loss_type=cfg.loss_type, scale_rewards=cfg.scale_rewards,
            importance_sampling_level=cfg.importance_sampling_level,
            mask_truncated_completions=cfg.mask_truncated_completions, lr_scheduler_type=cfg.lr_scheduler,
            warmup_steps=cfg.warmup_ratio, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            save_strategy="steps", save_steps=cfg.save_steps, logging_steps=1, seed=seed, data_seed=seed,
            report_to=trainer_report_to(cfg.report_to), **trainer_run_args(), bf16=cuda, use_cpu=not cuda,
            disable_tqdm=not progress,
            dataloader_num_workers=0, log_completions=False, use_vllm=cfg.rollout == "vllm",
            **({"vllm_mode": "colocate", "vllm_gpu_memory_utilization": cfg.vllm_gpu_memory_utilization}
               if cfg.rollout == "vllm" else {}),
            **{checkpointing_key(TrlGRPOConfig): cfg.gradient_checkpointing},
        )
    except ValueError as e:  # TRL's own checks of combinations (e.g. luspo needs sequence-level sampling)
        raise UserError(f"learner (grpo): {e}") from None


def _stop_at(step: int):
    from transformers import TrainerCallback

    class StopAt(TrainerCallback):
        """End this iteration's share of the one GRPO optimisation at `step`, saving TRL's checkpoint there."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= step:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopAt()


def _stop_at_tokens(limit: int, spent: list[int]):
    from transformers import TrainerCallback

    class StopAtTokens(TrainerCallback):
        """End this iteration (saving TRL's checkpoint) once its rollouts have generated `limit` tokens."""

        def on_step_end(self, args, state, control, **kwargs):
            if spent[0] >= limit:
                control.should_save = True
                control.should_training_stop = True
            return control

    return StopAtTokens()


def _load_from_checkpoint(base_path: str, checkpoint: Path, lora: bool, dtype):
    """The policy as TRL saved it at `checkpoint` (adapter on the base model, or full weights)."""
    from transformers import AutoModelForCausalLM

    if lora:
        from peft import PeftModel

        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype), checkpoint)
    return AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype)


def train_grpo_iteration(
    model: str | Path,
    task,
    questions: Sequence,
    cfg: GRPOConfig,
    *,
    iteration: int,
    iterations: int,
    trainer_dir: Path,
    output_dir: Path,
    rollouts_path: Path,
    seed: int,
    engine_options: dict,
    progress: bool = True,
) -> dict:
    """Train iteration `iteration` (1-based) of the run's one GRPO optimisation from the base `model`; write the
    merged checkpoint to `output_dir` atomically and append this iteration's rollouts to `rollouts_path`.

    Resumes from the newest complete TRL checkpoint in `trainer_dir` at or before this iteration's last step."""
    import datasets
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback

    from forethought.engines.hf import chat_prompt_ids
    from forethought.models import resolve_model

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    steps = cfg.steps_per_iteration
    stop_at, total = iteration * steps, max(iterations, iteration) * steps
    path = str(resolve_model(str(model)))
    cuda, dtype = device_dtype()
    trainer_dir = Path(trainer_dir)
    trainer_dir.mkdir(parents=True, exist_ok=True)
    resume = [c for c in complete_checkpoints(trainer_dir) if _step_of(c) <= stop_at]
    resume_from = resume[-1] if resume else None
    start_step = _step_of(resume_from) if resume_from else 0
    if start_step < (iteration - 1) * steps and not (cfg.max_tokens is not None and resume_from is not None):
        raise UserError(f"{trainer_dir} holds no GRPO checkpoint of step {(iteration - 1) * steps} (the end of "
                        f"iteration {iteration - 1}); start the run again in a new output=DIR")
    rollouts_path.parent.mkdir(parents=True, exist_ok=True)
    _keep_rollouts_until(rollouts_path, start_step)
    # this iteration's rollout tokens so far (kept rows of a resumed iteration included), against cfg.max_tokens
    spent = [sum(json.loads(x).get("tokens") or 0 for x in rollouts_path.read_text(encoding="utf-8").splitlines())
             if rollouts_path.is_file() else 0]
    budget_spent = cfg.max_tokens is not None and spent[0] >= cfg.max_tokens and resume_from is not None

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    start = time.perf_counter()
    with quiet(not progress), partial_dir(output_dir, again="train this iteration again") as tmp:
        if start_step == stop_at or budget_spent:  # killed after TRL's checkpoint, before the merged one: nothing
            # left to train (or the budget is spent: the iteration's model is its last checkpoint)
            policy = _load_from_checkpoint(path, resume_from, cfg.lora is not None, dtype)
            if cfg.lora is not None:
                policy = policy.merge_and_unload()
            policy.config.use_cache = True
            policy.save_pretrained(tmp / "checkpoint")
            tokenizer.save_pretrained(tmp / "checkpoint")
            (tmp / "checkpoint").rename(output_dir)
            return {"steps": start_step, "resumed_from": start_step, "seconds": round(time.perf_counter() - start, 3)}

        messages_stop = [rollout_messages(q.question, task.answer_type, cfg.plan_format) for q in questions]
        stop = messages_stop[0][1]
        dataset = datasets.Dataset.from_list(
            [{"prompt": m, "question_id": q.id} for (m, _), q in zip(messages_stop, questions)])
        with open(rollouts_path, "a", encoding="utf-8") as sink:
            def write(row: dict) -> None:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
                spent[0] += row.get("tokens") or 0

            reward = TaskReward(task, cfg.plan_format, cfg.rewards, questions, sink=write)
            transformers.set_seed(seed)
            policy = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            longest = max(len(chat_prompt_ids(tokenizer, m)) for m, _ in messages_stop)
            args = _trl_args(cfg, trainer_dir, seed=seed, max_steps=total, progress=progress, cuda=cuda,
                             row_tokens=longest + cfg.max_completion_length)
            rollout = (make_rollout(cfg, seed=seed, stop=stop, engine_options=engine_options)
                       if cfg.rollout == "engine" else None)
            trainer = _trainer_class()(model=policy, reward_funcs=[reward], args=args, train_dataset=dataset,
                                  processing_class=tokenizer, peft_config=lora_config(cfg.lora),
                                  rollout_func=rollout, callbacks=[_stop_at(stop_at)] + (
                                      [_stop_at_tokens(cfg.max_tokens, spent)] if cfg.max_tokens is not None else []))
            trainer.skip_zero_advantage = skips_zero_advantage(cfg)
            if not progress:
                trainer.remove_callback(PrinterCallback)
            result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        if trainer.state.global_step != stop_at and not (cfg.max_tokens is not None and spent[0] >= cfg.max_tokens):
            raise RuntimeError(f"GRPO stopped at step {trainer.state.global_step}, expected {stop_at}")
        save_merged(trainer, tokenizer, cfg.lora is not None, tmp / "checkpoint")
        (tmp / "checkpoint").rename(output_dir)
        logs = [h for h in trainer.state.log_history if "loss" in h and h.get("step", 0) > start_step]
    end = trainer.state.global_step  # stop_at, or earlier when the budget ended the iteration
    for old in complete_checkpoints(trainer_dir):  # keep only this iteration's end: the next one resumes there
        if _step_of(old) < end:
            shutil.rmtree(old, ignore_errors=True)
    return {"steps": end, "resumed_from": start_step, "train_loss": float(result.training_loss),
            "seconds": round(time.perf_counter() - start, 3),
            "reward_mean": [round(h.get("reward", float("nan")), 4) for h in logs]}
