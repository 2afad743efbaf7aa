"""The recipe's `engine:` block: which engine, its settings, and how many Ray replicas; validated per kind."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from forethought.config import StrictModel

_HF = {"batch_size", "device", "dtype", "trust_remote_code", "prefill_tokens", "shared_kv", "continuous",
       "packed_weights"}
_OPENAI = {"base_urls", "launch", "served_model", "api_key_env", "max_concurrency", "max_retries", "timeout"}
_VLLM = {"dtype", "trust_remote_code", "gpu_memory_utilization", "tensor_parallel_size", "max_model_len",
         "enable_sleep_mode"}
_REPLICAS = {"replicas", "ray_address", "replica_cpus", "replica_gpus", "chunk_size"}
_OWN = {"hf": _HF, "openai": _OPENAI, "vllm": _VLLM}


class EngineSettings(StrictModel):
    """The generation engine used for sampling and evaluation (hf in-process, OpenAI-compatible servers, vLLM),
    optionally as `replicas` Ray actors."""

    kind: Literal["hf", "openai", "vllm"] = "hf"
    # hf (dtype and trust_remote_code also apply to vllm)
    batch_size: int = Field(64, ge=1)
    device: str | None = None
    dtype: str | None = None
    trust_remote_code: bool = False
    # hf only: padded prompt tokens per prefill pass, shared prefixes attended from one copy (None: the device's
    # default, 1,024 and on for CPU, 16,384 and off for CUDA), refill finished rows mid-decode (see BENCHMARKS.md)
    prefill_tokens: int | None = Field(None, ge=1)
    shared_kv: bool | None = None
    continuous: bool = False
    # hf, fp32 on CPU: linear layers through oneDNN with weights packed ahead (faster on AVX2 CPUs; rounds
    # differently from `generate`, so a greedy token can flip at a near-tie; a second copy of the weights)
    packed_weights: bool = False
    # openai: running servers (base_urls) or a command that serves each model ({model}, {gguf}, {name}, {port}...)
    base_urls: list[str] = []
    launch: str | None = None
    served_model: str | None = None  # the name the servers know the model by (default: the run's model)
    api_key_env: str | None = None  # name of the environment variable that holds the key (never the key itself)
    max_concurrency: int = Field(8, ge=1)
    max_retries: int = Field(4, ge=0)
    timeout: float = Field(600.0, gt=0)
    # vllm (GPU only)
    gpu_memory_utilization: float = Field(0.85, gt=0, le=1)
    tensor_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    enable_sleep_mode: bool = True
    # Ray replicas of any kind
    replicas: int = Field(1, ge=1)
    ray_address: str | None = None  # None: start Ray on this machine; "auto" or "ray://head:10001": a cluster
    replica_cpus: float = Field(1.0, gt=0)
    replica_gpus: float = Field(0.0, ge=0)
    chunk_size: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _fits_kind(self) -> EngineSettings:
        stray = sorted(k for k in self.model_fields_set - {"kind"} if k not in _OWN[self.kind] | _REPLICAS)
        if stray:
            verb = "does" if len(stray) == 1 else "do"
            raise ValueError(f"{', '.join(stray)} {verb} not apply to engine.kind={self.kind}")
        if self.kind == "openai" and bool(self.base_urls) == bool(self.launch):
            raise ValueError("engine.kind=openai needs either base_urls (running servers) or launch (a command "
                             "that starts one), not both")
        bad = [u for u in self.base_urls if not u.startswith(("http://", "https://"))]
        if bad:
            raise ValueError(f"base_urls must start with http:// or https:// (got {', '.join(bad)})")
        if self.replicas == 1 and (self.model_fields_set & (_REPLICAS - {"replicas", "ray_address"})):
            raise ValueError("replica_cpus, replica_gpus and chunk_size need replicas > 1")
        return self

    @property
    def fixed_model(self) -> bool:
        """True when generation goes to servers that serve one fixed model (base_urls, no launch)."""
        return self.kind == "openai" and not self.launch

    def options(self) -> dict:
        """Keyword arguments for `get_engine(kind, model, **options)`: this kind's settings and the replica ones."""
        keys = _OWN[self.kind] | (_REPLICAS if self.replicas > 1 or self.ray_address else set())
        return {k: getattr(self, k) for k in sorted(keys)}
