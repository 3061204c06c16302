"""The allocator: the exact optimum of small problems (checked by enumeration), never over the budget,
tied roles share a format, the cost curve falls with bytes, and a budget below the smallest model says so."""

from __future__ import annotations

import itertools
import random

import pytest

from compressor.errors import LabError
from compressor.fit.allocator import allocate, cost_curve, predict
from compressor.fit.sensitivity import ModuleCost, SensitivityMap

FORMATS = ["fp", "w2g32", "w3g32", "w4g32", "w8pc"]


def synthetic_map(n_layers: int, roles=("self_attn.q_proj", "mlp.down_proj"), seed: int = 0) -> SensitivityMap:
    rng = random.Random(seed)
    modules = []
    for layer in range(n_layers):
        for role in roles:
            scale = rng.uniform(0.01, 1.0)
            costs = {"fp": 0.0, "w8pc": scale * 1e-4, "w4g32": scale * rng.uniform(0.01, 0.03),
                     "w3g32": scale * rng.uniform(0.05, 0.15), "w2g32": scale * rng.uniform(0.5, 1.5)}
            modules.append(ModuleCost(f"model.layers.{layer}.{role}", layer, role, 64 * (1 + layer % 2), 128,
                                      False, False, costs, allowed=list(FORMATS)))
    return SensitivityMap("synthetic", "k", {}, FORMATS, modules, fixed_float_params=1000, model_float_bytes=4,
                          kv_values_per_token=64, n_layers=n_layers)


def brute_force(smap: SensitivityMap, budget: int) -> float:
    best = float("inf")
    names = [m.name for m in smap.modules]
    for combo in itertools.product(FORMATS, repeat=len(names)):
        kl, total = predict(smap, dict(zip(names, combo, strict=True)), 4)
        if total <= budget:
            best = min(best, kl)
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("fraction", [0.2, 0.45, 0.8])
def test_the_allocation_is_the_optimum_and_within_budget(seed, fraction):
    smap = synthetic_map(2, seed=seed)
    lo = predict(smap, {m.name: "w2g32" for m in smap.modules}, 4)[1]
    hi = predict(smap, {}, 4)[1]
    budget = int(lo + fraction * (hi - lo))
    a = allocate(smap, budget, 4, curve=False)
    assert a.bytes <= budget
    # the DP rounds bytes up to units of 1/50,000 of the range: it is the optimum of a budget a hair smaller
    assert brute_force(smap, budget) <= a.predicted_kl <= brute_force(smap, int(budget - (hi - lo) * 1e-3)) + 1e-12


def test_tied_roles_share_one_format_per_layer():
    smap = synthetic_map(3, roles=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.down_proj"))
    lo, hi = predict(smap, {m.name: "w2g32" for m in smap.modules}, 4)[1], predict(smap, {}, 4)[1]
    free = allocate(smap, (lo + hi) // 3, 4, curve=False)
    tied = allocate(smap, (lo + hi) // 3, 4, tie=("qkv",), curve=False)
    for layer in range(3):
        assert len({tied.formats[f"model.layers.{layer}.self_attn.{p}_proj"] for p in "qkv"}) == 1
    assert tied.predicted_kl >= free.predicted_kl  # a constraint never helps
    with pytest.raises(LabError, match="tie='qkvo' is not known"):
        allocate(smap, hi, 4, tie=("qkvo",))


def test_the_cost_curve_falls_as_bytes_grow_and_ends_at_zero():
    curve = cost_curve(synthetic_map(4), 4)
    sizes, kls = zip(*curve, strict=True)
    assert list(sizes) == sorted(sizes) and all(b <= a + 1e-15 for a, b in zip(kls, kls[1:], strict=False))
    assert kls[-1] == 0.0 and kls[0] > 0


def test_a_budget_below_the_smallest_model_names_the_smallest():
    smap = synthetic_map(2)
    lo = predict(smap, {m.name: "w2g32" for m in smap.modules}, 4)[1]
    with pytest.raises(LabError, match="below the smallest"):
        allocate(smap, lo - 1, 4)


def test_excluded_formats_are_never_given_and_bad_exclusions_are_refused():
    smap = synthetic_map(3)
    lo, hi = predict(smap, {m.name: "w2g32" for m in smap.modules}, 4)[1], predict(smap, {}, 4)[1]
    budget = int(lo + 0.1 * (hi - lo))
    free = allocate(smap, budget, 4, curve=False)
    assert "w4g32" in free.formats.values()  # so excluding it changes something
    without = allocate(smap, budget, 4, curve=False, exclude=("w4g32",))
    assert "w4g32" not in without.formats.values() and without.bytes <= budget
    assert without.predicted_kl >= free.predicted_kl
    for bad, match in (("fp", "may stay float"), ("w5g7", "not known")):
        with pytest.raises(LabError, match=match):
            allocate(smap, budget, 4, exclude=(bad,))
