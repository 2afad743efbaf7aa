"""Continuous batching in the hf engine: finished rows' slots are refilled in place by waiting requests, and every
sample equals what batch-after-batch decoding (and, greedy, transformers' generate) gives."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache

from forethought.engines import Request
from forethought.engines import hf
from forethought.engines.kv_cache import GrowingLayer, set_length, shift_left, write_rows

from test_engine import PROMPTS, capture_tokens, reference


@pytest.fixture
def small_batch(tiny_engine):
    """The tiny engine with room for 2 rows (so requests wait for slots); settings restored afterwards."""
    saved = tiny_engine.batch_size, tiny_engine.continuous, tiny_engine.refill
    tiny_engine.batch_size = 2
    yield tiny_engine
    tiny_engine.batch_size, tiny_engine.continuous, tiny_engine.refill = saved


def texts(engine, requests, continuous: bool) -> list[list[tuple]]:
    engine.continuous = continuous
    try:
        out = engine.generate(requests, progress=False)
    finally:
        engine.continuous = False
    return [[(s.text, s.tokens, s.finish_reason) for s in c.samples] for c in out]


def test_continuous_greedy_refills_slots_and_matches_generate(small_batch, monkeypatch):
    """More requests than slots, rows of different lengths: waiting requests are prefilled while others decode,
    never more than 2 rows run, and every output equals generate and batch-after-batch decoding."""
    engine = small_batch
    lengths = [5, 9, 6, 20, 14]
    requests = [Request(prompt=p, max_new_tokens=n) for p, n in zip(PROMPTS, lengths)]
    shapes, starts = [], []
    hook = engine.model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["input_ids"].shape)), with_kwargs=True)
    start = engine._start
    monkeypatch.setattr(engine, "_start", lambda group, *a, **k: starts.append((len(shapes), len(group))) or
                        start(group, *a, **k))
    try:
        seen = capture_tokens(engine, monkeypatch)
        refilled = texts(engine, requests, True)
    finally:
        hook.remove()
    assert starts[0] == (0, 2) and sum(n for _, n in starts[1:]) == 3  # three requests joined a running batch
    assert all(at > 0 for at, _ in starts[1:])
    assert max(s[0] for s in shapes) <= 2
    for request, sample in zip(requests, refilled):
        expected = reference(engine, engine.encode(request), request.max_new_tokens)
        assert expected in seen
        assert sample[0][0] == engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert refilled == texts(engine, requests, False)


def test_continuous_seeded_sampling_equals_batch_after_batch(small_batch):
    """Seeded sampling with n > 1 (a request's samples spread over slots), top-p, stop strings and rows of
    different lengths: the same samples as batch after batch."""
    engine = small_batch
    engine.batch_size = 3
    requests = [Request(prompt=p, max_new_tokens=n, temperature=0.9, top_p=0.95, seed=7, n=k, stop=stop)
                for p, n, k, stop in zip(PROMPTS, [3, 12, 5, 9, 7], [2, 1, 3, 2, 1], [(), ("e",), (), (" t",), ()])]
    refilled = texts(engine, requests, True)
    assert refilled == texts(engine, requests, False)
    assert [len(s) for s in refilled] == [2, 1, 3, 2, 1]
    assert any(x[2] == "stop" for s in refilled for x in s)


def test_a_refilled_slot_leaves_the_other_rows_untouched(small_batch, monkeypatch):
    """A refill writes the new rows' keys and values into their own slots only, right-aligned to the write column
    (earlier columns masked), in the running cache's own buffers: no other row's cache is copied or changed."""
    engine = small_batch
    requests = [Request(prompt=p, max_new_tokens=n) for p, n in zip(PROMPTS, [4, 16, 7, 12, 5])]
    refills = []

    def spy(dest, rows, src, src_rows, end, total):
        layer = dest.layers[0]
        running = layer._keys is not None and layer.length > 0
        before = [(lay._keys.clone(), lay._values.clone(), lay._keys.data_ptr()) for lay in dest.layers] if running \
            else None
        write_rows(dest, rows, src, src_rows, end, total)
        if running:
            others = [k for k in range(layer._keys.shape[0]) if k not in rows.tolist()]
            width = src.layers[0].keys.shape[-2]
            for lay, part, (keys, values, pointer) in zip(dest.layers, src.layers, before):
                assert lay._keys.data_ptr() == pointer  # written in place, not into a copy
                assert torch.equal(lay._keys[others], keys[others]) and torch.equal(lay._values[others], values[others])
                new = part.keys if src_rows is None else part.keys[src_rows]
                assert torch.equal(lay._keys[rows, :, end - width: end], new)
            refills.append((rows.tolist(), end, width))

    monkeypatch.setattr(hf, "write_rows", spy)
    refilled = texts(engine, requests, True)
    assert refills and all(end >= width for _, end, width in refills)
    assert refilled == texts(engine, requests, False)


def test_continuous_compacts_the_cache_and_still_matches_generate(small_batch, monkeypatch):
    """Many short requests through 2 slots: the write column passes the cache's capacity, the columns no live row
    attends to are shifted out, and outputs still equal generate."""
    engine = small_batch
    requests = [Request(prompt=PROMPTS[k % len(PROMPTS)] + " " * (k % 3), max_new_tokens=6 + k % 5)
                for k in range(12)]
    shifts = []
    monkeypatch.setattr(hf, "shift_left", lambda cache, columns: shifts.append(columns) or shift_left(cache, columns))
    refilled = texts(engine, requests, True)
    assert shifts and all(s > 0 for s in shifts)
    for request, sample in zip(requests, refilled):
        expected = reference(engine, engine.encode(request), request.max_new_tokens)
        assert sample[0][0] == engine.tokenizer.decode(expected, skip_special_tokens=True)
    assert refilled == texts(engine, requests, False)


def test_continuous_refills_wait_for_enough_free_slots(small_batch, monkeypatch):
    """With refill = 2 a freed slot waits until a second one frees (or nothing more waits); outputs unchanged."""
    engine = small_batch
    engine.refill = 2
    requests = [Request(prompt=p, max_new_tokens=n) for p, n in zip(PROMPTS, [3, 11, 6, 8, 4])]
    sizes = []
    monkeypatch.setattr(hf, "write_rows", lambda dest, rows, *a: sizes.append(len(rows)) or write_rows(dest, rows, *a))
    refilled = texts(engine, requests, True)
    assert refilled == texts(engine, requests, False)
    assert sizes and all(s == 2 for s in sizes[:-1])


def test_continuous_refills_an_eighth_of_the_slots_at_a_time_by_default(tiny_engine, monkeypatch):
    """Left at None, the refill threshold is an eighth of the slots (2 of 16): refilling every freed slot cost a
    prefill pass each (BENCHMARKS.md)."""
    saved = tiny_engine.batch_size, tiny_engine.refill
    tiny_engine.batch_size, tiny_engine.refill = 16, None
    requests = [Request(prompt=PROMPTS[i % len(PROMPTS)] + f" ({i})", max_new_tokens=3 + (7 * i) % 11)
                for i in range(40)]
    sizes = []
    monkeypatch.setattr(hf, "write_rows", lambda dest, rows, *a: sizes.append(len(rows)) or write_rows(dest, rows, *a))
    try:
        refilled = texts(tiny_engine, requests, True)
        assert refilled == texts(tiny_engine, requests, False)
    finally:
        tiny_engine.batch_size, tiny_engine.refill = saved
    assert len(sizes) > 2 and all(s >= 2 for s in sizes[:-1]) and sizes[0] == 16


def _cache(values: torch.Tensor, capacity: int = 8) -> DynamicCache:
    cache = DynamicCache()
    cache.layers = [GrowingLayer(capacity)]
    cache.layers[0].update(values, -values)
    return cache


def test_write_rows_right_aligns_into_given_rows_and_zero_fills_a_new_buffer():
    dest = DynamicCache()
    dest.layers = [GrowingLayer(6)]
    a = torch.arange(1, 1 + 2 * 1 * 3 * 1, dtype=torch.float32).reshape(2, 1, 3, 1)  # 2 rows of 3 columns
    write_rows(dest, torch.tensor([2, 0]), _cache(a), None, 5, total_rows=3)
    layer = dest.layers[0]
    assert layer._keys.shape == (3, 1, 6, 1)
    assert torch.equal(layer._keys[2, 0, :, 0], torch.tensor([0.0, 0, 1, 2, 3, 0]))
    assert torch.equal(layer._keys[0, 0, :, 0], torch.tensor([0.0, 0, 4, 5, 6, 0]))
    assert not layer._keys[1].any() and torch.equal(layer._values, -layer._keys)
    b = torch.tensor([[[[7.0], [8.0]]]])  # one row, repeated into two slots
    write_rows(dest, torch.tensor([1, 2]), _cache(b), torch.tensor([0, 0]), 6, total_rows=3)
    assert torch.equal(layer._keys[1, 0, 4:, 0], torch.tensor([7.0, 8])) and layer._keys[2, 0, 4:, 0].tolist() == [7, 8]
    assert layer._keys[2, 0, 2:4, 0].tolist() == [1, 2]  # the rest of the row is as it was
    with pytest.raises(ValueError, match="do not fit"):
        write_rows(dest, torch.tensor([0]), _cache(a[:1]), None, 2, total_rows=3)


def test_set_length_and_shift_left_keep_decoding_in_place():
    cache = _cache(torch.arange(1, 7, dtype=torch.float32).reshape(2, 1, 3, 1), capacity=5)
    layer = cache.layers[0]
    buffer = layer._keys
    layer._keys[:, :, 3:] = float("nan")  # whatever an unwritten part of the buffer holds
    set_length(cache, 4, clear=True)  # a gap column: zeroed
    assert layer.keys.shape[-2] == 4 and layer._keys[:, 0, 3, 0].tolist() == [0, 0]
    shift_left(cache, 2)
    assert layer._keys is buffer and layer.length == 2
    assert layer.keys[:, 0, :, 0].tolist() == [[3, 0], [6, 0]] and torch.equal(layer.values, -layer.keys)
    keys, _ = layer.update(torch.full((2, 1, 1, 1), 9.0), torch.full((2, 1, 1, 1), 9.0))
    assert layer._keys is buffer and keys[:, 0, :, 0].tolist() == [[3, 0, 9], [6, 0, 9]]
    set_length(cache, 7)  # past the capacity: grows, keeps the filled part
    assert layer._keys.shape[-2] >= 7 and layer.keys[:, 0, :3, 0].tolist() == [[3, 0, 9], [6, 0, 9]]
