"""A KV cache whose layers write into preallocated buffers instead of concatenating every decode step.

transformers' DynamicLayer copies the whole cache at each new token (torch.cat); at batch 64 that copy costs
about as much as the matmuls. Here each layer keeps a buffer with spare capacity (grown by doubling) and
returns views of its filled part, so a decode step writes one column.
"""

from __future__ import annotations

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
    """Whether every layer is a plain full-attention layer, so rows of two caches can be merged."""
    return all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)


def merge_rows(first: DynamicCache, second: DynamicCache, capacity: int, trim: int = 0) -> DynamicCache:
    """`first`, now holding its rows then `second`'s, right-aligned (left-padded with zeros) to the longer one.

    `trim` leading columns of the aligned result, which no row attends to, are dropped. Used by continuous
    batching to admit newly prefilled rows into a running batch; zeros (not garbage) keep masked columns finite.
    """
    layers = []
    for a, b in zip(first.layers, second.layers):
        length = max(a.keys.shape[-2], b.keys.shape[-2])
        layer = GrowingLayer(max(capacity, length - trim))
        layer.lazy_initialization(a.keys, a.values)
        for name in ("_keys", "_values"):
            x, y = getattr(a, name[1:]), getattr(b, name[1:])
            buf = x.new_zeros((x.shape[0] + y.shape[0], *x.shape[1:-2], layer.capacity, x.shape[-1]))
            for rows, src in ((slice(0, x.shape[0]), x), (slice(x.shape[0], None), y)):
                start = length - src.shape[-2] - trim  # where src's first column lands after trimming
                buf[rows, ..., max(0, start): length - trim, :] = src[..., max(0, -start):, :]
            setattr(layer, name, buf)
        layer.length = length - trim
        layer.keys, layer.values = layer._keys[..., : layer.length, :], layer._values[..., : layer.length, :]
        layers.append(layer)
    first.layers = layers
    return first
