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
        if self.length:
            self._keys, self._values = self._keys[indices], self._values[indices]
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
