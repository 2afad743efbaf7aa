"""Text generation behind one small interface (`Engine.generate`); `get_engine` builds one by kind."""

from __future__ import annotations

from forethought.engines.base import Completion, Engine, Request, Sample
from forethought.errors import UserError
from forethought.models import DEFAULT_MODEL

ENGINES = ("hf",)

__all__ = ["Completion", "Engine", "Request", "Sample", "ENGINES", "get_engine"]


def get_engine(kind: str = "hf", model: str = DEFAULT_MODEL, **options) -> Engine:
    """Build an engine of `kind` for `model`; options go to the engine's constructor."""
    if kind == "hf":
        from forethought.engines.hf import HFEngine

        return HFEngine(model, **options)
    raise UserError(f"unknown engine '{kind}'; available: {', '.join(ENGINES)}")
