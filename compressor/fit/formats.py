"""The formats a module can be given, and what each one stores.

A format is RTN integer weight-only quantization (bits x group size) in the lab's packed format
(docs/architecture.md "Weight format"), or `fp`: the module left as it is. Bytes are what the packed
module's state dict holds, never a bit width times a parameter count:

    qweight  N x packed_cols(K, bits)  uint8   (3-bit packs 8 values in 3 bytes)
    scales   N x K/G                   fp16
    zeros    N x K/G                   fp16
    bias     N                         the model's float width (when the module has one)

so "w4 g64" is 4 + 2 * 16 / 64 = 4.5 bits a weight, "w8 per-channel" 8 + 32 / K.

The default palette holds what runs on a native kernel (kernels/cpu_native.py: int4pack for 2/3/4 bits
at groups of 32-256, int8pack for per-channel 8-bit; the Triton path takes the same groups): 8-bit
with groups would fall back to the slow reference path, and 2-bit per channel is never worth its
bytes. A group is a candidate only when it divides in_features (no fallback group: a format here is
exactly what the module gets).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kernels.pack import packed_cols

FP = "fp"
SCALE_ZERO_BYTES = 2 * 2  # one fp16 scale and one fp16 zero per group and output channel


@dataclass(frozen=True, order=True)
class Format:
    """One candidate: `bits` and `group_size` (-1 = one group per output channel), or bits None = fp."""

    bits: int | None
    group_size: int = -1

    @property
    def name(self) -> str:
        """"w4g64", "w8pc" (per channel), "fp" (left as it is): the map's and the heatmap's column names."""
        if self.bits is None:
            return FP
        return f"w{self.bits}" + ("pc" if self.group_size == -1 else f"g{self.group_size}")

    @property
    def is_fp(self) -> bool:
        return self.bits is None

    @classmethod
    def parse(cls, name: str) -> Format:
        """The inverse of `name`; ValueError naming the accepted spellings."""
        if name == FP:
            return cls(None)
        m = re.fullmatch(r"w([2348])(?:g(\d+)|(pc))", name.strip())
        if not m:
            raise ValueError(f"format {name!r} is not known: write w<bits>g<group> (w4g64), w<bits>pc "
                             "(per channel, w8pc) or fp")
        return cls(int(m.group(1)), -1 if m.group(3) else int(m.group(2)))

    def group_for(self, in_features: int) -> int:
        return in_features if self.group_size == -1 else self.group_size

    def for_module(self, in_features: int) -> Format:
        """The same format as a module of `in_features` stores it: a group of all K columns is per channel."""
        return Format(self.bits, -1) if self.group_size == in_features else self

    def fits(self, in_features: int) -> bool:
        """True when the group divides in_features (fp always fits)."""
        return self.is_fp or in_features % self.group_for(in_features) == 0

    def stage_fields(self) -> dict:
        """The RTN stage fields that give a module this format (fp has none: it is skipped)."""
        return {} if self.is_fp else {"bits": self.bits, "group_size": self.group_size}


# Scored, shown in the heatmap, but not given by the allocator unless asked (`exclude=()`, CLI `--exclude ''`):
# on SmolLM2-135M the fit at uniform w4g64's bytes gave per-channel 4-bit to most gate/up projections and
# kept 38 % arithmetic exact match where the same fit without it kept 49 % (paired difference +2 to +20
# points), a loss that neither the Fisher score nor the KL on text shows (docs/fit.md, "Arithmetic").
NOT_OFFERED: tuple[str, ...] = ("w4pc",)

# bits -> groups in the default palette (see the module docstring for why)
DEFAULT_PALETTE: dict[int, tuple[int, ...]] = {2: (32, 64, 128), 3: (32, 64, 128), 4: (32, 64, 128, -1), 8: (-1,)}


def palette(spec: dict[int, tuple[int, ...]] | None = None) -> list[Format]:
    """The quantized formats of a palette {bits: groups}, in a stable order (bits, then group)."""
    spec = DEFAULT_PALETTE if spec is None else spec
    return sorted(Format(b, g) for b, groups in spec.items() for g in groups)


def format_bytes(fmt: Format, out_features: int, in_features: int, *, float_bytes: int, bias: bool = False) -> int:
    """Bytes the module stores in `fmt` (the packed state dict; fp: the weight at `float_bytes`)."""
    n, k = out_features, in_features
    extra = n * float_bytes if bias else 0
    if fmt.is_fp:
        return n * k * float_bytes + extra
    groups = k // fmt.group_for(k)
    return n * packed_cols(k, fmt.bits) + n * groups * SCALE_ZERO_BYTES + extra


def effective_bits(fmt: Format, in_features: int) -> float:
    """Stored bits per weight of a quantized format, scales and zeros included (fp: NaN)."""
    if fmt.is_fp:
        return float("nan")
    return 8 * format_bytes(fmt, 1, in_features, float_bytes=0) / in_features
