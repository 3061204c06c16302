"""The sanity report every compression run ends with; the UI shows it and never recomputes it.

Bytes are measured, never computed from bit widths: `weight_bytes(model)` sums the parameters and
buffers the model really holds (shared tensors once), plus the weight data packed module types keep
outside them (bitsandbytes' quantization state; `extra_bytes` in compressor/engine/packed.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from compressor.engine.packed import extra_weight_bytes


def _tensor_bytes(tensors, float_bytes: int | None = None) -> int:
    """Bytes of `tensors`, shared ones once; floating-point ones at `float_bytes` per element if given."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        key = (t.device.type, t.data_ptr() if t.device.type != "meta" else id(t), tuple(t.shape), t.dtype)
        if key in seen:
            continue
        seen.add(key)
        size = t.element_size()
        if float_bytes is not None and torch.is_floating_point(t):
            size = min(size, float_bytes)  # a conversion to a float width never widens FP8 (its modules keep it)
        total += t.numel() * size
    return total


def weight_bytes(module: nn.Module) -> int:
    """Bytes of all parameters and buffers of `module` (shared tensors counted once)."""
    return _tensor_bytes(list(module.parameters()) + list(module.buffers())) + extra_weight_bytes(module)


def weight_bytes_at(module: nn.Module, float_bytes: int) -> int:
    """`weight_bytes` with every floating-point tensor counted at `float_bytes` per element: what the
    model holds once converted to that float width. Integer (packed) tensors, floats already narrower (FP8
    weights) and the packed types' extra bytes keep their real size. Non-persistent buffers are left out: a
    CPU kernel's runtime layout (QuantLinear.native_scale, FP8Linear.native_weight) and tables rebuilt on
    load (rotary inv_freq), not what another device holds."""
    buffers = [b for m in module.modules() for name, b in m._buffers.items()
               if b is not None and name not in m._non_persistent_buffers_set]
    return _tensor_bytes(list(module.parameters()) + buffers, float_bytes) + extra_weight_bytes(module)


def state_dict_bytes(module: nn.Module) -> int:
    """Bytes of the state dict (what a checkpoint stores), shared tensors counted once."""
    return _tensor_bytes(module.state_dict().values())


def _finite(x):
    return x if not isinstance(x, float) or math.isfinite(x) else None


@dataclass
class LayerReport:
    """One replaced or modified module.

    bytes_before/after are the module's state-dict bytes: what its format stores (packed integers,
    scales, zeros, permutation, bias). Runtime layouts a kernel adopts after the first forward are in
    CompressionReport.weight_bytes_after (everything held), not here.

    sqnr_basis says what the SQNR was measured on: "calibration" (layer outputs on calibration
    inputs), "weights" (W vs its reconstruction) or "probe" (outputs on a probe input).
    """

    name: str
    stage: int
    method: str
    module_type: str = ""
    bits: float | None = None
    group_size: int | None = None
    sqnr_db: float | None = None
    sqnr_basis: str | None = None
    bytes_before: int = 0
    bytes_after: int = 0
    n_weights: int = 0
    bias_bytes: int = 0
    seconds: float | None = None
    sparsity: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def effective_bits(self) -> float | None:
        """Bits per weight after compression, scales, zeros and permutation included, bias excluded."""
        if not self.n_weights:
            return None
        return 8.0 * (self.bytes_after - self.bias_bytes) / self.n_weights


@dataclass
class StageReport:
    index: int
    method: str
    kind: str
    seconds: float = 0.0
    n_modules: int = 0
    decoder_layers: list[dict] = field(default_factory=list)  # calibrated stages: index, output_sqnr_db, seconds
    config: dict = field(default_factory=dict)
    quality: dict = field(default_factory=dict)  # what `compress(after_stage=...)` measured after this stage


