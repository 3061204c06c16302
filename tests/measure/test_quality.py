"""Perplexity, sliding windows, KL to a top-k reference and top-1 agreement on known cases."""

import math

import pytest
import torch
import torch.nn.functional as F

from compressor.measure import quality
from tests.helpers import random_tokens, tiny_llama


def test_uniform_distribution_perplexity_equals_vocab_size():
    model = tiny_llama(vocab=256)
    with torch.no_grad():
        model.lm_head.weight.zero_()  # every logit 0: the next-token distribution is uniform
    tokens = random_tokens(1, 200)[0]
    res, _ = quality.evaluate_quality(model, tokens, context=64, stride=32)
    assert res.perplexity == pytest.approx(256, rel=1e-5)
    assert res.n_tokens == 199  # every position after the first, scored once
    logp = torch.full((10, 50), -math.log(50))
    assert quality.perplexity_from_logprobs(logp, torch.zeros(10, dtype=torch.long)) == pytest.approx(50)


@pytest.mark.parametrize("n,context,stride", [(200, 64, 32), (100, 100, 50), (257, 64, 64), (10, 64, 16)])
def test_sliding_windows_score_each_position_once(n, context, stride):
    scored = []
    for begin, end, k in quality.sliding_windows(n, context, stride):
        assert end - begin <= context and k <= end - begin - (1 if begin == 0 else 0)
        scored += list(range(end - k, end))
    assert scored == list(range(1, n))


def test_kl_of_identical_models_is_zero_and_positive_when_perturbed():
    model = tiny_llama()
    tokens = random_tokens(1, 160)[0]
    base, ref = quality.evaluate_quality(model, tokens, context=64, stride=32, top_k=16)
    same, _ = quality.evaluate_quality(model, tokens, context=64, stride=32, top_k=16, reference=ref)
    assert same.kld == pytest.approx(0.0, abs=1e-6)
    assert same.top1_agreement == 1.0
    assert same.perplexity == pytest.approx(base.perplexity)
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight) * 0.5)
    moved, _ = quality.evaluate_quality(model, tokens, context=64, stride=32, top_k=16, reference=ref)
    assert moved.kld > 1e-3
    assert moved.top1_agreement < 1.0


def test_topk_kl_is_a_lower_bound_and_exact_with_full_vocabulary():
    g = torch.Generator().manual_seed(0)
    logp = F.log_softmax(torch.randn(20, 64, generator=g) * 2, -1)
    logq = F.log_softmax(torch.randn(20, 64, generator=g) * 2, -1)
    full = (logp.exp() * (logp - logq)).sum(-1)
    exact = quality.kl_topk(*quality.topk_summary(logp, 64), logq)
    assert torch.allclose(exact, full, atol=1e-5)
    bound = quality.kl_topk(*quality.topk_summary(logp, 8), logq)
    assert (bound <= full + 1e-6).all() and (bound > 0).all()


def test_reference_round_trips_through_json_dict():
    model = tiny_llama()
    _, ref = quality.evaluate_quality(model, random_tokens(1, 100)[0], context=64, stride=32, top_k=8)
    back = quality.Reference.from_dict(ref.to_dict())
    assert torch.equal(back.top_ids, ref.top_ids) and torch.equal(back.top_logp, ref.top_logp)
    assert back.n_tokens == ref.n_tokens == 99


@pytest.mark.parametrize("n, context, stride", [(1000, 256, 128), (1000, 256, 256), (513, 256, 256), (10, 4, 1)])
def test_sliding_windows_score_every_position_once(n, context, stride):
    scored = []
    for begin, end, n_scored in quality.sliding_windows(n, context, stride):
        assert end - begin <= context and n_scored <= end - begin - 1  # each target has context
        scored += range(end - n_scored, end)
    assert scored == list(range(1, n))
