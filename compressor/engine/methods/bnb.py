"""bitsandbytes NF4 / FP4 (QLoRA) and LLM.int8(), through bitsandbytes itself.

Dettmers et al., "QLoRA: Efficient Finetuning of Quantized LLMs" (2023), https://arxiv.org/abs/2305.14314
(NF4, FP4, double quantization of the absmax constants);
Dettmers et al., "LLM.int8(): 8-bit Matrix Multiplication for Transformers at Scale" (2022),
https://arxiv.org/abs/2208.07339 (int8 vector-wise weights, fp16 outlier columns above `threshold`).

These wrap bnb.nn.Linear4bit and bnb.nn.Linear8bitLt so users get the numbers they know from
transformers' `load_in_4bit` / `load_in_8bit`. Weight bytes are the module's state dict (packed
4-bit data, absmax, quant map; int8 data and row scales).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from compressor.engine.quant import sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError, UnsupportedOnDevice

# bitsandbytes' own default block size for 4-bit quantization (one absmax per 64 weights).
BNB_BLOCKSIZE = 64
BNB_BLOCKSIZES = (64, 128, 256, 512, 1024, 2048, 4096)
# LLM.int8()'s published outlier threshold.
LLM_INT8_THRESHOLD = 6.0
COMPUTE_DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


_BNB4_ARGS = """

    Args:
        double_quant: also quantize the per-block absmax constants to 8 bits (QLoRA's double
            quantization, ~0.37 fewer bits per weight).
        blocksize: weights per absmax block: 64 (bitsandbytes' default), 128, ... 4096.
        compute_dtype: dtype of the matmul: "auto" (the model's), "float32", "bfloat16", "float16".
        targets, ignore, overrides: module selection (see StageConfig).
    """


@dataclass
class Bnb4bitConfig(StageConfig):
    __doc__ = "bitsandbytes 4-bit weights, one absmax per block." + _BNB4_ARGS

    double_quant: bool = False
    blocksize: int = BNB_BLOCKSIZE
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or type(self).__name__
        if not isinstance(self.double_quant, bool):
            raise RecipeError("double_quant", self.double_quant, "use true or false", stage)
        if self.blocksize not in BNB_BLOCKSIZES or isinstance(self.blocksize, bool):
            raise RecipeError("blocksize", self.blocksize, f"bitsandbytes supports {BNB_BLOCKSIZES}", stage)
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise RecipeError("compute_dtype", self.compute_dtype, f"choose one of {sorted(COMPUTE_DTYPES)}", stage)

    def traits(self) -> tuple[set[str], float | None]:
        # NF4 and FP4 alike run bitsandbytes' 4-bit dequantizing kernels ("nf4" in the hardware notes).
        return {"nf4"}, 4.0


@dataclass
class NF4Config(Bnb4bitConfig):
    __doc__ = "NormalFloat4 (QLoRA): 16 levels at the quantiles of N(0, 1), one absmax per block." + _BNB4_ARGS


@dataclass
class FP4Config(Bnb4bitConfig):
    __doc__ = "FP4 (bitsandbytes' E2M1 code book), one absmax per block." + _BNB4_ARGS


@dataclass
class LLMInt8Config(StageConfig):
    """LLM.int8(): int8 vector-wise weights; input columns with |x| > threshold run in 16 bits.

    Args:
        threshold: outlier threshold on activation magnitude (6.0 in the paper; 0 disables the
            mixed-precision decomposition).
        targets, ignore, overrides: module selection (see StageConfig).
    """

    threshold: float = LLM_INT8_THRESHOLD

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) or self.threshold < 0:
            raise RecipeError("threshold", self.threshold, "use a threshold >= 0 (the paper uses 6.0)",
                              self.method or type(self).__name__)

    def traits(self) -> tuple[set[str], float | None]:
        return {"int8-dynamic"}, 8.0


def _bnb():
    # bitsandbytes logs one line per 8-bit call on CPU, and one at import when the optional hub
    # `kernels` package is absent: keep its logger quiet (ENVIRONMENT.md).
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def _probe(module: nn.Module, what: str, works_on: str) -> nn.Module:
    """Run a one-token forward so a missing op fails here, with a clear error, not mid-evaluation."""
    w = next(module.parameters())
    try:
        with torch.no_grad():
            module(torch.zeros(1, module.in_features, device=w.device))
    except (NotImplementedError, RuntimeError) as e:
        raise UnsupportedOnDevice(f"{what} has no implementation on {w.device.type} in bitsandbytes "
                                  f"{_bnb().__version__} ({e}). It works on {works_on}.") from e
    return module


def bnb_linear4bit(linear: nn.Linear, quant_type: str = "nf4", double_quant: bool = False,
                   blocksize: int = BNB_BLOCKSIZE, compute_dtype: torch.dtype | None = None) -> nn.Module:
    """nn.Linear [N, K] -> bnb.nn.Linear4bit holding 4-bit NF4 / FP4 codes with one absmax per block.

    double_quant quantizes the absmax constants to 8 bits (blocks of 256), saving ~0.37 bits/weight.
    """
    bnb = _bnb()
    W, device = linear.weight.data, linear.weight.device
    compute_dtype = compute_dtype or W.dtype
    mod = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                            compute_dtype=compute_dtype, compress_statistics=double_quant,
                            quant_type=quant_type, device="meta")
    mod.weight = bnb.nn.Params4bit(W.detach().clone().cpu(), requires_grad=False, quant_type=quant_type,
                                   compress_statistics=double_quant, blocksize=blocksize)
    if linear.bias is not None:
        mod.bias = nn.Parameter(linear.bias.detach().clone().cpu(), requires_grad=False)
    mod = mod.to(device)  # quantizes (Params4bit quantizes on its first move to a device)
    # The avx512-bf16 repack path needs out_features % 32 == 0; the generic CPU path has no such limit.
    mod.support_avx512bf16_for_cpu = False
    return _probe(mod, f"bitsandbytes {quant_type.upper()}", "CPU and CUDA")


def bnb_linear8bit(linear: nn.Linear, threshold: float = LLM_INT8_THRESHOLD) -> nn.Module:
    """nn.Linear [N, K] -> bnb.nn.Linear8bitLt: int8 rows with absmax scales (SCB), fp16 outliers."""
    bnb = _bnb()
    W, device = linear.weight.data, linear.weight.device
    mod = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=linear.bias is not None,
                              has_fp16_weights=False, threshold=threshold, device="meta")
    mod.weight = bnb.nn.Int8Params(W.detach().clone().cpu(), requires_grad=False, has_fp16_weights=False)
    if linear.bias is not None:
        mod.bias = nn.Parameter(linear.bias.detach().clone().cpu(), requires_grad=False)
    mod = mod.to(device)  # quantizes to int8 + SCB
    return _probe(mod, "bitsandbytes LLM.int8()", "CPU and CUDA")


def _replace_all(ctx, build, bits: float) -> None:
    for name, linear in ctx.targets().items():
        x = torch.randn(8, linear.in_features, generator=torch.Generator().manual_seed(0)).to(linear.weight)
        with torch.no_grad():
            ref = linear(x)
            new = build(linear)
            out = new(x)
        ctx.replace(name, new)
        ctx.record(name, probe_sqnr_db=sqnr_db(ref, out), bits=bits)


def _apply_4bit(quant_type: str):
    def apply(cfg: Bnb4bitConfig, ctx) -> None:
        """Replace every targeted linear by bnb.nn.Linear4bit."""
        dtype = COMPUTE_DTYPES[cfg.compute_dtype]
        _replace_all(ctx, lambda lin: bnb_linear4bit(lin, quant_type, cfg.double_quant, cfg.blocksize, dtype),
                     bits=4)

    apply.__name__ = f"apply_{quant_type}"
    return apply


register("bnb-nf4", NF4Config)(_apply_4bit("nf4"))
register("bnb-fp4", FP4Config)(_apply_4bit("fp4"))


@register("llm-int8", LLMInt8Config)
def apply_llm_int8(cfg: LLMInt8Config, ctx) -> None:
    """Replace every targeted linear by bnb.nn.Linear8bitLt."""
    _replace_all(ctx, lambda lin: bnb_linear8bit(lin, cfg.threshold), bits=8)
