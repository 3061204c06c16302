"""What the Triton launchers share: the autotune mode (read at launch time, so it changes without reloading
modules), M buckets, the multiprocessor count, and the rules that fit a config to a weight.

    "small"  one config per key, fitted to the weight (no benchmarking): the default under the interpreter
    "full"   the real lists, benchmarked once per key (M bucket, N, K, group, bits, dtypes): the default on
             a GPU (a few seconds per layer shape and M bucket at its first call)
"""

from __future__ import annotations

import functools
import os

import torch
import triton

from kernels.triton_layout import pack_scales, plane_rows, to_gpu_words, values_per_word, word_rows

AUTOTUNE_ENV = "KERNELS_AUTOTUNE"
MODES = ("small", "full")
MAX_SPLIT_K = 64


def autotune_mode(requested: str | None = None) -> str:
    """"small" or "full": the argument, else $KERNELS_AUTOTUNE, else "small" under the interpreter and "full"."""
    mode = requested or os.environ.get(AUTOTUNE_ENV) or ("small" if interpreting() else "full")
    if mode not in MODES:
        raise ValueError(f"autotune mode {mode!r} is unknown: use one of {MODES} (argument or ${AUTOTUNE_ENV})")
    return mode


def interpreting() -> bool:
    """True when Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def m_bucket(m: int) -> int:
    """The autotune key for M rows: the next power of two, capped at 1024 (prefill tiles stop changing there)."""
    return min(triton.next_power_of_2(max(m, 1)), 1024)


@functools.lru_cache(maxsize=8)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Multiprocessors of a CUDA device (1 elsewhere: the interpreter runs one program at a time)."""
    if device.type != "cuda":
        return 1
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def fit_block_k(block_k: int, *, group_size: int, in_features: int, bits: int, minimum: int = 16) -> int:
    """BLOCK_K cut so that one K tile sits inside one group and holds whole words, and no longer than K needs."""
    if group_size != in_features:
        block_k = min(block_k, group_size & -group_size)  # the largest power of two dividing G (G % 32 == 0)
    block_k = min(block_k, max(triton.next_power_of_2(in_features), minimum))
    return max(block_k, values_per_word(bits), minimum)


def split_k(programs: int, k_tiles: int, sms: int, waves: int = 4) -> int:
    """Programs along K when the output tiles alone would leave the GPU idle: about `waves` programs per SM,
    at least two K tiles per program, a power of two up to MAX_SPLIT_K."""
    if programs >= waves * sms // 2:
        return 1
    split = min(MAX_SPLIT_K, max(1, (waves * sms) // max(programs, 1)), max(1, k_tiles // 2))
    return 1 << (split.bit_length() - 1)


def zero_output(nargs: dict) -> None:
    """Config pre-hook of split-K configs: the programs add their partial sums into a zeroed y."""
    nargs["y_ptr"].zero_()


def pinned_meta(chosen: triton.Config, split: int | None, y: torch.Tensor) -> dict:
    """The meta-parameters of a pinned launch (tests, benchmarks): `chosen` with SPLIT_K = `split` if given;
    y zeroed when programs will add into it."""
    meta = dict(chosen.kwargs)
    if split is not None:
        meta["SPLIT_K"] = split
    if meta["SPLIT_K"] > 1:
        if interpreting() and y.dtype == torch.bfloat16:
            raise ValueError("split-K adds bf16 atomically, which Triton's interpreter cannot: use fp16 there")
        y.zero_()
    return meta


def check_x(x: torch.Tensor, in_features: int, name: str) -> None:
    """Fail fast on an activation the kernels cannot take, naming the fix."""
    if x.dim() != 2 or x.shape[1] != in_features:
        raise ValueError(f"{name}: x must be 2-D [M, {in_features}], got {tuple(x.shape)}: reshape to (-1, K)")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"{name}: x is {x.dtype}; the kernels take float16, bfloat16 or float32 activations")
    if x.stride(1) != 1:
        raise ValueError(f"{name}: x's last dim must be contiguous (stride {x.stride(1)}): pass x.contiguous()")


def gpu_operands(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, *, bits: int,
                 in_features: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(words int32 [W, N], sz int32 [K // G, N]): a module's GPU layout as is, or built from canonical tensors
    (uint8 qweight [N, packed_cols], fp16 scales and zeros [N, K // G]) for a one-off call."""
    words = qweight if qweight.dtype == torch.int32 else to_gpu_words(qweight, bits, in_features)
    sz = scales if scales.dtype == torch.int32 else pack_scales(scales, zeros)
    return words, sz


def launch_args(name: str, x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                zeros: torch.Tensor | None, perm: torch.Tensor | None, bias: torch.Tensor | None, *, bits: int,
                group_size: int, in_features: int, poison: bool) -> tuple[torch.Tensor, dict]:
    """(y [M, N], the keyword arguments both kernels take): x checked, the GPU operands (gpu_operands), dummies
    for absent tensors, y NaN-filled when `poison`."""
    check_x(x, in_features, name)
    words, sz = gpu_operands(qweight, scales, zeros, bits=bits, in_features=in_features)
    m, n = x.shape[0], words.shape[1]
    y = torch.full((m, n), float("nan"), dtype=x.dtype, device=x.device) if poison else \
        torch.empty((m, n), dtype=x.dtype, device=x.device)
    args = {"x_ptr": x, "w_ptr": words, "sz_ptr": sz, "perm_ptr": words if perm is None else perm,
            "bias_ptr": sz if bias is None else bias, "y_ptr": y, "M": m, "N": n, "K": in_features,
            "GROUP": group_size, "KW": plane_rows(bits, in_features) or word_rows(bits, in_features),
            "PLANE": plane_rows(bits, in_features) * words.stride(0),
            "stride_xm": x.stride(0), "stride_wk": words.stride(0), "stride_ym": y.stride(0),
            "BITS": bits, "HAS_PERM": perm is not None, "HAS_BIAS": bias is not None}
    return y, args
