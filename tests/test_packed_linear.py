"""The opt-in packed-weights path (engines/packed_linear.py): oneDNN runs the linear layers, close to torch's own."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from forethought.engines import Request, get_engine
from forethought.engines.hf import HFEngine
from forethought.engines.packed_linear import MAX_PACKED_ROWS
from forethought.errors import UserError


def _ops(fn) -> set[str]:
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def test_packed_weights_compute_the_linear_layers_in_onednn_close_to_torchs(tiny_model_dir):
    plain = HFEngine(str(tiny_model_dir), device="cpu", batch_size=8)
    packed = HFEngine(str(tiny_model_dir), device="cpu", batch_size=8, packed_weights=True)
    ids = torch.tensor([plain.encode(Request(prompt="Plan first, then answer: 12 + 30 ="))])
    with torch.inference_mode():
        ops = _ops(lambda: packed.model(ids))
        assert "mkldnn::_linear_pointwise" in ops and "aten::linear" not in ops
        assert "mkldnn::_linear_pointwise" not in _ops(lambda: plain.model(ids))
        want, got = plain.model(ids).logits, packed.model(ids).logits
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    long = torch.arange(MAX_PACKED_ROWS + 1)[None] % 50 + 3  # a prefill pass of more rows: torch's own product
    with torch.inference_mode():
        ops = _ops(lambda: packed.model(long))
    assert "aten::linear" in ops and "mkldnn::_linear_pointwise" not in ops
    linears = [m for m in packed.model.modules() if type(m) is torch.nn.Linear]
    assert linears and all("_packed_weight" in vars(m) for m in linears)
    sample = packed.generate([Request(prompt="Plan first:", max_new_tokens=6)], progress=False)[0].samples[0]
    assert 1 <= sample.tokens <= 6


def test_unpacking_gives_the_layers_their_own_forward_back(tiny_model_dir):
    from forethought.engines.packed_linear import pack_linears, unpack_linears

    engine = HFEngine(str(tiny_model_dir), device="cpu", batch_size=8)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert pack_linears(engine.model) == sum(type(m) is torch.nn.Linear for m in engine.model.modules())
    assert pack_linears(engine.model) == 0  # already packed: not packed twice
    unpack_linears(engine.model)
    with torch.inference_mode():
        ops = _ops(lambda: engine.model(ids))
    assert "mkldnn::_linear_pointwise" not in ops and "aten::linear" in ops
    assert not any("_packed_weight" in vars(m) for m in engine.model.modules())


def test_the_recipe_setting_reaches_the_engine_and_refuses_what_it_cannot_pack(tiny_model_dir):
    from forethought.config import validate
    from forethought.engines.settings import EngineSettings

    settings = validate(EngineSettings, {"packed_weights": True, "device": "cpu"}, "r.yaml")
    engine = get_engine(settings.kind, str(tiny_model_dir), **settings.options())
    assert any("_packed_weight" in vars(m) for m in engine.model.modules())
    with pytest.raises(UserError, match="packed_weights needs fp32 weights on a CPU"):
        HFEngine(str(tiny_model_dir), device="cpu", dtype="bfloat16", packed_weights=True)
    with pytest.raises(UserError, match="packed_weights does not apply to engine.kind=openai"):
        validate(EngineSettings, {"kind": "openai", "base_urls": ["http://a/v1"], "packed_weights": True}, "r.yaml")
