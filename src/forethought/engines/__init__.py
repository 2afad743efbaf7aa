"""Text generation behind one small interface (`Engine.generate`); `get_engine` builds one by kind."""

from __future__ import annotations

from forethought.engines.base import Completion, Engine, Request, Sample
from forethought.errors import UserError
from forethought.models import DEFAULT_MODEL

ENGINES = ("hf", "openai", "vllm")
_REPLICA_OPTIONS = ("ray_address", "replica_cpus", "replica_gpus", "chunk_size")

__all__ = ["Completion", "Engine", "Request", "Sample", "ENGINES", "close_engine", "get_engine"]


def get_engine(kind: str = "hf", model: str = DEFAULT_MODEL, *, replicas: int = 1, **options) -> Engine:
    """Build an engine of `kind` for `model`; options go to the engine's constructor. With `replicas` > 1 (or a
    `ray_address`) the engine runs as that many Ray actors (see engines/replicas.py)."""
    if kind not in ENGINES:
        raise UserError(f"unknown engine '{kind}'; available: {', '.join(ENGINES)}")
    if replicas > 1 or options.get("ray_address"):
        from forethought.engines.replicas import RayReplicaEngine

        return RayReplicaEngine(kind, model, replicas=replicas, **options)
    for key in _REPLICA_OPTIONS:
        options.pop(key, None)
    if kind == "hf":
        from forethought.models import resolve_model

        resolve_model(model)  # a bad name or path fails here, before torch is imported
        from forethought.engines.hf import HFEngine

        return HFEngine(model, **options)
    if kind == "openai":
        from forethought.engines.openai_compat import OpenAIEngine

        return OpenAIEngine(model, **options)
    from forethought.engines.vllm_engine import VLLMEngine

    return VLLMEngine(model, **options)


def close_engine(engine) -> None:
    """Release what an engine holds (a launched server, Ray actors, GPU memory), for engines that hold any."""
    close = getattr(engine, "close", None)
    if close is not None:
        close()
