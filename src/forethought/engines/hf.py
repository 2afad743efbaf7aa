"""The in-process transformers engine: batched, left-padded prefill, then a KV-cached decode loop we own.

Owning the loop gives n samples per prompt from one prefill, per-sample seeded sampling that does not depend on
batch composition, stop strings, finished rows dropped from the batch, and log-probs of the chosen tokens.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import hashlib
import inspect
import os
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import DynamicCache

from forethought.engines import packed_linear, shared_prefix
from forethought.engines.base import Completion, Request, Sample
from forethought.engines.kv_cache import make_cache, mergeable, repeat_rows, set_length, shift_left, write_rows
from forethought.engines.progress import RequestProgress
from forethought.errors import UserError
from forethought.models import DEFAULT_MODEL, load_model


MIN_SHARED_PREFIX = 16  # shorter common prefixes are encoded with each prompt
# Shorter shared prefixes are copied into every row rather than attended once: the split attention costs more
# operations per layer, which a short prefix does not repay (on CPU a 24-token chat system prompt measured 0.96x;
# 2 worked demonstrations, 501 tokens, 1.25x with every row decoding 64 tokens and 1.93x with eos on).
MIN_SHARED_KV = 128
# Padded prompt tokens per prefill forward pass (see HFEngine._prefill). On a 2-core CPU 1,024 was fastest (prefill
# 2.1-2.7x faster than one padded pass at batch 64: less padding, activations that stay in cache); a GPU wants more.
PREFILL_TOKENS = {"cpu": 1024, "cuda": 16384}


def physical_cores() -> int:
    """Physical CPU cores available to this process (hyper-threads do not help matmuls)."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
        cores, physical = set(), "0"
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                physical = value.strip()
            elif key.strip() == "core id":
                cores.add((physical, value.strip()))
        return max(1, min(available, len(cores) or available))
    except OSError:
        return max(1, available)


def cpu_threads() -> int:
    """Torch threads for CPU generation: OMP_NUM_THREADS when the user set it (e.g. to share the machine), else the
    physical cores (torch's own default counts hyper-threads, which slow matmuls down)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else physical_cores()


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """Token ids of a chat prompt: the chat template applied, ready for the assistant's reply (or, when the last
    message is the assistant's, continuing it)."""
    if not tokenizer.chat_template:
        raise UserError("this model's tokenizer has no chat template; pass prompt= instead of messages=")
    cont = bool(messages) and messages[-1].get("role") == "assistant"
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not cont,
                                         continue_final_message=cont)
    return tokenizer(text, add_special_tokens=False).input_ids


def cache_argument(model) -> str:
    """The forward argument that takes the KV cache: `cache` in recent transformers (which deprecates
    `past_key_values`, to be removed in 5.40), `past_key_values` in older 5.x releases."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT wrapper passes it on
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def sample_seed(seed: int, index: int) -> int:
    """The generator seed of sample `index` of a request seeded with `seed` (independent streams per sample)."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:8], "little") >> 1


@dataclass
class _Unit:
    """A slice of one request's samples that is prefilled once and decoded as `count` rows."""

    request: int
    start: int
    count: int


@dataclass
class _Row:
    """Decoding state of one sample."""

    request: Request
    request_index: int
    index: int
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprob_sum: float = 0.0
    finish: str | None = None


