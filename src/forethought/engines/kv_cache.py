"""A KV cache whose layers write into preallocated buffers instead of concatenating every decode step.

transformers' DynamicLayer copies the whole cache at each new token (torch.cat); at batch 64 that copy costs
about as much as the matmuls. Here each layer keeps a buffer with spare capacity (grown by doubling) and
returns views of its filled part, so a decode step writes one column.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """A full-attention cache layer backed by a buffer of `capacity` positions; `keys`/`values` are views."""

    def __init__(self, capacity: int = 0) -> None:
        super().__init__()
        self.capacity, self.length = capacity, 0
        self._keys = self._values = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        need = self.length + key_states.shape[-2]
        if self._keys is None or need > self._keys.shape[-2]:
            self._grow(key_states, value_states, max(need, 2 * self.length, self.capacity))
        self._keys[..., self.length:need, :] = key_states
        self._values[..., self.length:need, :] = value_states
        self.length = need
        self.keys, self.values = self._keys[..., :need, :], self._values[..., :need, :]
        return self.keys, self.values

    def _grow(self, key_states: torch.Tensor, value_states: torch.Tensor, capacity: int) -> None:
        def bigger(old, new):
            buf = new.new_empty((*new.shape[:-2], capacity, new.shape[-1]))
            if old is not None and self.length:
                buf[..., : self.length, :] = old[..., : self.length, :]
            return buf

        self._keys, self._values = bigger(self._keys, key_states), bigger(self._values, value_states)

    def get_seq_length(self) -> int:
        return self.length

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.length:  # copy only the filled columns into a buffer of the same capacity
            def select(buf):
                out = buf.new_empty((len(indices), *buf.shape[1:]))
                out[..., : self.length, :] = buf[indices, ..., : self.length, :]
                return out

            self._keys, self._values = select(self._keys), select(self._values)
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.length:
            self._keys = self._keys.repeat_interleave(repeats, dim=0)
            self._values = self._values.repeat_interleave(repeats, dim=0)
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]

    def crop(self, tokens_to_remove: int) -> None:
        if tokens_to_remove > 0:
            raise ValueError("crop takes a negative number of tokens to remove")
        if tokens_to_remove and self.length:
            self.length = max(0, self.length + tokens_to_remove)
            self.keys, self.values = self._keys[..., : self.length, :], self._values[..., : self.length, :]

    def reset(self) -> None:
        self._keys = self._values = None
        self.length = 0
        super().reset()


def make_cache(config, capacity: int) -> DynamicCache:
    """A DynamicCache for `config` whose full-attention layers are GrowingLayers sized for `capacity` positions.

    Layers of any other kind (sliding windows...) stay as transformers builds them.
    """
    cache = DynamicCache(config=config)
    cache.layers = [GrowingLayer(capacity) if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def mergeable(cache: DynamicCache) -> bool:
    """Whether every layer is a plain full-attention layer and no prefix is kept apart, so rows can be merged."""
    plain = all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)
    return plain and getattr(cache, "shared_prefix", None) is None


def merge_rows(caches: Sequence[DynamicCache], capacity: int, trim: int = 0) -> DynamicCache:
    """One cache holding the rows of `caches` in order, each right-aligned (left-padded with zeros) to the longest.

    `trim` leading columns of the aligned result, which no row attends to, are dropped. Used to join prefill
    passes of different prompt lengths, and by continuous batching to admit newly prefilled rows into a running
    batch; zeros (not garbage) keep masked columns finite. The first cache is reused as the container.
    """
    layers = []
    for parts in zip(*(c.layers for c in caches)):
        length = max(p.keys.shape[-2] for p in parts)
        layer = GrowingLayer(max(capacity, length - trim))
        layer.lazy_initialization(parts[0].keys, parts[0].values)
        for name in ("keys", "values"):
            first = getattr(parts[0], name)
            rows = sum(getattr(p, name).shape[0] for p in parts)
            buf = first.new_zeros((rows, *first.shape[1:-2], layer.capacity, first.shape[-1]))
            row = 0
            for part in parts:
                src = getattr(part, name)
                start = length - src.shape[-2] - trim  # where src's first column lands after trimming
                buf[row: row + src.shape[0], ..., max(0, start): length - trim, :] = src[..., max(0, -start):, :]
                row += src.shape[0]
            setattr(layer, "_" + name, buf)
        layer.length = length - trim
        layer.keys, layer.values = layer._keys[..., : layer.length, :], layer._values[..., : layer.length, :]
        layers.append(layer)
    merged = caches[0]
    merged.layers = layers
    return merged


def repeat_rows(cache: DynamicCache, repeats: int, capacity: int) -> DynamicCache:
    """A new cache with `cache`'s rows each repeated `repeats` times, in GrowingLayers of `capacity` positions
    (the source is left as it is, so one encoded prefix can seed several prefill passes)."""
    layers = []
    for old in cache.layers:
        layer = GrowingLayer(max(capacity, old.keys.shape[-2]))
        if old.keys is not None and old.keys.numel():
            layer.update(old.keys.repeat_interleave(repeats, dim=0), old.values.repeat_interleave(repeats, dim=0))
        layers.append(layer)
    new = copy.copy(cache)
    new.layers = layers
    return new
