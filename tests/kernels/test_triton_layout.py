"""The GPU runtime layout (kernels/triton_layout.py), the config rules the launchers share, and a QuantLinear
holding the layout: exact round trips, the bit positions drawn in the docstring, bytes held, a canonical
state dict, and the Triton plan against the reference (under TRITON_INTERPRET=1 on CPU).
"""

import importlib.util

import pytest
import torch

from kernels import triton_layout
from kernels.modules import QuantLinear
from kernels.pack import pack, packed_cols
from kernels.reference import qmatmul_ref
from tests.kernels.test_pack_reference import _quantized, _random_q, sqnr_db

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("k", [1, 13, 32, 100, 576])
def test_gpu_words_round_trip_exact(bits, k):
    q = _random_q(5, k, bits, seed=bits * 7 + k)
    packed = pack(q, bits)
    words = triton_layout.to_gpu_words(packed, bits, k)
    assert words.dtype == torch.int32 and words.shape == (triton_layout.word_rows(bits, k), 5)
    assert torch.equal(triton_layout.from_gpu_words(words, bits, k), packed)


def test_rows_pad_to_whole_chunks_of_32_values():
    words = triton_layout.to_gpu_words(pack(_random_q(3, 100, 4, seed=1), 4), 4, 100)  # 4 chunks, the last short
    assert words.shape == (16, 3)  # 4 word rows a chunk at 4 bits
    zero = triton_layout.to_gpu_words(pack(torch.zeros(3, 100, dtype=torch.uint8), 4), 4, 100)
    assert not zero.any()  # padding is zeros


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_a_chunk_is_dealt_round_robin_over_its_word_rows(bits):
    q = _random_q(1, 32, bits, seed=bits)
    words = triton_layout.to_gpu_words(pack(q, bits), bits, 32).long() & 0xFFFFFFFF
    r_count, v = bits, 32 // bits  # R word rows of V fields
    assert words.shape == (r_count, 1)
    for r in range(r_count):  # field i of row r: q[R*i + r], so field i of the R rows covers R consecutive values
        assert int(words[r, 0]) == sum(int(q[0, r_count * i + r]) << (bits * i) for i in range(v)), r


def test_3bit_planes_hold_ten_fields_each_and_the_last_two_values_in_their_top_bits():
    q = (torch.arange(64, dtype=torch.uint8) * 5 % 8).reshape(1, 64)  # two chunks, every value 0..7
    words = triton_layout.to_gpu_words(pack(q, 3), 3, 64).long() & 0xFFFFFFFF
    p = triton_layout.plane_rows(3, 64)
    assert words.shape == (3 * p, 1) and p == 2
    for c in range(2):
        v = [int(t) for t in q[0, 32 * c:32 * c + 32]]
        planes = [int(words[j * p + c, 0]) for j in range(3)]
        for j in range(3):
            assert planes[j] & 0x3FFFFFFF == sum(v[10 * j + i] << (3 * i) for i in range(10))
        u, w = v[30], v[31]
        assert planes[0] >> 30 == u & 3 and (planes[1] >> 30) & 1 == u >> 2
        assert planes[1] >> 31 == w & 1 and planes[2] >> 30 == w >> 1
    assert words.numel() * 4 == packed_cols(64, 3)  # exactly 3 bits a value


def test_scale_and_zero_share_one_word_and_view_back_exactly():
    _, s, z, _ = _quantized(6, 128, 4, 32, seed=2)
    sz = triton_layout.pack_scales(s, z)
    assert sz.dtype == torch.int32 and sz.shape == (4, 6)
    assert int(sz[1, 2]) & 0xFFFF == int(s[2, 1].view(torch.int16)) & 0xFFFF  # the scale's bits low
    scales, zeros = triton_layout.scale_views(sz)
    assert torch.equal(scales, s) and torch.equal(zeros, z)
    assert scales.data_ptr() == sz.data_ptr()  # views: no second copy


def test_unsupported_groups_are_named():
    assert triton_layout.unsupported_reason(4, 128, 4096) is None
    assert triton_layout.unsupported_reason(3, 100, 100) is None  # per channel, any K
    assert triton_layout.unsupported_reason(4, 96, 576) is None
    assert "group_size=16" in triton_layout.unsupported_reason(4, 16, 64)


