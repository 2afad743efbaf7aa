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
    """Whether every layer is a plain full-attention layer and no prefix is kept apart, so rows can be written
    into another cache's rows (see write_rows)."""
    plain = all(type(layer) in (DynamicLayer, GrowingLayer) for layer in cache.layers)
    return plain and getattr(cache, "shared_prefix", None) is None


def write_rows(dest: DynamicCache, rows: torch.Tensor, src: DynamicCache, src_rows: torch.Tensor | None, end: int,
               total_rows: int) -> None:
    """Copy `src`'s rows (`src_rows` picks or repeats them; None: all, in order) into `dest`'s GrowingLayers at
    `rows`, right-aligned so that their last column lands at column `end - 1`; nothing else of `dest` is touched.

    A layer with no buffer yet gets one of `total_rows` rows and its capacity, zero-filled so that columns no
    row writes (left padding, columns of a refilled slot before its prompt) hold finite values under the mask.
    `dest`'s lengths are left as they are (see set_length). Used to join prefill passes into one preallocated
    cache without a second copy of it, and by continuous batching to refill freed slots in place.
    """
    for target, part in zip(dest.layers, src.layers):
        if target._keys is None:
            target.lazy_initialization(part.keys, part.values)
            shape = (total_rows, *part.keys.shape[1:-2], max(target.capacity, end), part.keys.shape[-1])
            target._keys, target._values = part.keys.new_zeros(shape), part.values.new_zeros(shape)
        width = part.keys.shape[-2]
        if width > end or end > target._keys.shape[-2]:
            raise ValueError(f"{width} columns do not fit before column {end} of a cache of {target._keys.shape[-2]}")
        for buf, new in ((target._keys, part.keys), (target._values, part.values)):
            buf[rows, ..., end - width: end, :] = new if src_rows is None else new[src_rows]


def set_length(cache: DynamicCache, length: int, clear: bool = False) -> None:
    """Set the filled length of `cache`'s GrowingLayers (growing them if needed): the next token is written at
    column `length`. With `clear`, columns added past the old length are zeroed (finite under the caller's mask:
    a gap no row wrote)."""
    for layer in cache.layers:
        if length > layer._keys.shape[-2]:
            layer._grow(layer._keys, layer._values, max(length, 2 * layer._keys.shape[-2]))
        if clear and length > layer.length:
            layer._keys[..., layer.length: length, :] = 0
            layer._values[..., layer.length: length, :] = 0
        layer.length = length
        layer.keys, layer.values = layer._keys[..., :length, :], layer._values[..., :length, :]


def shift_left(cache: DynamicCache, columns: int) -> None:
    """Drop `cache`'s first `columns` columns in every row, moving the rest to the front of the same buffers
    (one layer's filled part is copied at a time); the filled length shrinks by `columns`."""
    for layer in cache.layers:
        keep = layer.length - columns
        for buf in (layer._keys, layer._values):
            buf[..., :keep, :] = buf[..., columns: layer.length, :].clone()
    set_length(cache, cache.layers[0].length - columns)


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
