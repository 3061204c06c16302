"""Packed module types: what stages leave in place of an nn.Linear, registered in one place for saving,
loading and the report's byte counts.

    name               defined in                  left by                          saved and loaded
    QuantLinear        kernels.modules             rtn, gptq, awq, hqq (integer)    yes
    Int8DynamicLinear  kernels.modules             smoothquant (W8A8)               yes
    FP8Linear          kernels.modules             fp8                              yes
    LowRankLinear      compressor.engine.modules   svd, svd_llm                     yes
    Sparse24Linear     compressor.engine.modules   pruning with storage: compact    yes
    Linear4bit         bitsandbytes                bnb-nf4, bnb-fp4                 no (listed, refused on load)
    Linear8bitLt       bitsandbytes                llm-int8                         no (listed, refused on load)

A saveable type describes an instance with a few integers (`meta`, by default `module.metadata()`) and
allocates an empty one from them (`empty`, by default `cls.empty(**meta)`) for `load_state_dict`.
Only types registered here can be named by a saved config: a file never chooses a class to import.
bitsandbytes keeps part of its weight data outside parameters and buffers (4-bit absmax and code
book, 8-bit row scales): `extra_bytes` counts it, so the report's bytes are what the model holds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class PackedType:
    """One module type a stage may put in place of an nn.Linear.

    Args:
        name: the name saved configs use (the class name).
        cls: the module class (matched exactly, not by subclass).
        format: what it stores, for messages ("integer weight-only", "low-rank factors", ...).
        meta: module -> the integers `empty` needs; None when the type cannot be saved.
        empty: those integers -> an empty module to fill with `load_state_dict(assign=True)`.
        extra_bytes: bytes of weight data the module holds outside its parameters and buffers.
        unsaved: why the type cannot be saved, and what to do instead (when meta is None).
    """

    name: str
    cls: type
    format: str
    meta: Callable[[nn.Module], dict] | None = None
    empty: Callable[[dict], nn.Module] | None = None
    extra_bytes: Callable[[nn.Module], int] | None = None
    unsaved: str = ""

    @property
    def saveable(self) -> bool:
        return self.meta is not None


PACKED: dict[str, PackedType] = {}
_BY_CLASS: dict[type, PackedType] = {}


def _add(cls: type, format: str, **kw) -> None:
    if cls.__name__ not in PACKED:
        t = PackedType(cls.__name__, cls, format, **kw)
        PACKED[t.name], _BY_CLASS[cls] = t, t


def _saveable(cls: type, format: str) -> None:
    _add(cls, format, meta=lambda m: m.metadata(), empty=lambda md, c=cls: c.empty(**md))


def _tensors_bytes(*tensors) -> int:
    seen, total = set(), 0
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def _bnb4_extra(module: nn.Module) -> int:
    """Linear4bit's quantization state: absmax per block, the 16-entry code book, and with double
    quantization the absmax's own absmax, code book and offset."""
    qs = getattr(module.weight, "quant_state", None)
    if qs is None:
        return 0
    nested = getattr(qs, "state2", None)
    return _tensors_bytes(qs.absmax, qs.code, getattr(qs, "offset", None),
                          *((nested.absmax, nested.code) if nested is not None else ()))


def _bnb8_extra(module: nn.Module) -> int:
    """Linear8bitLt's row scales (SCB): on the weight until the first forward, then on module.state."""
    state = getattr(module, "state", None)
    return _tensors_bytes(getattr(module.weight, "SCB", None), getattr(state, "SCB", None))


_BNB_UNSAVED = ("bitsandbytes layers keep their quantization state outside the state dict this format "
                "rebuilds; compress the original model again with the saved recipe, or use a stage whose "
                "format saves (rtn, hqq, gptq, awq: QuantLinear; fp8; smoothquant)")


def packed_types() -> dict[str, PackedType]:
    """{name: PackedType} of every registered type.

    bitsandbytes' types join once bitsandbytes has been imported (importing it takes seconds and is
    only needed once a bnb stage ran, and no model can hold its modules before that)."""
    if not PACKED:
        from compressor.engine.modules import LowRankLinear, Sparse24Linear
        from kernels.modules import FP8Linear, Int8DynamicLinear, QuantLinear

        _saveable(QuantLinear, "integer weight-only (packed q, fp16 scales and zeros)")
        _saveable(Int8DynamicLinear, "int8 weights, int8 per-token activations (W8A8)")
        _saveable(FP8Linear, "FP8 E4M3 weights with per-channel scales")
        # Its factors are nn.Linear children: a later stage that quantizes them saves them as its own type.
        _saveable(LowRankLinear, "low-rank factors (two nn.Linear)")
        # The CUDA semi-structured layout is runtime-only: a loaded model decompresses until
        # `to_semi_structured()` is called again.
        _saveable(Sparse24Linear, "compact 2:4 (values + 2-bit indices)")
    if "bitsandbytes" in sys.modules and "Linear4bit" not in PACKED:
        import bitsandbytes as bnb

        _add(bnb.nn.Linear4bit, "bitsandbytes 4-bit (NF4 / FP4)", extra_bytes=_bnb4_extra, unsaved=_BNB_UNSAVED)
        _add(bnb.nn.Linear8bitLt, "bitsandbytes LLM.int8()", extra_bytes=_bnb8_extra, unsaved=_BNB_UNSAVED)
    return PACKED


def packed_type_of(module: nn.Module) -> PackedType | None:
    """The registered type of `module` (exact class), or None."""
    packed_types()
    return _BY_CLASS.get(type(module))


def extra_weight_bytes(module: nn.Module) -> int:
    """Weight bytes held outside parameters and buffers by `module` and its submodules."""
    total = 0
    for m in module.modules():
        t = packed_type_of(m)
        if t is not None and t.extra_bytes is not None:
            total += t.extra_bytes(m)
    return total
