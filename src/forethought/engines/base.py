"""The generation interface every engine implements: requests in, completions (n samples each) out, same order."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from forethought.errors import UserError


@dataclass
class Request:
    """One prompt to complete n times; exactly one of `messages` (chat) or `prompt` (raw text) is set.

    If the last chat message has role "assistant", its content is a prefix the model continues (no end-of-turn).
    `seed` makes sampling reproducible per request, whatever else is in the batch.
    """

    messages: list[dict] | None = None
    prompt: str | None = None
    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logprobs: bool = False

    def __post_init__(self) -> None:
        if (self.messages is None) == (self.prompt is None):
            raise UserError("a Request needs exactly one of 'messages' or 'prompt'")
        if self.n < 1 or self.max_new_tokens < 1:
            raise UserError(f"a Request needs n >= 1 and max_new_tokens >= 1 (got n={self.n}, "
                            f"max_new_tokens={self.max_new_tokens})")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise UserError(
                f"a Request needs temperature >= 0 and 0 < top_p <= 1 (got {self.temperature}, {self.top_p})"
            )
        self.stop = tuple(self.stop)
        if any(not s for s in self.stop):
            raise UserError("stop strings must be non-empty")


def request_seed(seed: int, example_id: str, stage: str = "") -> int:
    """A stable per-question seed, so a question's samples do not depend on what else is in the batch."""
    return zlib.crc32(f"{seed}:{stage}:{example_id}".encode()) & 0x7FFFFFFF


@dataclass
class Sample:
    """One generated continuation; `tokens` counts generated tokens up to and including the stop/eos token."""

    text: str
    tokens: int
    finish_reason: str  # "stop" (stop string), "eos", or "length"
    logprob_sum: float | None = None
    logprob_mean: float | None = None


@dataclass
class Completion:
    """The n samples of one request and the length of its encoded prompt."""

    samples: list[Sample]
    prompt_tokens: int


class Engine(Protocol):
    """Anything that turns requests into completions (hf in-process, an HTTP server, vLLM...)."""

    name: str

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[Completion]:
        """Complete every request; results are in the same order as `requests`."""
        ...