@dataclass
class CompressionReport:
    """Per stage and per module results of one `compress` call, plus whole-model bytes."""

    recipe: dict = field(default_factory=dict)
    stages: list[StageReport] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)
    weight_bytes_before: int = 0
    weight_bytes_after: int = 0
    calibration: dict | None = None
    wall_s: float = 0.0
    sanity: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    # --- summaries ---------------------------------------------------------------------------------

    @property
    def compressed_bytes_before(self) -> int:
        return sum(r.bytes_before for r in self._final_layers())

    @property
    def compressed_bytes_after(self) -> int:
        return sum(r.bytes_after for r in self._final_layers())

    @property
    def effective_bits(self) -> float | None:
        """Bits per weight over the compressed modules (scales and zeros included, bias excluded)."""
        layers = self._final_layers()
        n = sum(r.n_weights for r in layers)
        return 8.0 * sum(r.bytes_after - r.bias_bytes for r in layers) / n if n else None

    @property
    def sparsity(self) -> float | None:
        rows = [r for r in self._final_layers() if r.sparsity is not None and r.n_weights]
        if not rows:
            return None
        return sum(r.sparsity * r.n_weights for r in rows) / sum(r.n_weights for r in rows)

    def _final_layers(self) -> list[LayerReport]:
        """One row per module: the last stage that touched it, with the first stage's bytes_before."""
        first: dict[str, LayerReport] = {}
        last: dict[str, LayerReport] = {}
        for r in self.layers:
            first.setdefault(r.name, r)
            last[r.name] = r
        return [dataclasses.replace(r, bytes_before=first[n].bytes_before) for n, r in last.items()]

    def summary(self) -> str:
        """A short text table (the sanity report printed at the end of a run)."""
        lines = [f"weight bytes {self.weight_bytes_before:,} -> {self.weight_bytes_after:,} "
                 f"({self.weight_bytes_after / max(self.weight_bytes_before, 1):.3f}x), "
                 f"compressed modules {self.compressed_bytes_before:,} -> {self.compressed_bytes_after:,}, "
                 f"effective bits {self.effective_bits or float('nan'):.3f}, wall {self.wall_s:.1f} s"]
        for s in self.stages:
            sq = [d["output_sqnr_db"] for d in s.decoder_layers if d.get("output_sqnr_db") is not None]
            extra = f", decoder-layer output SQNR {min(sq):.1f}..{max(sq):.1f} dB" if sq else ""
            lines.append(f"stage {s.index} {s.method} ({s.kind}): {s.n_modules} modules, {s.seconds:.1f} s{extra}")
        for w in self.warnings:
            lines.append(f"warning: {w}")
        if self.sanity:
            lines.append("sanity: " + ", ".join(f"{k}={v}" for k, v in self.sanity.items()))
        return "\n".join(lines)

    # --- JSON ----------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for row, r in zip(d["layers"], self.layers, strict=True):
            row["sqnr_db"] = _finite(row["sqnr_db"])
            row["effective_bits"] = r.effective_bits
        for s in d["stages"]:
            for dl in s["decoder_layers"]:
                dl["output_sqnr_db"] = _finite(dl.get("output_sqnr_db"))
        d["summary"] = {"effective_bits": self.effective_bits, "sparsity": self.sparsity,
                        "compressed_bytes_before": self.compressed_bytes_before,
                        "compressed_bytes_after": self.compressed_bytes_after}
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_dict(cls, d: dict) -> CompressionReport:
        d = dict(d)
        d.pop("summary", None)
        layers = []
        for row in d.pop("layers", []):
            row = dict(row)
            row.pop("effective_bits", None)
            layers.append(LayerReport(**row))
        stages = [StageReport(**s) for s in d.pop("stages", [])]
        return cls(stages=stages, layers=layers, **d)


def module_row(name: str, stage: int, method: str, old: nn.Module, new: nn.Module) -> LayerReport:
    """The bytes part of a LayerReport for `old` replaced by `new`."""
    w = getattr(old, "weight", None)
    bias = getattr(new, "bias", None)
    return LayerReport(
        name=name, stage=stage, method=method, module_type=type(new).__name__,
        bytes_before=state_dict_bytes(old), bytes_after=state_dict_bytes(new),
        n_weights=w.numel() if isinstance(w, torch.Tensor) else 0,
        bias_bytes=bias.numel() * bias.element_size() if isinstance(bias, torch.Tensor) else 0,
    )
