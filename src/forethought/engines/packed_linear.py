"""Opt-in fp32 CPU fast path: run a model's linear layers through oneDNN with their weights packed ahead.

On a CPU without AVX-512 (an AMD EPYC, AVX2) torch's default fp32 products (MKL sgemm) read SmolLM2's weights at
5-13 GB/s at decode shapes; oneDNN with weights reordered once into its blocked layout ran them 1.5-1.8x faster at
1-37 rows (bench/bench_matmul.py, BENCHMARKS.md). Another kernel sums in another order, so logits differ in the last
bits and a greedy token can flip at a near-tie: this is why it is off by default and not used where an engine
shares a model that trains. Packing keeps a second copy of every linear weight (the original stays for anything
else that reads it).
"""

from __future__ import annotations

import torch
from torch import nn

from forethought.errors import UserError

# Rows the packed layout is tuned for: 16 ran 1-37 rows fastest of 1, 16 and 64 (bench/bench_matmul.py, EPYC).
ROWS_HINT = 16
# Inputs of more rows (prefill passes) go through torch's own product: there the packed path was slower (prefill
# 571-569 against 624-645 tokens/s at batch 16-64, bench/bench_peers.py --packed, EPYC).
MAX_PACKED_ROWS = 64


def pack_linears(model: nn.Module, rows_hint: int = ROWS_HINT) -> int:
    """Make every `nn.Linear` of `model` compute inputs of up to MAX_PACKED_ROWS rows (decode steps) through oneDNN
    with a packed copy of its weight (the weights must not change afterwards); returns how many layers were packed.
    `unpack_linears` undoes it. A model that is not fp32 on a CPU (or a torch without oneDNN) is a UserError."""
    parameter = next(model.parameters())
    if not (parameter.device.type == "cpu" and parameter.dtype == torch.float32
            and torch.backends.mkldnn.is_available()):
        raise UserError("engine.packed_weights needs fp32 weights on a CPU (drop it, or run the model in fp32 on "
                        "the CPU: engine.device=cpu without a dtype)")
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear and "forward" not in vars(module):
            module._packed_weight = torch.ops.mkldnn._reorder_linear_weight(module.weight.detach(), rows_hint)
            module.forward = _packed_forward.__get__(module)
            count += 1
    return count


def unpack_linears(model: nn.Module) -> None:
    """Give packed layers back their own forward and drop the packed copies."""
    for module in model.modules():
        if "_packed_weight" in vars(module):
            del module._packed_weight, module.forward


def _packed_forward(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    if x.numel() > MAX_PACKED_ROWS * x.shape[-1]:
        return nn.functional.linear(x, self.weight, self.bias)
    bias = None if self.bias is None else self.bias.detach()
    return torch.ops.mkldnn._linear_pointwise(x, self._packed_weight, bias, "none", [], "")
