"""Choose a format per module to minimise the predicted KL under a byte budget: a multiple-choice knapsack
solved exactly by dynamic programming over bytes.

Items are modules, or groups of modules that must share a format (`tie`: fused q/k/v on kernels that
run them as one matmul); an item's options are the formats all its members allow, with their summed
bytes and predicted costs. Each item's smallest option is taken as its base and the DP runs over the
bytes above the bases, in units of (budget - bases) / resolution, every option's bytes rounded *up*
to whole units: the allocation found never exceeds the budget, and is within one unit per item of
the exact optimum's bytes (resolution 50,000 and 211 items: 0.4 % of the range). Options that cost
more bytes and more KL than another option of the same item are dropped first.

The DP's last row is the minimum predicted KL at every budget up to its capacity: `cost_curve` solves
once over the whole range (every module float at the top) and reads the curve the page plots from it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field

import numpy as np

from compressor.errors import LabError
from compressor.fit.formats import FP, Format
from compressor.fit.sensitivity import SensitivityMap

RESOLUTION = 50_000
CURVE_POINTS = 120
# Roles tied into one item by name: `tie=("qkv",)` gives q/k/v of a layer one format.
TIE_GROUPS = {"qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
              "gate_up": ("mlp.gate_proj", "mlp.up_proj")}


@dataclass
class _Item:
    names: list[str]
    options: list[str]  # format names
    bytes: np.ndarray  # [options] int64
    costs: np.ndarray  # [options] float64


@dataclass
class Allocation:
    """The chosen format of every candidate module, what it is predicted to cost and what it stores.

    `bytes` counts every weight of the model: the candidates in their formats plus the float parameters
    outside them, floats at `float_bytes` each."""

    formats: dict[str, str]
    predicted_kl: float
    bytes: int
    budget_bytes: int
    float_bytes: int
    curve: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Allocation:
        return cls(**{**d, "curve": [tuple(p) for p in d.get("curve", [])]})

    def counts(self) -> dict[str, int]:
        """Modules per format, most used first."""
        out: dict[str, int] = {}
        for f in self.formats.values():
            out[f] = out.get(f, 0) + 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def fixed_bytes(smap: SensitivityMap, float_bytes: int) -> int:
    """Bytes of the float parameters that are no candidate (norms; an untied input embedding)."""
    return smap.fixed_float_params * float_bytes


def predict(smap: SensitivityMap, formats: dict[str, str], float_bytes: int) -> tuple[float, int]:
    """(predicted KL, total weight bytes) of the model with `formats` (module -> format; missing = fp)."""
    mods = smap.by_name()
    unknown = sorted(set(formats) - set(mods))
    if unknown:
        raise LabError(f"module(s) {unknown[:3]} are not in the sensitivity map of {smap.model}")
    kl, total = 0.0, fixed_bytes(smap, float_bytes)
    for name, m in mods.items():
        f = formats.get(name, FP)
        if f not in m.costs:
            raise LabError(f"{name}: format {f} was not scored (scored: {', '.join(m.costs)}); measure the map "
                           "with a palette that holds it")
        kl += m.costs[f]
        total += m.bytes(f, float_bytes)
    return kl, total


def check_exclude(exclude: tuple[str, ...]) -> tuple[str, ...]:
    """`exclude` as format names; LabError for fp (a module may always stay float) or a misspelt format."""
    for f in exclude:
        if f == FP:
            raise LabError("exclude='fp': every module may stay float; exclude quantized formats only (w4pc, w2g32)")
        try:
            Format.parse(f)
        except ValueError as e:
            raise LabError(f"exclude: {e}") from None
    return tuple(exclude)


def _items(smap: SensitivityMap, float_bytes: int, tie: tuple[str, ...], exclude: tuple[str, ...] = ()) -> list[_Item]:
    exclude = check_exclude(exclude)
    groups: dict[tuple, list[str]] = {}
    for m in smap.modules:
        key: tuple = (m.name,)
        for t in tie:
            if t not in TIE_GROUPS:
                raise LabError(f"tie={t!r} is not known: use {', '.join(TIE_GROUPS)}")
            if m.role in TIE_GROUPS[t] and m.layer is not None:
                key = (t, m.layer, m.name.removesuffix(m.role))
        groups.setdefault(key, []).append(m.name)
    mods = smap.by_name()
    items = []
    for names in groups.values():
        allowed = [f for f in mods[names[0]].allowed
                   if f not in exclude and all(f in mods[n].allowed for n in names)]
        b = np.array([sum(mods[n].bytes(f, float_bytes) for n in names) for f in allowed], dtype=np.int64)
        c = np.array([sum(mods[n].costs[f] for n in names) for f in allowed], dtype=np.float64)
        keep = [i for i in range(len(allowed))  # drop options another one beats on both bytes and cost
                if not any((b[j] <= b[i] and c[j] < c[i]) or (b[j] < b[i] and c[j] <= c[i]) for j in range(len(allowed)))]
        items.append(_Item(names, [allowed[i] for i in keep], b[keep], c[keep]))
    return items


def _solve(items: list[_Item], capacity: int, resolution: int) -> tuple[np.ndarray, list[np.ndarray], int]:
    """DP over the bytes above the items' smallest options; returns (best cost per unit of capacity,
    the choice table, the unit in bytes)."""
    unit = max(1, math.ceil(capacity / resolution))
    n_units = capacity // unit
    best = np.zeros(n_units + 1)
    choices = []
    for it in items:
        extra = -(-(it.bytes - it.bytes.min()) // unit)  # ceil: never over the budget
        new = np.full(n_units + 1, np.inf)
        pick = np.zeros(n_units + 1, dtype=np.int16)
        for o, (w, c) in enumerate(zip(extra, it.costs, strict=True)):
            if w > n_units:
                continue
            cand = np.full(n_units + 1, np.inf)
            cand[w:] = best[: n_units + 1 - w] + c
            better = cand < new
            new[better], pick[better] = cand[better], o
        best = new
        choices.append(pick)
    return best, choices, unit


def cost_curve(smap: SensitivityMap, float_bytes: int, tie: tuple[str, ...] = (), points: int = CURVE_POINTS,
               resolution: int = 20_000, exclude: tuple[str, ...] = ()) -> list[tuple[int, float]]:
    """(total weight bytes, minimum predicted KL) from the smallest model the palette allows to all-float."""
    items = _items(smap, float_bytes, tie, exclude)
    base = fixed_bytes(smap, float_bytes) + int(sum(it.bytes.min() for it in items))
    span = int(sum(it.bytes.max() - it.bytes.min() for it in items))
    # headroom for the rounding up of every item, so the last point is all-float
    best, _, unit = _solve(items, max(1, span + 2 * len(items) * math.ceil(span / resolution)), resolution)
    idx = np.unique(np.linspace(0, len(best) - 1, points).round().astype(int))
    return [(base + int(i) * unit, float(best[i])) for i in idx if np.isfinite(best[i])]


def allocate(smap: SensitivityMap, budget_bytes: int, float_bytes: int, tie: tuple[str, ...] = (),
             resolution: int = RESOLUTION, curve: bool = True, exclude: tuple[str, ...] = ()) -> Allocation:
    """The formats minimising the predicted KL with at most `budget_bytes` of weights in all, none of them
    in `exclude` (format names the map scored but the allocation may not use).

    LabError when even the smallest formats do not fit, naming the smallest size possible."""
    items = _items(smap, float_bytes, tie, exclude)
    fixed = fixed_bytes(smap, float_bytes)
    base = fixed + int(sum(it.bytes.min() for it in items))
    if budget_bytes < base:
        raise LabError(f"a budget of {budget_bytes / 2**20:.1f} MiB of weights is below the smallest this model can "
                       f"be made with the palette ({base / 2**20:.1f} MiB, every module at its smallest format): "
                       "give a larger budget, or a shorter context or smaller batch for a hardware budget")
    best, choices, unit = _solve(items, budget_bytes - base, resolution)
    formats, u = {}, len(best) - 1
    for it, pick in zip(reversed(items), reversed(choices), strict=True):
        o = int(pick[u])
        for n in it.names:
            formats[n] = it.options[o]
        u -= int(-(-(it.bytes[o] - it.bytes.min()) // unit))
    formats = {m.name: formats[m.name] for m in smap.modules}  # the map's order
    kl, total = predict(smap, formats, float_bytes)
    return Allocation(formats, kl, total, int(budget_bytes), float_bytes,
                      cost_curve(smap, float_bytes, tie, exclude=exclude) if curve else [])


def pattern_for(names: list[str]) -> str:
    """One anchored regex for module names that differ only in their layer number:
    ["model.layers.1.mlp.down_proj", "model.layers.7.mlp.down_proj"] -> ^model\\.layers\\.(1|7)\\.mlp\\.down_proj$."""
    parts = [re.match(r"^(.*\.)(\d+)(\..*)$", n) for n in names]
    if len(names) > 1 and all(parts) and len({(p.group(1), p.group(3)) for p in parts}) == 1:
        layers = "|".join(str(i) for i in sorted(int(p.group(2)) for p in parts))
        return f"^{re.escape(parts[0].group(1))}({layers}){re.escape(parts[0].group(3))}$"
    if len(names) == 1:
        return f"^{re.escape(names[0])}$"
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"