@needs_triton
def test_block_k_fits_the_group_and_split_k_fills_the_gpu():
    from kernels.triton_config import fit_block_k, m_bucket, split_k

    assert fit_block_k(256, group_size=32, in_features=4096, bits=4) == 32
    assert fit_block_k(256, group_size=96, in_features=576, bits=4) == 32  # the largest power of two dividing 96
    assert fit_block_k(256, group_size=4096, in_features=4096, bits=4) == 256  # per channel: any tile
    assert fit_block_k(256, group_size=64, in_features=64, bits=4) == 64  # never longer than K needs
    assert fit_block_k(16, group_size=128, in_features=4096, bits=2) == 16
    assert fit_block_k(16, group_size=128, in_features=4096, bits=3, minimum=32) == 32  # whole 3-bit chunks
    assert [m_bucket(m) for m in (1, 2, 3, 16, 17, 5000)] == [1, 2, 4, 16, 32, 1024]
    assert split_k(programs=64, k_tiles=64, sms=132) == 8  # 64 n blocks on 132 SMs: about 4 programs an SM
    assert split_k(programs=1024, k_tiles=64, sms=132) == 1  # the output tiles fill the GPU already
    assert split_k(programs=8, k_tiles=4, sms=132) == 2  # at least two K tiles a program


@needs_triton
@pytest.mark.parametrize("m,bm", [(2, 16), (16, 16), (40, 64), (200, 128), (4096, 256)])
def test_gemm_configs_follow_the_m_bucket(m, bm):
    from kernels.triton_gemm import FULL, _bucket_list, fitted_configs

    args = {"M": m, "N": 4096, "K": 4096, "BITS": 4, "GROUP": 128, "x_ptr": torch.empty(0)}
    configs = fitted_configs(_bucket_list(FULL, m if m < 1024 else 1024), args)
    assert configs and all(c.kwargs["BLOCK_K"] <= 128 for c in configs)
    assert max(c.kwargs["BLOCK_M"] for c in configs) == bm  # decode batches 16-row tiles, prefill up to 256


def _module(bits, g, n=24, k=96, act_order=False, bias=True, seed=0):
    q, s, z, perm = _quantized(n, k, bits, g, seed=seed, act_order=act_order)
    b = torch.randn(n).half() if bias else None
    return QuantLinear.from_quantized(q, s, z, bits=bits, group_size=g, bias=b, perm=perm)


@needs_triton
@pytest.mark.parametrize("bits,g,act_order", [(4, 32, True), (3, 96, False), (2, 32, False)])
def test_module_in_the_gpu_layout_matches_reference_and_saves_canonical(bits, g, act_order):
    mod = _module(bits, g, act_order=act_order)
    before = {k: v.clone() for k, v in mod.state_dict().items()}
    x = torch.randn(3, 96).half()
    ref = qmatmul_ref(x.float(), mod.qweight, mod.scales, mod.zeros, bits=bits, group_size=g, in_features=96,
                      perm=mod.perm, bias=mod.bias.float())
    mod._prepare_gpu()  # what the first CUDA forward does (the kernels run in the interpreter here)
    assert mod.qweight.dtype == torch.int32 and mod.qweight.shape[1] == 24
    assert torch.equal(mod.scales, before["scales"]) and torch.equal(mod.zeros, before["zeros"])  # views of sz
    y = mod(x)
    assert mod.kernel_path == "triton-gemm" and sqnr_db(y, ref) > 60
    assert mod(x[:1]).shape == (1, 24) and mod.kernel_path == "triton-gemv"
    after = mod.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) and after[k].is_contiguous() for k in before)
    mod.half()  # any move drops the runtime layout: canonical again
    assert mod.qweight.dtype == torch.uint8 and mod.scales.is_contiguous() and not mod.gpu_layout
    assert all(torch.equal(t, before[k]) for k, t in mod.state_dict().items())


@needs_triton
def test_gpu_layout_holds_the_canonical_bytes():
    def held(m):
        seen = {(t.data_ptr(), t.dtype, tuple(t.shape)): t for t in m.buffers()}
        return sum(t.numel() * t.element_size() for t in seen.values())

    for bits, k in ((4, 96), (2, 96), (8, 96), (3, 128)):
        mod = _module(bits, 32, k=k, bias=False)
        stored = held(mod)
        mod._prepare_gpu()
        assert held(mod) == stored, bits  # whole words; 3-bit planes the same 12 bytes per 32 values


@needs_triton
def test_module_traces_with_torch_compile_through_the_custom_op():
    mod = _module(4, 32)
    mod._prepare_gpu()
    x = torch.randn(2, 96).half()
    eager = mod(x)
    compiled = torch.compile(mod, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), eager, rtol=0, atol=0)
