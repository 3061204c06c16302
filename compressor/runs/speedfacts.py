"""Speed read honestly: the compressed model's decode speed against the baseline's from the same run,
with the spread of the timed repeats, and, when it is slower here, the facts that say why.

    c = speed_comparison(report)          # None when either side has no decode figure yet
    c.ratio, c.separated, c.slower        # 0.41, True (ranges do not overlap), True
    c.reasons                             # ["28 of 28 compressed layers ran 'reference': ..."]
    c.sentence()                          # one plain sentence for the page's card and the CLI

Only what the run recorded is used: the batch-1 decode Stats of both sides, the kernel path each
packed module took last (`Speed.kernel_paths`), what the recipe stores (traits, stage kinds) and the
device. Nothing is re-measured and nothing is guessed beyond those facts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from compressor.runs.contract import Report, Stat
from compressor.runs.format import fmt_rate, is_number
from compressor.runs.record import Record

SLOWER_BELOW = 0.9  # a median under 90 % of the baseline's reads as slower (with one repeat: measured once)

# Why a kernel path is slow on this machine, by the start of its name (kernels/dispatch.py names them).
PATH_WHY = {
    "reference": "dequantize the weights on every call, then a dense matmul: no native kernel serves this format "
                 "on this device",
    "cpu-dequant": "dequantize to bf16 on every call, then a dense matmul",
    "cpu-int4pack": "PyTorch's native int4 CPU kernel, which converts activations to bf16 and back on every call; "
                    "at batch 1 on a small model that per-call work outweighs the bytes saved",
    "cpu-int8pack": "PyTorch's native int8 CPU kernel, which converts activations to bf16 and back on every call; "
                    "at batch 1 on a small model that per-call work outweighs the bytes saved",
    "cpu-int-mm": "int8 activations quantized per token on every call before the int8 matmul",
    "dense-decompress": "2:4 weights decompressed to dense on every call: no sparse kernel on this device",
    "bitsandbytes": "bitsandbytes' CPU kernels, which unpack the weights on every call",
    "cpu-fp8": "FP8 weights held as an exact fp16 copy (2 bytes a weight beside the stored 1) for PyTorch's fp16 "
               "matmul; activations cast to fp16 and back on every call",
}
# What a recipe's stored format costs per call whatever the kernel (compressor.engine stage traits/kinds).
TRAIT_WHY = {
    "sparse-2:4": "2:4 sparsity stored dense is as much work as the dense model on a CPU",
    "lowrank": "low-rank factors run two matmuls per layer instead of one",
    "kv": "the compressed KV cache is quantized and dequantized at every decode step",
}


@dataclass
class SpeedComparison(Record):
    """Batch-1 decode tokens/s of the compressed model against the baseline's, from one run."""

    baseline: Stat
    compressed: Stat
    ratio: float  # compressed median / baseline median
    separated: bool  # two or more repeats each, and the ranges (min..max) do not overlap
    kernel_paths: dict[str, int] = field(default_factory=dict)
    reference_modules: int = 0  # modules whose last call took the "reference" path
    reasons: list[str] = field(default_factory=list)
    device: str = "cpu"

    @property
    def repeats(self) -> int:
        return min(self.baseline.n, self.compressed.n)

    @property
    def slower(self) -> bool:
        """Slower here: below SLOWER_BELOW of the baseline, and beyond the spread when there is one."""
        return self.ratio < SLOWER_BELOW and (self.separated or self.repeats < 2)

    @property
    def reference_share(self) -> float:
        n = sum(self.kernel_paths.values())
        return self.reference_modules / n if n else 0.0

    def spread_text(self) -> str:
        if self.repeats < 2:
            return "timed once per side, so no spread is known; the thorough preset times 5 repeats"
        b, c = self.baseline, self.compressed
        where = "do not overlap" if self.separated else "overlap: the difference is within the noise"
        return (f"median of {self.repeats} repeats; ranges {fmt_rate(c.min)}-{fmt_rate(c.max)} and "
                f"{fmt_rate(b.min)}-{fmt_rate(b.max)} {where}")

    def sentence(self) -> str:
        """Plain sentences: how fast against what spread, and, when slower here, why."""
        head = (f"Decode on this machine ({self.device}): {fmt_rate(self.compressed.median)} tokens/s compressed vs "
                f"{fmt_rate(self.baseline.median)} baseline (x{self.ratio:.2f}; {self.spread_text()}).")
        if not self.slower:
            return head
        why = "; ".join(self.reasons) or "its layers do extra work per call that a dense matmul does not"
        return f"{head} It is slower here because {why}."


def speed_comparison(report: Report) -> SpeedComparison | None:
    """The comparison for `report`, or None until both sides have a batch-1 decode figure."""
    stats = [m.speed.batch1.decode_tokens_per_s if m.speed and m.speed.batch1 else None
             for m in (report.baseline, report.compressed)]
    if any(s is None or not is_number(s.median) or s.median <= 0 for s in stats):
        return None
    b, c = stats
    separated = min(b.n, c.n) >= 2 and (c.max < b.min or c.min > b.max)
    paths = dict(report.compressed.kernel_paths or {})
    return SpeedComparison(baseline=b, compressed=c, ratio=c.median / b.median, separated=separated,
                           kernel_paths=paths, reference_modules=paths.get("reference", 0),
                           reasons=_reasons(report, paths), device=report.request.device)


def _reasons(report: Report, paths: dict[str, int]) -> list[str]:
    total = sum(paths.values())
    out = []
    for path, n in sorted(paths.items(), key=lambda kv: -kv[1]):
        why = next((w for prefix, w in PATH_WHY.items() if str(path).startswith(prefix)), None)
        if why:
            out.append(f"{n} of {total} compressed layers ran '{path}' ({why})")
    traits, _ = report.request.recipe.traits()
    kinds = {s.kind for s in report.request.recipe.stages}
    out += [TRAIT_WHY[t] for t in ("sparse-2:4",) if t in traits and "dense-decompress" not in paths]
    out += [TRAIT_WHY[k] for k in ("lowrank", "kv") if k in kinds]
    return out
