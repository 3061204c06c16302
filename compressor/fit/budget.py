"""Budgets: how many bytes of weights a fitted model may hold, from what a person asks for.

    "3.5bits"        average stored bits per weight of the modules the fit may quantize (scales and
                     zeros included, as "w4 g64" is 4.5 bits); the other parameters stay as they are
    "1.2GiB", "800MB" all of the model's weights (GiB/MiB/KiB are powers of 2, GB/MB/KB of 10)
    "hardware:t4"    what fits the profile's memory at `context` tokens and `batch` sequences, from the
                     projection model (compressor.measure.hardware.memory_needed):
                         usable memory - runtime overhead - batch x context x KV bytes per token

Floats (modules left float, norms, an untied embedding) count at `float_bytes`: the loaded model's
width by default, and for a hardware budget the width that profile runs models in (fp16/bf16 on GPUs,
`run_float_dtype`), the KV cache too.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from compressor.errors import LabError
from compressor.fit.sensitivity import SensitivityMap

UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]i?b|b)\s*$", re.I)
_BITS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*bits?\s*$", re.I)
HELP = "write a budget as 3.5bits (average bits per weight), 1.2GiB or 800MB (all weights), or hardware:t4"


@dataclass(frozen=True)
class Budget:
    """A parsed budget. `kind` is "bits", "bytes" or "hardware"; `value` the number or the profile id."""

    kind: str
    value: float | str
    context: int = 2048
    batch: int = 1
    text: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        if self.kind == "bits":
            return f"{self.value:g} bits per weight"
        if self.kind == "bytes":
            return f"{self.value / 2**30:.3g} GiB of weights"
        return f"fits {self.value} at context {self.context} x batch {self.batch}"


def parse_budget(text: str, context: int = 2048, batch: int = 1) -> Budget:
    """"3.5bits" | "1.2GiB" | "hardware:t4" -> Budget; LabError naming the accepted forms."""
    if not isinstance(text, str) or not text.strip():
        raise LabError(f"budget={text!r} is empty: {HELP}")
    for name, v in (("context", context), ("batch", batch)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise LabError(f"{name}={v!r} is not valid: use a positive whole number")
    t = text.strip()
    if t.lower().startswith("hardware:"):
        profile = t.split(":", 1)[1].strip()
        if not profile:
            raise LabError(f"budget={text!r} names no profile: write hardware:<id>, e.g. hardware:t4 "
                           "(python -m compressor hardware lists them)")
        return Budget("hardware", profile, context, batch, t)
    if m := _BITS.match(t):
        bits = float(m.group(1))
        if not 2.0 <= bits <= 32.0:
            raise LabError(f"budget={text!r}: an average of {bits:g} bits is outside what the formats can reach "
                           "(2 to 32 bits per weight)")
        return Budget("bits", bits, context, batch, t)
    if m := _SIZE.match(t):
        size = float(m.group(1)) * UNITS[m.group(2).lower()]
        if size <= 0:
            raise LabError(f"budget={text!r} is not a positive size: {HELP}")
        return Budget("bytes", int(size), context, batch, t)
    raise LabError(f"budget={text!r} is not understood: {HELP}")


def _profile(budget: Budget):
    from compressor.measure.hardware import get_profile

    return get_profile(budget.value)


def float_bytes_for(budget: Budget, smap: SensitivityMap) -> int:
    """Bytes per float element: the hardware profile's run width, else the model's own."""
    if budget.kind == "hardware":
        from compressor.measure.hardware import run_float_dtype

        return 2 if run_float_dtype(_profile(budget)) else smap.model_float_bytes
    return smap.model_float_bytes


def weight_budget_bytes(budget: Budget, smap: SensitivityMap, float_bytes: int) -> tuple[int, dict]:
    """(bytes all weights may take, how they were worked out) for `budget` on the map's model."""
    from compressor.fit.allocator import fixed_bytes

    if budget.kind == "bytes":
        return int(budget.value), {"weights": int(budget.value)}
    if budget.kind == "bits":
        free = [m for m in smap.modules if len(m.allowed) > 1]
        stuck = sum(m.bytes("fp", float_bytes) for m in smap.modules if len(m.allowed) <= 1)
        quantizable = sum(m.params for m in free)
        total = int(fixed_bytes(smap, float_bytes) + stuck + budget.value / 8 * quantizable)
        return total, {"weights": total, "quantizable_params": quantizable, "float_bytes_outside": total - int(
            budget.value / 8 * quantizable)}
    from compressor.measure.hardware import ModelFacts, memory_needed

    profile = _profile(budget)
    usable = int(profile.memory_bytes * profile.usable_memory_fraction)
    kv_per_token = smap.kv_values_per_token * float_bytes
    no_weights = ModelFacts(weight_bytes=0, n_params=0, n_layers=smap.n_layers, kv_bytes_per_token=kv_per_token,
                            max_context=budget.context)
    rest = memory_needed(profile, no_weights, budget.batch, budget.context)  # KV cache + runtime overhead
    return usable - rest, {"weights": usable - rest, "usable_memory": usable, "kv_cache": rest -
                           profile.runtime_overhead_bytes, "runtime_overhead": profile.runtime_overhead_bytes,
                           "profile": profile.name}
