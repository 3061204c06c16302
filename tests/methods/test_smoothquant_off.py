"""SmoothQuant with smooth: false is plain W8A8: the same int8 layers without any scale folded in."""

from __future__ import annotations

import torch

from compressor import compress
from compressor.engine.methods.smoothquant import quantize_int8_per_channel
from tests.helpers import random_tokens, tiny_llama


def test_smooth_off_is_int8_of_the_original_weights_and_smoothing_changes_them():
    ref = tiny_llama()
    plain, report = compress(tiny_llama(), [{"method": "smoothquant", "smooth": False}],
                             calibration=random_tokens(4, 32))
    smoothed, _ = compress(tiny_llama(), [{"method": "smoothquant"}], calibration=random_tokens(4, 32))
    q, scale = quantize_int8_per_channel(ref.model.layers[0].self_attn.q_proj.weight.detach())
    mod = plain.model.layers[0].self_attn.q_proj
    assert torch.equal(mod.weight, q) and torch.equal(mod.weight_scale.float(), scale)
    assert torch.equal(plain.model.layers[0].input_layernorm.weight, ref.model.layers[0].input_layernorm.weight)
    assert not torch.equal(smoothed.model.layers[0].self_attn.q_proj.weight, q)
    assert report.stages[0].config["smooth"] is False
    assert not any(r.extra.get("smoothed") for r in report.layers)