class HFEngine:
    """Generate with a transformers causal LM on CPU (fp32) or CUDA (bf16); see the module docstring."""

    name = "hf"

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 64,
        trust_remote_code: bool = False,
        prefill_tokens: int | None = None,
        shared_kv: bool | None = None,
        continuous: bool = False,
        packed_weights: bool = False,
    ) -> None:
        """`prefill_tokens`, `shared_kv`: None keeps the device's default (see _setup); `continuous`: refill rows;
        `packed_weights`: linear layers through oneDNN with packed weights (fp32 CPU only; engines/packed_linear.py)."""
        loaded, tokenizer = load_model(model, device=device, dtype=dtype, trust_remote_code=trust_remote_code)
        if packed_weights:
            packed_linear.pack_linears(loaded)
        self._setup(loaded, tokenizer, batch_size)
        if prefill_tokens is not None:
            if prefill_tokens < 1:
                raise UserError(f"prefill_tokens must be >= 1 (got {prefill_tokens})")
            self.prefill_tokens = prefill_tokens
        if shared_kv is not None:
            self.shared_kv = shared_kv
        self.continuous = continuous

    @classmethod
    def from_loaded(cls, model, tokenizer, *, batch_size: int = 64) -> HFEngine:
        """Wrap an already loaded (model, tokenizer), e.g. a learner's in-memory model."""
        engine = cls.__new__(cls)
        engine._setup(model, tokenizer, batch_size)
        return engine

    def _setup(self, model, tokenizer, batch_size: int) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size must be >= 1 (got {batch_size})")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self._cache_arg = cache_argument(model)
        self.preallocate = True  # KV cache in preallocated buffers (False: transformers' concatenating cache)
        self.share_prefix = True  # encode a batch's shared prefix and repeated prompts once (False: each prompt whole)
        # Refill finished rows' slots with waiting requests mid-decode (see _decode_slots). Off by default: see
        # BENCHMARKS.md for what it measured.
        self.continuous = False
        # continuous batching refills once this many slots are free (or all that wait fit); None: an eighth of the
        # slots, which beat refilling every freed slot at batch 64 on both workloads measured (BENCHMARKS.md)
        self.refill: int | None = None
        self.device = next(model.parameters()).device
        # only full-attention layers: prefill passes can be joined and a shared prefix can be kept apart
        self._full_attention = mergeable(make_cache(model.config, 0))
        # prefill in passes of similar-length prompts of at most this many padded tokens (None: one padded pass)
        self.prefill_tokens: int | None = PREFILL_TOKENS.get(self.device.type, PREFILL_TOKENS["cuda"])
        # Attend to a batch's shared prefix from one copy of its keys and values (False: a copy per row). On by
        # default on CPU, where decoding is bound by reading the cache; on GPUs its extra kernel launches cost more.
        self.shared_kv = self.device.type == "cpu"
        if self.device.type == "cpu":
            torch.set_num_threads(cpu_threads())
        eos = model.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if tokenizer.eos_token_id is not None:
            eos.append(tokenizer.eos_token_id)
        self.eos_ids = set(eos)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    def close(self) -> None:
        """Drop the model and tokenizer (a learner's model lives on with its owner) and give freed memory back to
        the system; the engine cannot generate afterwards."""
        self.model = self.tokenizer = None
        gc.collect()
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # glibc keeps freed tensors below its mmap threshold resident

    def encode(self, request: Request) -> list[int]:
        """Token ids of a request's prompt (chat template applied to messages; an assistant tail is continued)."""
        ids = (self.tokenizer(request.prompt).input_ids if request.prompt is not None
               else chat_prompt_ids(self.tokenizer, request.messages))
        if not ids:
            raise UserError("a request's prompt encodes to no tokens; give it some text")
        context = getattr(self.model.config, "max_position_embeddings", None)
        if context and len(ids) >= context:
            raise UserError(f"a prompt of {len(ids)} tokens does not fit the model's context of {context}; shorten it")
        return ids

    def generate(self, requests: Sequence[Request], *, progress: bool = True) -> list[Completion]:
        """Complete every request (n samples each), longest prompts first; results keep the input order."""
        prompts = [self.encode(r) for r in requests]
        units = [
            _Unit(i, start, min(self.batch_size, r.n - start))
            for i, r in enumerate(requests)
            for start in range(0, r.n, self.batch_size)
        ]
        units.sort(key=lambda u: len(prompts[u.request]), reverse=True)
        samples: list[list[Sample | None]] = [[None] * r.n for r in requests]
        pending = [r.n for r in requests]  # samples left per request
        training = self.model.training  # a learner's model may be in train mode: generate in eval, then restore
        self.model.eval()
        try:
            with RequestProgress(len(requests), enabled=progress) as bar, self._attention():
                for row in self._decode(units, requests, prompts, bar):
                    samples[row.request_index][row.index] = self._finish(row)
                    pending[row.request_index] -= 1
                    bar.done(0, requests=int(pending[row.request_index] == 0))
        finally:
            self.model.train(training)
        return [Completion(samples=s, prompt_tokens=len(p)) for s, p in zip(samples, prompts)]  # type: ignore[misc]

    @contextlib.contextmanager
    def _attention(self):
        """For the call: shared-prefix attention where it applies (plain sdpa otherwise), and on CUDA attention
        kernels that need no per-shape planning (cuDNN's SDPA builds a plan for every new sequence length, which
        made the first pass over new lengths about 3x slower on an H100)."""
        config = self.model.config
        saved = config._attn_implementation
        if self._shares_kv():
            config._attn_implementation = shared_prefix.NAME
        try:
            if self.device.type == "cuda":
                from torch.nn.attention import SDPBackend, sdpa_kernel

                with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]):
                    yield
            else:
                yield
        finally:
            config._attn_implementation = saved

    def _shares_kv(self) -> bool:
        """Whether shared prefixes are attended from one copy: asked for, sdpa or eager attention, full-attention
        layers only, preallocated cache, no continuous batching (merged rows could have different prefixes)."""
        return (self.shared_kv and self.share_prefix and self.preallocate and not self.continuous
                and self._full_attention
                and self.model.config._attn_implementation in ("sdpa", "eager", shared_prefix.NAME))

    @torch.inference_mode()
    def _decode(self, units: list[_Unit], requests: Sequence[Request], prompts: list[list[int]], bar):
        """Decode all units, yielding each row as it finishes.

        Up to `batch_size` rows decode together; finished rows are dropped from the batch, and the next units start
        when the whole batch has finished. With `continuous` (and a plain preallocated cache) see _decode_slots.
        """
        if self.continuous and self.preallocate and self._full_attention:
            yield from self._decode_slots(units, requests, prompts, bar)
            return
        queue = deque(units)
        while queue:
            group, free = [], self.batch_size
            while queue and queue[0].count <= free:
                free -= queue[0].count
                group.append(queue.popleft())
            rows, logits, mask, cache = self._start(group, requests, prompts)
            prefix = getattr(cache, "shared_prefix", None)
            position = mask.sum(-1) + (prefix.length if prefix else 0)
            while True:
                chosen = self._advance(logits, rows, bar)
                keep = [k for k, row in enumerate(rows) if row.finish is None]
                yield from (row for row in rows if row.finish is not None)
                if not keep:
                    break
                if len(keep) < len(rows):
                    index = torch.tensor(keep, device=self.device)
                    cache.batch_select_indices(index)
                    mask, position, chosen = mask[index], position[index], chosen[index]
                    rows = [rows[k] for k in keep]
                mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
                attention, extra = mask, {}
                if prefix:  # the prefix is not in `mask`: a 4D mask of the tails
                    attention, extra = mask[:, None, None, :].bool(), {"shared_prefix": prefix}
                logits = self._forward(chosen, attention, position, cache, extra)
                position = position + 1

    def _decode_slots(self, units: list[_Unit], requests: Sequence[Request], prompts: list[list[int]], bar):
        """Continuous batching in a cache of `batch_size` row slots, every slot writing the same column each step.

        When rows finish and units wait, the freed slots are refilled in place: the waiting prompts that fit are
        prefilled together (on their own, in a small cache) and their keys and values written into those slots'
        rows, right-aligned to the current write column, the columns before them masked off for that row; no
        other row's cache is copied. A prompt longer than the write column moves the column forward (a gap the
        other rows mask). When the next write would pass the cache's capacity, the columns no live row attends to
        any more are dropped by shifting the rest left in place (compaction, one copy of the live columns), which
        the capacity chosen (the longest prompt plus twice the longest max_new_tokens) makes rare: a row spans at
        most its prompt plus its new tokens (plus any early gap), so a compaction typically frees max_new_tokens
        columns or more. Once nothing waits, finished rows are
        dropped as in batch-after-batch decoding. A slot freed while units wait keeps decoding its last token
        (ignored) until refilled, so its columns stay finite.
        """
        queue = deque(units)
        size = min(self.batch_size, sum(u.count for u in units))
        slots: list[_Row | None] = [None] * size
        longest = max(r.max_new_tokens for r in requests)
        cache = make_cache(self.model.config, max(len(p) for p in prompts) + 2 * longest)
        mask = torch.zeros((size, 0), dtype=torch.long, device=self.device)
        position = torch.zeros(size, dtype=torch.long, device=self.device)
        chosen = torch.full((size,), self.pad_id, dtype=torch.long, device=self.device)
        logits = None
        refill = self.refill or max(1, size // 8)
        while True:
            free = [k for k, row in enumerate(slots) if row is None]
            waiting = sum(u.count for u in queue)
            if waiting and free and len(free) >= min(refill, waiting, len(slots)):
                group, room = [], len(free)
                while queue and queue[0].count <= room:
                    room -= queue[0].count
                    group.append(queue.popleft())
                if group:
                    width = max(len(prompts[u.request]) for u in group)
                    column = mask.shape[1]
                    if logits is not None and max(width, column) > cache.layers[0]._keys.shape[-2]:
                        mask = self._compact(cache, slots, mask)
                        column = mask.shape[1]
                    end = max(width, column)
                    if logits is not None and end > column:  # a gap the running rows mask
                        set_length(cache, end, clear=True)
                        mask = nn.functional.pad(mask, (0, end - column))
                    place = torch.tensor(free[: len(free) - room], device=self.device)
                    new_rows, new_logits, new_mask, _ = self._start(group, requests, prompts, into=(cache, place, end))
                    if logits is None:
                        set_length(cache, end)
                        mask = mask.new_zeros((size, end))
                        logits = new_logits.new_zeros((size, new_logits.shape[1]))
                    mask[place] = nn.functional.pad(new_mask, (end - new_mask.shape[1], 0))
                    logits[place] = new_logits
                    position[place] = new_mask.sum(-1)
                    for k, row in zip(place.tolist(), new_rows):
                        slots[k] = row
            live = [k for k, row in enumerate(slots) if row is not None]
            if not live:
                return
            every = len(live) == len(slots)
            index = None if every else torch.tensor(live, device=self.device)
            picked = self._advance(logits if every else logits[index], [slots[k] for k in live], bar)
            if every:
                chosen = picked
            else:
                chosen[index] = picked
            for k in live:
                if slots[k].finish is not None:
                    yield slots[k]
                    slots[k] = None
                    position[k] = 0  # decodes its last token, ignored, until refilled
            if not queue and any(row is None for row in slots):  # nothing left to refill with: drop finished rows
                keep = [k for k, row in enumerate(slots) if row is not None]
                if not keep:
                    return
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, position, chosen, logits = mask[index], position[index], chosen[index], logits[index]
                slots = [slots[k] for k in keep]
            if mask.shape[1] + 1 > cache.layers[0]._keys.shape[-2]:
                mask = self._compact(cache, slots, mask)
            mask = torch.cat([mask, mask.new_ones((len(slots), 1))], dim=1)
            logits = self._forward(chosen, mask, position, cache, {})
            position = position + 1

    def _compact(self, cache, slots: list[_Row | None], mask: torch.Tensor) -> torch.Tensor:
        """Drop the leading columns no live row attends to any more (shifting the rest left in place); returns the
        mask without them."""
        live = [k for k, row in enumerate(slots) if row is not None]
        shift = int(mask[live].argmax(1).min()) if live else mask.shape[1]  # argmax: a row's first attended column
        if shift:
            shift_left(cache, shift)
        return mask[:, shift:]

    def _advance(self, logits: torch.Tensor, rows: list[_Row], bar) -> torch.Tensor:
        """Pick each row's next token from `logits`, append it (and its log-prob) and mark rows that finish."""
        chosen = self._pick(logits, rows)
        if any(r.request.logprobs for r in rows):
            logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0].tolist()
            for row, logprob in zip(rows, logprobs):
                row.logprob_sum += logprob
        for row, token in zip(rows, chosen.tolist()):
            row.tokens.append(token)
        self._check_finished(rows)
        bar.done(len(rows), requests=0)
        return chosen

    def _forward(self, chosen: torch.Tensor, attention: torch.Tensor, position: torch.Tensor, cache, extra: dict):
        """One decode step: the rows' chosen tokens in, the next position's logits out."""
        out = self.model(input_ids=chosen[:, None], attention_mask=attention, position_ids=position[:, None],
                         use_cache=True, **{self._cache_arg: cache}, **extra)
        return out.logits[:, -1, :].float()

    def _start(self, group: list[_Unit], requests: Sequence[Request], prompts: list[list[int]], into=None):
        """Prefill a group of units (each distinct prompt once) and expand to one row per sample (in a new cache,
        or written `into` (cache, rows, end column): see _prefill)."""
        slots: dict = {}
        distinct, slot = [], []  # the group's distinct prompts; each unit's index into them
        for b, unit in enumerate(group):
            key = tuple(prompts[unit.request]) if self.share_prefix else b
            if key not in slots:
                slots[key] = len(distinct)
                distinct.append(prompts[unit.request])
            slot.append(slots[key])
        longest = max(requests[u.request].max_new_tokens for u in group)
        expand = [slot[b] for b, u in enumerate(group) for _ in range(u.count)]
        logits, mask, cache = self._prefill(distinct, longest, expand, into)
        rows = [self._row(requests[u.request], u.request, u.start + k) for u in group for k in range(u.count)]
        return rows, logits, mask, cache

    def _prefill(self, prompts: list[list[int]], new_tokens: int, expand: list[int] | None = None, into=None):
        """Encode `prompts` into a KV cache; returns the last-position logits, the attention mask and the cache,
        one row per entry of `expand` (an index into `prompts`; default one row per prompt, in order).

        The prefix they all share (for a single prompt: all but its last token, when shared-prefix attention is on)
        is computed once. With shared-prefix attention it stays one copy, attached to the cache as `shared_prefix`,
        and the mask covers the tails only; otherwise it is copied into every row. The tails are encoded in passes
        of similar-length prompts, each at most `prefill_tokens` padded tokens (longest first), so little compute
        goes to padding and activations stay small; each pass's cache is written straight into its rows of the
        final preallocated cache (right-aligned) and freed, so the cache is never held twice. With `into`
        (cache, rows, end), a plain running cache, the rows are written into its rows `rows`, ending at column
        `end` (continuous batching's refill), and the mask covers the prompts' own columns.
        """
        expand = list(range(len(prompts))) if expand is None else expand
        kept_once = self._shares_kv() and into is None
        shared = 0
        if len(prompts) > 1 and self.share_prefix:
            shortest = min(len(p) for p in prompts)
            while shared < shortest - 1 and all(p[shared] == prompts[0][shared] for p in prompts):
                shared += 1
        elif kept_once:
            shared = len(prompts[0]) - 1
        shared = shared if shared >= MIN_SHARED_PREFIX else 0
        kept_once = kept_once and shared >= MIN_SHARED_KV
        width = max(len(p) for p in prompts) - (shared if kept_once else 0)
        order = sorted(range(len(prompts)), key=lambda b: len(prompts[b]), reverse=True)
        passes = self._passes([len(prompts[b]) - shared for b in order])
        if into is None and not kept_once and (len(passes) == 1 or not (self.preallocate and self._full_attention)):
            # one pass straight into the cache; the prefix (if any) copied into every row
            cache = (make_cache(self.model.config, width + new_tokens) if self.preallocate
                     else DynamicCache(config=self.model.config))
            if shared:
                self._encode_head(prompts[0][:shared], cache)
                cache.batch_repeat_interleave(len(prompts))
            logits, mask, cache = self._encode(prompts, shared, cache)
            if expand != list(range(len(prompts))):
                index = torch.tensor(expand, device=self.device)
                cache.batch_select_indices(index)
                logits, mask = logits[index], mask[index]
            return logits, mask, cache
        head = make_cache(self.model.config, shared)
        if shared:
            self._encode_head(prompts[0][:shared], head)
        prefix = shared_prefix.SharedPrefix.from_cache(head) if kept_once else None
        if into is None:
            cache, rows, end = make_cache(self.model.config, width + new_tokens), None, width
        else:
            cache, rows, end = into
        logits, mask = None, torch.zeros((len(expand), width), dtype=torch.long, device=self.device)
        for chunk in passes:
            group = [prompts[order[i]] for i in chunk]
            if kept_once or not shared:
                part = make_cache(self.model.config, len(group[0]) - (shared if kept_once else 0))
            else:
                part = repeat_rows(head, len(group), len(group[0]))
            part_logits, part_mask, part = self._encode(group, shared, part, prefix)
            local = {order[i]: j for j, i in enumerate(chunk)}  # prompt -> its row in this pass
            dest = [r for r, b in enumerate(expand) if b in local]
            src = torch.tensor([local[expand[r]] for r in dest], device=self.device)
            dest = torch.tensor(dest, device=self.device)
            write_rows(cache, dest if rows is None else rows[dest], part, src, end, len(expand))
            if logits is None:
                logits = part_logits.new_empty((len(expand), part_logits.shape[1]))
            logits[dest] = part_logits[src]
            mask[dest, width - part_mask.shape[1]:] = part_mask[src]
            del part
        if into is None:
            set_length(cache, end)
            cache.shared_prefix = prefix
        return logits, mask, cache

    def _passes(self, lengths: list[int]) -> list[list[int]]:
        """Split positions 0..n-1 of prompts sorted longest first into runs of at most `prefill_tokens` padded
        tokens (a longer prompt gets a pass of its own); no limit when `prefill_tokens` is None."""
        passes: list[list[int]] = []
        for i in range(len(lengths)):
            if passes and (self.prefill_tokens is None
                           or (len(passes[-1]) + 1) * lengths[passes[-1][0]] <= self.prefill_tokens):
                passes[-1].append(i)
            else:
                passes.append([i])
        return passes

    def _encode_head(self, ids: list[int], cache) -> None:
        self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True, logits_to_keep=1,
                   **{self._cache_arg: cache})

    def _encode(self, prompts: list[list[int]], shared: int, cache, prefix: shared_prefix.SharedPrefix | None = None):
        """Encode the prompts' tails after their `shared` first tokens (held in `cache`, or in `prefix`, kept once),
        left-padded to the longest, in one forward pass. The returned mask covers the cache's columns."""
        length = max(len(p) for p in prompts) - shared
        input_ids = torch.full((len(prompts), length), self.pad_id, dtype=torch.long)
        tail = torch.zeros((len(prompts), length), dtype=torch.long)
        for b, ids in enumerate(prompts):
            input_ids[b, length - len(ids) + shared:] = torch.tensor(ids[shared:])
            tail[b, length - len(ids) + shared:] = 1
        tail = tail.to(self.device)
        positions = shared + (tail.cumsum(-1) - 1).masked_fill(tail == 0, 0)
        if prefix is not None:  # a 4D mask of the tails: causal, padding excluded (the prefix is seen by all)
            if self.model.config._attn_implementation != shared_prefix.NAME:
                raise RuntimeError("shared-prefix attention is off: encode inside HFEngine._attention()")
            mask = tail
            causal = torch.ones((length, length), dtype=torch.bool, device=self.device).tril()
            extra = {"attention_mask": causal[None, None] & tail.bool()[:, None, None, :], "shared_prefix": prefix}
        else:
            mask = torch.cat([torch.ones((len(prompts), shared), dtype=torch.long, device=self.device), tail], dim=1)
            extra = {"attention_mask": mask}
        out = self.model(input_ids=input_ids.to(self.device), position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self._cache_arg: cache}, **extra)
        return out.logits[:, -1, :].float(), mask, cache

    def _row(self, request: Request, request_index: int, index: int) -> _Row:
        generator = None
        if request.temperature > 0:
            seed = request.seed if request.seed is not None else int(torch.randint(0, 2**62, ()).item())
            generator = torch.Generator().manual_seed(sample_seed(seed, index))
        return _Row(request, request_index, index, generator)

    def _pick(self, logits: torch.Tensor, rows: list[_Row]) -> torch.Tensor:
        """Next token per row: argmax for greedy rows, seeded inverse-CDF sampling with temperature/top-p otherwise."""
        sampled = [k for k, row in enumerate(rows) if row.generator is not None]
        if len(sampled) < len(rows):
            chosen = logits.argmax(dim=-1)
        if not sampled:
            return chosen
        every = len(sampled) == len(rows)  # the common case: no argmax, no copy of the sampled rows' logits
        index = None if every else torch.tensor(sampled, device=logits.device)
        temperature = torch.tensor([rows[k].request.temperature for k in sampled], device=logits.device)
        probs = torch.softmax((logits if every else logits[index]) / temperature[:, None], dim=-1)
        order = None
        top_p = torch.tensor([rows[k].request.top_p for k in sampled], device=logits.device)
        if (top_p < 1).any():
            probs, order = probs.sort(dim=-1, descending=True)
            before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
            probs = probs.masked_fill(before >= top_p[:, None], 0.0)
        cdf = probs.cumsum(dim=-1)
        u = torch.stack([torch.rand((), generator=rows[k].generator) for k in sampled]).to(logits.device)
        picked = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp(max=cdf.shape[-1] - 1)
        if order is not None:
            picked = order.gather(1, picked)
        if every:
            return picked[:, 0]
        chosen[index] = picked[:, 0]
        return chosen

    def _check_finished(self, rows: list[_Row]) -> None:
        """Mark rows ended by eos, a stop string in the newly decoded tail, or max_new_tokens."""
        tails, tail_rows = [], []
        for row in rows:
            if row.tokens[-1] in self.eos_ids:
                row.finish = "eos"
            elif row.request.stop:
                window = max(len(s) for s in row.request.stop) + 8
                tails.append(row.tokens[-window:])
                tail_rows.append(row)
        if tails:
            for row, tail in zip(tail_rows, self.tokenizer.batch_decode(tails, skip_special_tokens=True)):
                if any(s in tail for s in row.request.stop):
                    text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
                    if any(s in text for s in row.request.stop):
                        row.finish = "stop"
        for row in rows:
            if row.finish is None and len(row.tokens) >= row.request.max_new_tokens:
                row.finish = "length"

    def _finish(self, row: _Row) -> Sample:
        """Turn a finished row into a Sample: text cut before the first stop string, honest token counts."""
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        finish = row.finish or "length"
        cuts = [text.find(s) for s in row.request.stop if s in text]
        if cuts:
            text, finish = text[: min(cuts)], "stop"
        lp_sum = row.logprob_sum if row.request.logprobs else None
        lp_mean = row.logprob_sum / len(row.tokens) if row.request.logprobs else None
        return Sample(text=text, tokens=len(row.tokens), finish_reason=finish, logprob_sum=lp_sum, logprob_mean=lp_mean)
