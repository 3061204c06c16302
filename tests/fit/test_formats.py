"""Candidate formats: names round-trip, and the bytes a format claims are the bytes the lab's packed module
stores (its state dict), for every bit width and group."""

from __future__ import annotations

import pytest
import torch

from compressor.engine.quant import pack_linear, quantize
from compressor.engine.report import state_dict_bytes
from compressor.fit.formats import Format, effective_bits, format_bytes, palette


@pytest.mark.parametrize("name", ["fp", "w2g32", "w3g64", "w4g128", "w4pc", "w8pc"])
def test_names_round_trip(name):
    assert Format.parse(name).name == name


@pytest.mark.parametrize("bad", ["w5g64", "w4", "int4", "w4g", ""])
def test_an_unknown_name_says_how_to_write_one(bad):
    with pytest.raises(ValueError, match="w<bits>g<group>"):
        Format.parse(bad)


@pytest.mark.parametrize("bits,group", [(2, 32), (3, 32), (3, 64), (4, 64), (4, -1), (8, -1), (8, 32)])
@pytest.mark.parametrize("bias", [False, True])
def test_bytes_are_what_the_packed_module_stores(bits, group, bias):
    n, k = 48, 192
    w = torch.randn(n, k)
    g = k if group == -1 else group
    q, s, z = quantize(w, bits, g)
    b = torch.randn(n, dtype=torch.float16) if bias else None
    module = pack_linear(q, s, z, bits=bits, group_size=g, bias=b)
    assert format_bytes(Format(bits, group), n, k, float_bytes=2, bias=bias) == state_dict_bytes(module)


def test_fp_bytes_follow_the_float_width_and_effective_bits_count_the_scales():
    assert format_bytes(Format(None), 10, 20, float_bytes=4) == 800
    assert effective_bits(Format(4, 64), 576) == pytest.approx(4.5)
    assert effective_bits(Format(8, -1), 576) == pytest.approx(8 + 32 / 576)


def test_a_group_of_every_column_is_per_channel_and_a_group_must_divide():
    assert Format(4, 128).for_module(128) == Format(4, -1)
    assert Format(4, 128).fits(1536) and not Format(4, 128).fits(576)
    assert {f.bits for f in palette()} == {2, 3, 4, 8}
