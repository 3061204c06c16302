"""The CUDA path on real hardware: QuantLinear takes the Triton kernels for fp16/bf16/fp32 activations, FP8
takes _scaled_mm, bf16 split-K adds atomically, offsets past 2**31 elements stay right, and a CUDA graph
replays a layer. Skipped without CUDA; benchmarks/gpu_check.py runs the same checks at model sizes.
"""

import importlib.util

import pytest
import torch

from kernels.modules import FP8Linear, QuantLinear
from kernels.reference import qmatmul_ref
from tests.kernels.test_pack_reference import _quantized, sqnr_db

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
]
MIN_SQNR = {torch.float32: 90, torch.float16: 55, torch.bfloat16: 40}


@pytest.fixture(autouse=True)
def _one_config_per_key(monkeypatch):
    monkeypatch.setenv("KERNELS_AUTOTUNE", "small")  # compiles, no benchmarking: these tests check numbers


def _cuda_module(bits, g, n, k, act_order, bias=True, seed=0):
    q, s, z, perm = _quantized(n, k, bits, g, seed=seed, act_order=act_order)
    b = torch.randn(n).half() if bias else None
    return QuantLinear.from_quantized(q, s, z, bits=bits, group_size=g, bias=b, perm=perm).cuda()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m", [1, 5, 64, 300])
def test_quantlinear_on_cuda_takes_triton(bits, dtype, m):
    n, k, g = 264, 576, 64  # SmolLM2's hidden size; N not a multiple of any block
    mod = _cuda_module(bits, g, n, k, act_order=bits == 4, seed=bits + m)
    x = torch.randn(m, k, device="cuda", dtype=dtype)
    with torch.no_grad():
        y = mod(x)
    assert mod.kernel_path == ("triton-gemv" if m == 1 else "triton-gemm")
    sd = mod.state_dict()
    ref = qmatmul_ref(x.float(), sd["qweight"], sd["scales"], sd["zeros"], bits=bits, group_size=g, in_features=k,
                      perm=sd.get("perm"), bias=mod.bias.float())
    assert y.dtype == dtype and sqnr_db(y, ref) > MIN_SQNR[dtype]


@pytest.mark.parametrize("kernel", ["qgemv", "qgemm"])
def test_bf16_split_k_adds_atomically(kernel):
    from kernels import triton_gemm, triton_gemv
    from kernels.pack import pack

    fn = getattr(triton_gemv if kernel == "qgemv" else triton_gemm, kernel)
    q, s, z, _ = _quantized(512, 4096, 4, 128, seed=3)
    qw, s, z = pack(q, 4).cuda(), s.cuda(), z.cuda()
    x = torch.randn(1 if kernel == "qgemv" else 8, 4096, device="cuda", dtype=torch.bfloat16)
    y = fn(x, qw, s, z, bits=4, group_size=128, in_features=4096, split_k=8)
    ref = qmatmul_ref(x.float(), qw, s, z, bits=4, group_size=128, in_features=4096)
    assert sqnr_db(y, ref) > 38  # eight bf16 roundings of partial sums


def test_offsets_past_2_31_elements():
    from kernels.pack import pack
    from kernels.triton_gemm import qgemm

    if torch.cuda.get_device_properties(0).total_memory < 24 * 2**30:
        pytest.skip("needs ~9 GB of GPU memory")
    m, n, k = 65600, 32768, 64  # y has 2.15e9 elements: int32 offsets wrap past row 65536
    q, s, z, _ = _quantized(n, k, 4, 64, seed=4)
    qw, s, z = pack(q, 4).cuda(), s.cuda(), z.cuda()
    x = torch.randn(m, k, device="cuda", dtype=torch.float16)
    y = qgemm(x, qw, s, z, bits=4, group_size=64, in_features=k)
    tail = slice(m - 64, m)
    ref = qmatmul_ref(x[tail].float(), qw, s, z, bits=4, group_size=64, in_features=k)
    assert sqnr_db(y[tail], ref) > 55


def test_fp8_takes_scaled_mm_where_the_gpu_has_fp8():
    w = torch.randn(256, 512, device="cuda")
    scale = w.abs().amax(1) / 448
    mod = FP8Linear.from_quantized((w / scale[:, None]).to(torch.float8_e4m3fn), scale)
    x = torch.randn(4, 512, device="cuda", dtype=torch.bfloat16)
    y = mod(x)
    expected = "cuda-scaled-mm" if torch.cuda.get_device_capability() >= (8, 9) else "reference"
    assert mod.kernel_path == expected
    assert sqnr_db(y, x.float() @ w.T) > 25  # e4m3 weights and activations


def test_cuda_graph_replays_a_layer():
    mod = _cuda_module(4, 128, 1024, 1024, act_order=False)
    x = torch.randn(1, 1024, device="cuda", dtype=torch.float16)
    with torch.no_grad():
        eager = mod(x)  # the first call builds the layout and autotunes: never inside a capture
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = mod(x)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.cuda.synchronize()
    # split-K adds in whatever order the programs finish: equal up to a rounding of the partial sums
    torch.testing.assert_close(out, mod(x), rtol=2e-3, atol=2e-3)
    assert not torch.allclose(out, eager)


def test_semi_structured_support_follows_torchs_shape_table():
    from torch.sparse import to_sparse_semi_structured

    from kernels.dispatch import semi_structured_supported

    dev = torch.device("cuda")
    ok = semi_structured_supported(dev, (256, 512), torch.float16)
    assert ok == (torch.cuda.get_device_capability()[0] >= 8)
    assert not semi_structured_supported(dev, (250, 512), torch.float16)  # rows not a multiple of 32
    if ok:
        w = torch.randn(256, 512, device="cuda", dtype=torch.float16)
        mask = torch.zeros(256, 128, 4, device="cuda", dtype=torch.bool)
        mask.scatter_(2, w.abs().reshape(256, 128, 4).topk(2, dim=2).indices, True)
        pruned = w * mask.reshape(256, 512)
        x = torch.randn(16, 512, device="cuda", dtype=torch.float16)
        y = torch.nn.functional.linear(x, to_sparse_semi_structured(pruned))
        assert sqnr_db(y, x.float() @ pruned.float().T) > 50
