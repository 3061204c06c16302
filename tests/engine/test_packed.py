"""The packed module registry (compressor/engine/packed.py): every type a stage leaves is registered in
one place; saveable types rebuild from their metadata; bitsandbytes' state outside the state dict is
counted in the report's bytes and refused by name on load."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from compressor import compress, load_compressed, save_compressed
from compressor.engine.packed import packed_type_of, packed_types
from compressor.engine.report import weight_bytes
from compressor.errors import ModelLoadError
from tests.helpers import tiny_llama

SAVEABLE = {"QuantLinear", "Int8DynamicLinear", "FP8Linear", "LowRankLinear", "Sparse24Linear"}
# One stage per saveable type, each small enough for the tiny model.
STAGE_FOR = {"QuantLinear": {"method": "rtn", "bits": 4, "group_size": 64},
             "Int8DynamicLinear": {"method": "smoothquant"}, "FP8Linear": {"method": "fp8"},
             "LowRankLinear": {"method": "svd", "rank": 16},
             "Sparse24Linear": {"method": "magnitude", "pattern": "2:4", "storage": "compact"}}


def test_every_kernel_and_engine_type_is_registered_and_saveable():
    types = packed_types()
    assert SAVEABLE <= set(types)
    assert all(types[name].saveable and types[name].format for name in SAVEABLE)
    assert packed_type_of(nn.Linear(4, 4)) is None


@pytest.mark.parametrize("type_name", sorted(SAVEABLE))
def test_a_saveable_type_rebuilds_from_its_metadata(type_name):
    model, _ = compress(tiny_llama(), [STAGE_FOR[type_name]], calibration=torch.randint(1, 256, (4, 32)))
    mod = next(m for m in model.modules() if type(m).__name__ == type_name)
    t = packed_type_of(mod)
    empty = t.empty(t.meta(mod)).to_empty(device="cpu")
    empty.load_state_dict(mod.state_dict())
    x = torch.randn(3, mod.in_features)
    with torch.no_grad():
        assert torch.equal(empty(x), mod(x))


def test_bitsandbytes_state_is_counted_and_a_saved_bnb_model_is_refused_by_name(tmp_path):
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    model, report = compress(tiny_llama(), "nf4")
    layer = model.model.layers[0].mlp.down_proj
    qs = layer.weight.quant_state
    held = sum(t.numel() * t.element_size() for t in (*layer.parameters(), *layer.buffers()))
    assert weight_bytes(layer) == held + qs.absmax.numel() * 4 + qs.code.numel() * 4  # fp32 absmax and code book
    assert report.sanity["packed_modules"] == {"Linear4bit": 14}
    save_compressed(model, None, tmp_path / "nf4")
    with pytest.raises(ModelLoadError, match=r"14 module\(s\) such as .* are Linear4bit, which this format cannot "
                                             r"rebuild: bitsandbytes"):
        load_compressed(tmp_path / "nf4")
