"""In-process vLLM (GPU only, the `vllm` extra): n samples per prompt, prefix caching, log-probs, and sleep/wake or
teardown so that training can have the GPU between sampling phases.

Prompts are rendered with the model's chat template here (an assistant tail is continued, as in the hf engine)
and passed as token ids, so every engine sees the same prompt tokens. Written against vLLM's documented `LLM`,
`SamplingParams` and sleep-mode API; it cannot run on a CPU-only machine.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Sequence

from forethought.engines.base import Completion, Request, Sample
from forethought.errors import UserError


def _vllm():
    try:
        import vllm
    except ImportError:
        raise UserError("engine.kind=vllm needs vLLM on a CUDA GPU: pip install 'forethought[vllm]' "
                        "(on a CPU-only machine use engine.kind=hf)") from None
    return vllm


class VLLMEngine:
    """Generate with `vllm.LLM` on the model's resolved HF checkpoint; see the module docstring."""

    name = "vllm"

    def __init__(
        self,
        model: str,
        *,
        dtype: str | None = None,
        trust_remote_code: bool = False,
        gpu_memory_utilization: float = 0.85,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        enable_sleep_mode: bool = True,
        seed: int = 0,
        **_ignored,  # hf-only settings such as batch_size and device (vLLM schedules its own batches)
    ) -> None:
        vllm = _vllm()
        import torch

        if not torch.cuda.is_available():
            raise UserError("engine.kind=vllm needs a CUDA GPU and none is visible; use engine.kind=hf on a CPU")
        from forethought.models import resolve_model

        path = str(resolve_model(model))
        kwargs = dict(model=path, tokenizer=path, dtype=dtype or "auto", trust_remote_code=trust_remote_code,
                      gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                      enable_prefix_caching=True, enable_sleep_mode=enable_sleep_mode, seed=seed)
        if max_model_len:
            kwargs["max_model_len"] = max_model_len
        self.llm = vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.sleeping = False
        config = getattr(self.llm.llm_engine, "model_config", None)
        self.context = getattr(config, "max_model_len", None) or max_model_len or 1 << 30

    def encode(self, request: Request) -> list[int]:
        """Prompt token ids: the chat template for messages (an assistant tail is continued), else the raw text."""
        if request.prompt is not None:
            ids = self.tokenizer(request.prompt).input_ids
        else:
            cont = bool(request.messages) and request.messages[-1].get("role") == "assistant"
            text = self.tokenizer.apply_chat_template(request.messages, tokenize=False, add_generation_prompt=not cont,
                                                      continue_final_message=cont)
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
        if not ids:
            raise UserError("a request's prompt encodes to no tokens; give it some text")
        if len(ids) >= self.context:
            raise UserError(f"a prompt of {len(ids)} tokens does not fit the model's context of {self.context}")
        return ids

    def params(self, request: Request):
        """vLLM SamplingParams for a request; logprobs=0 returns only the chosen tokens' log-probs."""
        vllm = _vllm()
        return vllm.SamplingParams(
            n=request.n, temperature=request.temperature, top_p=request.top_p, max_tokens=request.max_new_tokens,
            stop=list(request.stop) or None, seed=request.seed, logprobs=0 if request.logprobs else None,
        )

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[Completion]:
        """Complete every request in one vLLM call (it batches and shares prefixes itself); input order is kept."""
        if self.sleeping:
            self.wake()
        prompts = [self.encode(r) for r in requests]
        outputs = self.llm.generate([{"prompt_token_ids": ids} for ids in prompts],
                                    sampling_params=[self.params(r) for r in requests], use_tqdm=progress)
        eos = self.tokenizer.eos_token_id
        completions = []
        for request, ids, out in zip(requests, prompts, outputs):
            samples = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                if o.finish_reason == "length":
                    finish = "length"
                elif isinstance(o.stop_reason, str):
                    finish = "stop"
                else:  # None (eos) or a stop token id
                    finish = "eos" if o.stop_reason is None or o.stop_reason == eos else "stop"
                lp_sum = o.cumulative_logprob if request.logprobs else None
                n = len(o.token_ids)
                samples.append(Sample(text=o.text, tokens=n, finish_reason=finish, logprob_sum=lp_sum,
                                      logprob_mean=lp_sum / n if lp_sum is not None and n else None))
            completions.append(Completion(samples=samples, prompt_tokens=len(ids)))
        return completions

    def sleep(self, level: int = 1) -> None:
        """Free the GPU for training: level 1 keeps weights in CPU memory (same model later), 2 drops them."""
        if not self.sleeping:
            self.llm.sleep(level=level)
            self.sleeping = True

    def wake(self) -> None:
        """Bring weights and KV cache back after sleep()."""
        if self.sleeping:
            self.llm.wake_up()
            self.sleeping = False

    def close(self) -> None:
        """Tear the engine down and give its GPU memory back (before training a new model)."""
        import torch

        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()  # V1 runs the engine core in its own process
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

            destroy_model_parallel()
            destroy_distributed_environment()
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
