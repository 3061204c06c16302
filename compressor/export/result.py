"""Typed results of an export: one note per tensor written, measured against the lab's own weights.

    status      meaning (max_abs_err is measured by decoding what was written with the format's own reader)
    lossless    the format's decoder gives the lab's dequantized weight bit for bit (max_abs_err == 0)
    rounded     the integers are transcribed as they are; a float the format stores in fewer bits
                (GGUF's fp16 min or scale) was rounded: small, measured error
    requantized the integers were recomputed for the format's grid (another zero point, group or type)
    dense       written as floats (dequantized); exact in value when max_abs_err == 0, but not compressed
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from compressor.errors import LabError

STATUSES = ("lossless", "rounded", "requantized", "dense")
# in a model note when the file is valid for its format but transformers (this version) cannot load it
TRANSFORMERS_CANNOT_LOAD = "transformers cannot load this file"
RESULT_VERSION = 1


class ExportRefused(LabError):
    """A model (or a part of it) the chosen format cannot hold; names what can."""

    def __init__(self, fmt: str, what: str, use_instead: str):
        self.fmt, self.what, self.use_instead = fmt, what, use_instead
        super().__init__(f"{fmt} cannot hold {what}: {use_instead}")


@dataclass
class TensorNote:
    """How one weight was written. Errors are against the lab's dequantized fp32 weight."""

    name: str  # module name in the lab model
    source: str  # what the lab holds, e.g. "int4 g128 asym"
    written_as: str  # e.g. "pack-quantized int4 group 128 asym", "Q4_1", "F16"
    status: str  # one of STATUSES
    max_abs_err: float = 0.0
    sqnr_db: float = math.inf  # of the written weight against the lab's; inf when equal
    why: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r}: use one of {STATUSES}")


@dataclass
class ExportResult:
    """What `export_model` wrote and how faithful it is. `path` is None for a preview."""

    fmt: str
    path: str | None
    files: list[str] = field(default_factory=list)
    notes: list[TensorNote] = field(default_factory=list)
    model_notes: list[str] = field(default_factory=list)  # model-level remarks (tokenizer, sparsity, ...)
    bytes_written: int = 0
    logits_max_abs_err: float | None = None  # measured by verify=True through the format's own loader
    logits_reader: str | None = None
    version: int = RESULT_VERSION

    @property
    def lossless(self) -> bool:
        """Every weight decodes to the lab's weight bit for bit."""
        return all(n.max_abs_err == 0.0 for n in self.notes)

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATUSES, 0)
        for n in self.notes:
            out[n.status] += 1
        return out

    @property
    def transformers_loads(self) -> bool:
        """False when a model note says transformers cannot load the file (verify is then skipped)."""
        return not any(TRANSFORMERS_CANNOT_LOAD in m for m in self.model_notes)

    @property
    def max_abs_err(self) -> float:
        return max((n.max_abs_err for n in self.notes), default=0.0)

    def written(self) -> str:
        """What the linear layers became, most common first: "42 Q4_1 rounded, 1 F16 dense"."""
        c = Counter((n.written_as, n.status) for n in self.notes)
        return ", ".join(f"{k} {w} {s}" for (w, s), k in c.most_common())

    def summary(self) -> str:
        """One line for a UI or a CLI: what is lossless and what is not."""
        c = self.counts()
        parts = [f"{v} {k}" for k, v in c.items() if v]
        worst = max(self.notes, key=lambda n: n.max_abs_err, default=None)
        tail = f"; max |dW| {worst.max_abs_err:.3g} ({worst.name}: {worst.why})" if worst and worst.max_abs_err else \
            "; every weight bit-exact"
        logits = "" if self.logits_max_abs_err is None else \
            f"; logits max |d| {self.logits_max_abs_err:.3g} via {self.logits_reader}"
        return f"{self.fmt}: {', '.join(parts) or 'no weights'}{tail}{logits}"

    def to_dict(self) -> dict:
        """Plain JSON types; an infinite SQNR (weights equal) is the string "inf"."""
        d = asdict(self)
        for n in d["notes"]:
            if not math.isfinite(n["sqnr_db"]):
                n["sqnr_db"] = str(n["sqnr_db"])
        d["lossless"], d["counts"], d["max_abs_err"] = self.lossless, self.counts(), self.max_abs_err
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def weight_error(ref: torch.Tensor, got: torch.Tensor) -> tuple[float, float]:
    """(max |got - ref|, SQNR dB) of a decoded weight against the lab's fp32 weight, both [N, K]."""
    from compressor.engine.quant import sqnr_db

    ref, got = ref.float(), got.float()
    if ref.shape != got.shape:
        raise ValueError(f"decoded weight has shape {tuple(got.shape)}, the lab's {tuple(ref.shape)}")
    diff = (got - ref).abs()
    return (float(diff.max()) if diff.numel() else 0.0), sqnr_db(ref, got)


def note_for(name: str, source: str, written_as: str, exact_status: str, ref: torch.Tensor, decoded: torch.Tensor,
             why: str = "") -> TensorNote:
    """A note whose error is measured; a transcription that turns out exact is reported as lossless."""
    err, sqnr = weight_error(ref, decoded)
    status = "lossless" if err == 0.0 and exact_status in ("lossless", "rounded") else exact_status
    if status == "lossless":
        why = why or "bit-exact"
    return TensorNote(name, source, written_as, status, err, sqnr, why)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
