"""Fit a model to a budget: the sensitivity map (measured once, cached), the allocation, the recipe.

    result = fit("smollm2-135m", "3.5bits")             # or "1.2GiB", "hardware:t4" with context/batch
    print(result.recipe_yaml)                           # an ordinary recipe: run it like any other

`fit_map(smap, budget)` does the second half from a map alone, in seconds (SmolLM2): the page keeps a
model's map and re-allocates as the budget slider moves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import yaml

from compressor.engine.stage import fallback_group
from compressor.errors import LabError
from compressor.fit.allocator import Allocation, allocate, check_exclude, cost_curve, predict
from compressor.fit.budget import Budget, float_bytes_for, parse_budget, weight_budget_bytes
from compressor.fit.formats import FP, NOT_OFFERED, Format
from compressor.fit.recipe import recipe_from_formats
from compressor.fit.sensitivity import SensitivityMap, sensitivity_map

DEFAULT_SAMPLES = 16  # calibration sequences: one forward and backward pass each
DEFAULT_SEQ_LEN = 256
# The uniform recipes the page and the CLI show beside the fitted one (the presets' RTN formats).
UNIFORM = ("w8pc", "w4g128", "w4g64", "w3g64", "w2g64")


@dataclass
class FitResult:
    """What a fit found. `recipe` is None when the model fits as it is (every module float)."""

    model: str
    budget: dict
    budget_bytes: int
    budget_detail: dict
    float_bytes: int
    allocation: Allocation
    recipe: dict | None
    uniform: list[dict]
    map_key: str
    estimator: str
    seconds: dict = field(default_factory=dict)

    @property
    def recipe_yaml(self) -> str:
        """The recipe as YAML, with a comment header saying what it was fitted to (empty when none)."""
        if self.recipe is None:
            return ""
        a, b = self.allocation, Budget(**self.budget)
        head = [f"# fitted by `python -m compressor fit` to {b.label()} on {self.model}",
                f"# weights {a.bytes / 2**20:.1f} MiB of {self.budget_bytes / 2**20:.1f} MiB (floats at "
                f"{8 * self.float_bytes} bits); predicted KL {a.predicted_kl:.4f} ({self.estimator})",
                "# formats: " + ", ".join(f"{f} x{n}" for f, n in a.counts().items())]
        return "\n".join(head) + "\n" + yaml.safe_dump(self.recipe, sort_keys=False)

    def summary(self) -> str:
        a = self.allocation
        if self.recipe is None:
            return (f"{self.model} fits as it is: {a.bytes / 2**20:.1f} MiB of weights within "
                    f"{self.budget_bytes / 2**20:.1f} MiB; no recipe needed.")
        return (f"{a.bytes / 2**20:.1f} MiB of weights (budget {self.budget_bytes / 2**20:.1f} MiB), predicted KL "
                f"{a.predicted_kl:.4f}: " + ", ".join(f"{f} x{n}" for f, n in a.counts().items()))

    def to_dict(self) -> dict:
        return {**asdict(self), "allocation": self.allocation.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> FitResult:
        return cls(**{**d, "allocation": Allocation.from_dict(d["allocation"])})


def uniform_formats(smap: SensitivityMap, fmt: str) -> dict[str, str] | None:
    """Module -> format of the uniform RTN recipe in `fmt` (the head float, as the presets leave it; a group
    that does not divide a module's in_features falls back as the engine's does), or None when a module's
    fallback format was not scored."""
    f = Format.parse(fmt)
    out = {}
    for m in smap.modules:
        if m.role == "lm_head":
            out[m.name] = FP
            continue
        g = f.group_for(m.in_features)
        if m.in_features % g:
            g = fallback_group(m.in_features, g)
        name = Format(f.bits, -1 if g == m.in_features else g).name
        if name not in m.costs:
            return None
        out[m.name] = name
    return out


def fit_map(smap: SensitivityMap, budget: Budget, tie: tuple[str, ...] = (),
            exclude: tuple[str, ...] = NOT_OFFERED) -> FitResult:
    """Allocate formats on `smap` for `budget`, none in `exclude`; the result's recipe is None when
    everything stays float."""
    t0 = time.perf_counter()
    float_bytes = float_bytes_for(budget, smap)
    budget_bytes, detail = weight_budget_bytes(budget, smap, float_bytes)
    if budget_bytes <= 0:
        raise LabError(f"{budget.label()}: the KV cache and runtime overhead alone take "
                       f"{(detail['usable_memory'] - budget_bytes) / 2**30:.2f} GiB of {detail['usable_memory'] / 2**30:.2f} "
                       "GiB usable, leaving nothing for the weights: use a shorter context or a smaller batch")
    alloc = allocate(smap, budget_bytes, float_bytes, tie, exclude=tuple(exclude))
    quantized = any(f != FP for f in alloc.formats.values())
    recipe = recipe_from_formats(smap, alloc.formats) if quantized else None
    uniform = []
    for name in UNIFORM:
        formats = uniform_formats(smap, name)
        if formats is not None:
            kl, total = predict(smap, formats, float_bytes)
            uniform.append({"format": name, "bytes": total, "predicted_kl": kl})
    return FitResult(smap.model, budget.to_dict(), budget_bytes, detail, float_bytes, alloc, recipe, uniform,
                     smap.key, smap.estimator, {**smap.seconds, "allocation": round(time.perf_counter() - t0, 3)})


def measure_map(model, tokenizer, *, name: str, calibration: str = "builtin", n_samples: int = DEFAULT_SAMPLES,
                seq_len: int = DEFAULT_SEQ_LEN, cache: bool = True,
                progress: Callable[[float, str], None] | None = None) -> SensitivityMap:
    """The sensitivity map of a loaded model on `n_samples` x `seq_len` calibration tokens (cached in
    <data>/fit/ unless `cache` is False)."""
    from compressor.engine.calibration import calibration_batches
    from compressor.paths import default_data_dir

    max_pos = getattr(model.config, "max_position_embeddings", None) or seq_len
    tokens = calibration_batches(tokenizer, calibration, n_samples, min(seq_len, max_pos))
    source = calibration if len(calibration) < 80 else f"text ({len(calibration)} characters)"
    return sensitivity_map(model, tokens, name=name, cache_dir=default_data_dir() / "fit" if cache else None,
                           calibration={"source": source}, progress=progress)


def fit(spec: str, budget: str, context: int = 2048, batch: int = 1, *, tie: tuple[str, ...] = (),
        exclude: tuple[str, ...] = NOT_OFFERED, calibration: str = "builtin", n_samples: int = DEFAULT_SAMPLES,
        seq_len: int = DEFAULT_SEQ_LEN, cache: bool = True, progress: Callable[[float, str], None] | None = None,
        log: Callable[[str], None] | None = None) -> tuple[FitResult, SensitivityMap]:
    """Load `spec`, measure (or read) its sensitivity map and fit it to `budget`. The budget is checked
    before the model loads."""
    parsed = parse_budget(budget, context, batch)
    check_exclude(exclude)
    if parsed.kind == "hardware":
        from compressor.measure.hardware import get_profile

        get_profile(parsed.value)  # an unknown profile fails now, not after the statistics pass
    from compressor.models.loading import load_model

    t0 = time.perf_counter()
    model, tokenizer = load_model(spec, log=log)
    load_s = time.perf_counter() - t0
    smap = measure_map(model, tokenizer, name=spec, calibration=calibration, n_samples=n_samples, seq_len=seq_len,
                       cache=cache, progress=progress)
    result = fit_map(smap, parsed, tie, exclude)
    result.seconds["load"] = round(load_s, 2)
    return result, smap


__all__ = ["FitResult", "cost_curve", "fit", "fit_map", "measure_map", "uniform_formats"]
