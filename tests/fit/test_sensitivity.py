"""The sensitivity map: its predicted KL tracks the measured KL of whole recipes, costs fall with more bits,
a tied head stays float, and a map is read from the cache instead of measured again."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor.engine.compress import compress
from compressor.fit import sensitivity
from compressor.fit.allocator import predict
from compressor.fit.fitting import uniform_formats
from compressor.fit.formats import FP
from compressor.fit.recipe import recipe_from_formats
from tests.fit.helpers import full_kl, sharp_llama, tiny_map
from tests.helpers import random_tokens


@pytest.mark.parametrize("fmt", ["w8pc", "w4g64", "w3g64"])
def test_predicted_kl_is_close_to_the_measured_kl_on_held_out_tokens(fmt):
    model, smap = tiny_map()
    formats = {m: fmt for m in uniform_formats(smap, fmt)}  # the head too: it dominates a tiny model
    predicted, _ = predict(smap, formats, 4)
    compressed, _ = compress(copy.deepcopy(model), recipe_from_formats(smap, formats))
    measured = full_kl(model, compressed, random_tokens(8, 64, seed=1))
    assert 0.6 < predicted / measured < 1.6, (predicted, measured)


def test_more_bits_cost_less_and_fp_costs_nothing():
    _, smap = tiny_map()
    for m in smap.modules:
        assert m.costs[FP] == 0.0
        assert m.costs["w2g32"] > m.costs["w3g32"] > m.costs["w4g32"] > m.costs["w8pc"] > 0
        assert set(m.allowed) <= set(m.costs)


def test_a_tied_head_is_scored_but_stays_float_and_its_weight_is_not_counted_twice():
    model, smap = tiny_map(tied=True)
    head = smap.by_name()["lm_head"]
    assert head.tied and head.allowed == [FP] and "embedding" in head.note and head.costs["w4g64"] > 0
    untied = tiny_map(tied=False)[1]
    assert smap.fixed_float_params == untied.fixed_float_params - model.lm_head.weight.numel()


def test_the_model_is_left_as_it_was():
    model = sharp_llama(seed=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    sensitivity.sensitivity_map(model, random_tokens(2, 16), name="tiny")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_a_second_map_of_the_same_model_and_tokens_comes_from_the_cache(tmp_path, monkeypatch):
    model, tokens = sharp_llama(seed=4), random_tokens(2, 16)
    first = sensitivity.sensitivity_map(model, tokens, name="tiny", cache_dir=tmp_path)

    def no_second_pass(*a, **k):
        raise AssertionError("measured again")

    monkeypatch.setattr(sensitivity, "collect_fisher", no_second_pass)
    assert sensitivity.sensitivity_map(model, tokens, name="tiny", cache_dir=tmp_path).to_dict() == first.to_dict()
    with pytest.raises(AssertionError, match="measured again"):  # other tokens: another key
        sensitivity.sensitivity_map(model, random_tokens(2, 16, seed=9), name="tiny", cache_dir=tmp_path)
