"""Shared-prefix attention: a prefix that every row of a batch shares is cached once, not once per row.

When many samples continue one prompt, or prompts that open with the same worked demonstrations, a plain KV cache
holds a copy of the prefix per row and every decode step reads all the copies. Here the prefix's keys and values
are kept once: each attention call scores all rows' queries against them in one matmul, scores each row's own tail
separately, and joins the two under one softmax (the "cascade" or Hydragen decomposition). It is registered with
transformers as the attention implementation `NAME`, which is plain sdpa whenever no prefix is passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

NAME = "forethought_shared_prefix"


@dataclass
class SharedPrefix:
    """Keys and values of a prefix every row shares: per layer, [kv_heads, length, head_dim]."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int

    @classmethod
    def from_cache(cls, cache) -> SharedPrefix:
        """The prefix held by a one-row cache."""
        keys = [layer.keys[0].contiguous() for layer in cache.layers]
        values = [layer.values[0].contiguous() for layer in cache.layers]
        return cls(keys, values, keys[0].shape[-2])


def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, shared_prefix=None, **kwargs):
    """Attention over `shared_prefix` (seen by every query) then the rows' own keys under `attention_mask`
    ([batch, 1, queries, keys], True = attend); sdpa when there is no prefix. Returns [batch, queries, heads, dim]."""
    if shared_prefix is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if kwargs.get("sliding_window") or kwargs.get("softcap"):
        raise ValueError("shared-prefix attention supports full attention layers only")
    batch, heads, queries, dim = query.shape
    kv_heads = key.shape[1]
    groups = heads // kv_heads
    scaling = dim**-0.5 if scaling is None else scaling
    q = query.reshape(batch, kv_heads, groups * queries, dim)  # query heads grouped by the kv head they read
    head_k, head_v = shared_prefix.keys[module.layer_idx], shared_prefix.values[module.layer_idx]
    head = torch.matmul(q.transpose(0, 1).reshape(kv_heads, -1, dim), head_k.transpose(1, 2)).float() * scaling
    head = head.view(kv_heads, batch, groups * queries, -1)  # [kv_heads, batch, groups*queries, prefix]
    tail = torch.matmul(q, key.transpose(2, 3)).float() * scaling  # [batch, kv_heads, groups*queries, keys]
    if attention_mask is not None:
        shape = tail.shape
        tail = tail.view(batch, kv_heads, groups, queries, -1).masked_fill(~attention_mask[:, :, None], -torch.inf)
        tail = tail.view(shape)
    top = torch.maximum(head.amax(-1).transpose(0, 1), tail.amax(-1))  # [batch, kv_heads, groups*queries]
    head = (head - top.transpose(0, 1)[..., None]).exp_()
    tail = (tail - top[..., None]).exp_()
    total = head.sum(-1).transpose(0, 1) + tail.sum(-1)
    from_head = torch.matmul(head.view(kv_heads, -1, head.shape[-1]).to(head_v.dtype), head_v)
    out = torch.matmul(tail.to(value.dtype), value)  # [batch, kv_heads, groups*queries, dim], contiguous
    out += from_head.view(kv_heads, batch, groups * queries, dim).transpose(0, 1)
    out /= total[..., None].to(out.dtype)
    return out.view(batch, heads, queries, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(NAME, attention)
AttentionMaskInterface.register(NAME, sdpa_mask)
