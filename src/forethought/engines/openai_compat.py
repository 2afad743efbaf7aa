"""Generation through OpenAI-compatible servers (vLLM, SGLang, llama.cpp): chat and completion endpoints, bounded
concurrency, retries with backoff, and several servers balanced by their number of requests in flight.

The API key is read from an environment variable and handed only to the HTTP client; it is never logged or shown.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass

from forethought.engines.base import Completion, Request, Sample
from forethought.engines.progress import RequestProgress
from forethought.errors import UserError

_TRANSIENT_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


def _choice_seed(seed: int, index: int) -> int:
    """A 31-bit seed for sample `index` of a request seeded with `seed`, when a server must be asked again."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:4], "little") >> 1


def _openai():
    try:
        import openai
    except ImportError:
        raise UserError("engine.kind=openai needs the openai client: pip install 'forethought[openai]'") from None
    return openai


@dataclass
class _Reply:
    """One HTTP answer, reduced to what a Completion needs."""

    samples: list[Sample]
    prompt_tokens: int


class OpenAIEngine:
    """Complete requests on one or more OpenAI-compatible servers; `model` is the name the servers serve it under."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_urls: Sequence[str] = (),
        launch: str | None = None,
        served_model: str | None = None,
        api_key_env: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 600.0,
        backoff: float = 0.5,
    ) -> None:
        if bool(base_urls) == bool(launch):
            raise UserError("engine.kind=openai needs either engine.base_urls (running servers, e.g. "
                            "[http://127.0.0.1:8000/v1]) or engine.launch (a command that serves {model}), not both")
        if max_concurrency < 1 or max_retries < 0 or timeout <= 0 or backoff < 0:
            raise UserError("engine.max_concurrency must be >= 1, max_retries >= 0, timeout > 0 and backoff >= 0")
        if api_key_env and not os.environ.get(api_key_env):
            raise UserError(f"engine.api_key_env names ${api_key_env}, which is not set; export it or unset the key")
        _openai()
        self.model = served_model or model
        self._server = None
        if launch:
            from forethought.engines.server import ManagedServer

            self._server = ManagedServer.from_template(launch, model).start()
            base_urls = [self._server.base_url]
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.max_concurrency, self.max_retries, self.timeout, self.backoff = max_concurrency, max_retries, timeout, backoff
        self._api_key_env = api_key_env

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIEngine(model={self.model!r}, base_urls={self.base_urls!r})"

    def close(self) -> None:
        """Stop the server this engine launched, if any (HTTP clients live only for one generate call)."""
        if self._server is not None:
            self._server.stop()
            self._server = None

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[Completion]:
        """Complete every request (n samples each); results keep the input order."""
        if not requests:
            return []
        coro = self._generate_all(list(requests), progress)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # called from inside an event loop: run beside it
            return pool.submit(asyncio.run, coro).result()

    async def _generate_all(self, requests: list[Request], progress: bool) -> list[Completion]:
        openai = _openai()
        key = os.environ.get(self._api_key_env, "") if self._api_key_env else "EMPTY"
        clients = [openai.AsyncOpenAI(base_url=u, api_key=key, max_retries=0, timeout=self.timeout)
                   for u in self.base_urls]
        self._in_flight = [0] * len(clients)
        self._turn = 0
        limit = asyncio.Semaphore(self.max_concurrency)
        try:
            with RequestProgress(len(requests), enabled=progress) as bar:
                async def one(request: Request) -> Completion:
                    completion = await self._complete(clients, limit, request)
                    bar.done(sum(s.tokens for s in completion.samples))
                    return completion

                return list(await asyncio.gather(*(one(r) for r in requests)))
        finally:
            for client in clients:
                await client.close()

    async def _complete(self, clients, limit: asyncio.Semaphore, request: Request) -> Completion:
        """All n samples of a request; servers that return fewer choices than asked (llama.cpp) are asked again."""
        samples: list[Sample] = []
        prompt_tokens = 0
        while len(samples) < request.n:
            first = not samples
            want = request.n - len(samples)
            seed = request.seed if first or request.seed is None else _choice_seed(request.seed, len(samples))
            async with limit:
                reply = await self._call(clients, request, want, seed)
            if not reply.samples:
                raise RuntimeError(f"the server returned no choices for a request to model '{self.model}'")
            samples.extend(reply.samples[:want])
            prompt_tokens = prompt_tokens or reply.prompt_tokens
        return Completion(samples=samples, prompt_tokens=prompt_tokens)

    def _pick(self, avoid: int | None) -> int:
        """The server with the fewest requests in flight (round-robin among ties), another than `avoid` if possible."""
        order = [(self._turn + k) % len(self._in_flight) for k in range(len(self._in_flight))]
        self._turn += 1
        candidates = [i for i in order if i != avoid] or order
        return min(candidates, key=lambda i: self._in_flight[i])

    async def _call(self, clients, request: Request, n: int, seed: int | None) -> _Reply:
        """One HTTP request with retries on transient errors, each retry on another server when there is one."""
        openai = _openai()
        failed: int | None = None
        for attempt in range(self.max_retries + 1):
            i = self._pick(failed)
            self._in_flight[i] += 1
            try:
                return await self._send(clients[i], request, n, seed)
            except openai.APIStatusError as e:
                if e.status_code not in _TRANSIENT_STATUS or attempt == self.max_retries:
                    raise self._explain(e, self.base_urls[i]) from None
            except openai.APIConnectionError as e:
                if attempt == self.max_retries:
                    raise UserError(f"cannot reach the OpenAI-compatible server at {self.base_urls[i]} after "
                                    f"{attempt + 1} tries ({type(e).__name__}); is it running?") from None
            finally:
                self._in_flight[i] -= 1
            failed = i
            await asyncio.sleep(min(8.0, self.backoff * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def _explain(self, e, url: str) -> UserError:
        """A one-line error for a refused request (the key never appears: it is not part of the response)."""
        status = e.status_code
        hint = {401: f"check the API key in ${self._api_key_env}" if self._api_key_env else "set engine.api_key_env",
                403: "the key is not allowed to use this model",
                404: f"the server does not serve model '{self.model}'; set engine.served_model to a name it lists "
                     "at /v1/models"}.get(status, "")
        detail = str(getattr(e, "message", "") or "")[:300]
        return UserError(f"the server at {url} refused the request (HTTP {status}): {detail}"
                         + (f"; {hint}" if hint else ""))

    async def _send(self, client, request: Request, n: int, seed: int | None) -> _Reply:
        common = dict(model=self.model, n=n, temperature=request.temperature, top_p=request.top_p,
                      max_tokens=request.max_new_tokens, stop=list(request.stop) or None, seed=seed)
        count = request.logprobs or n > 1  # per-choice log-probs also give per-choice token counts
        if request.messages is not None:
            extra = {}
            if request.messages and request.messages[-1].get("role") == "assistant":
                extra = {"continue_final_message": True, "add_generation_prompt": False}  # vLLM / SGLang names
            resp = await client.chat.completions.create(
                messages=request.messages, logprobs=True if count else None, top_logprobs=0 if count else None,
                extra_body=extra or None, **common)
            texts = [c.message.content or "" for c in resp.choices]
            logprobs = [[t.logprob for t in (c.logprobs.content or [])] if c.logprobs else None for c in resp.choices]
        else:
            resp = await client.completions.create(prompt=request.prompt, logprobs=0 if count else None, **common)
            texts = [c.text or "" for c in resp.choices]
            logprobs = [[x for x in (c.logprobs.token_logprobs or []) if x is not None] if c.logprobs else None
                        for c in resp.choices]
        usage = resp.usage
        out_tokens = usage.completion_tokens if usage and usage.completion_tokens is not None else None
        samples = []
        for k, (choice, text, lps) in enumerate(zip(resp.choices, texts, logprobs)):
            if lps:
                tokens = len(lps)
            elif out_tokens is not None:  # no log-probs: share the reported total (exact for one choice)
                tokens = out_tokens // len(resp.choices) + (k < out_tokens % len(resp.choices))
            else:
                tokens = 0
            samples.append(self._sample(request, choice, text, tokens, lps))
        prompt_tokens = usage.prompt_tokens if usage and usage.prompt_tokens is not None else 0
        return _Reply(samples=samples, prompt_tokens=prompt_tokens)

    @staticmethod
    def _sample(request: Request, choice, text: str, tokens: int, lps: list[float] | None) -> Sample:
        """Map a choice to a Sample: 'length' as is; a 'stop' is a stop string when the server says so (vLLM's
        `stop_reason`, SGLang's `matched_stop`) or, when it does not say, whenever the request had stop strings."""
        cuts = [text.find(s) for s in request.stop if s in text]  # servers that keep the stop string in the text
        if cuts:
            text = text[: min(cuts)]
        if choice.finish_reason == "length" and not cuts:
            finish = "length"
        elif cuts:
            finish = "stop"
        else:
            extra = choice.model_extra or {}
            said = extra.get("stop_reason", extra.get("matched_stop", ...))
            if said is ...:
                finish = "stop" if request.stop else "eos"
            else:
                finish = "stop" if isinstance(said, str) else "eos"
        lp_sum = sum(lps) if request.logprobs and lps else None
        lp_mean = lp_sum / len(lps) if lp_sum is not None else None
        return Sample(text=text, tokens=tokens, finish_reason=finish, logprob_sum=lp_sum, logprob_mean=lp_mean)
