"""A tiny model with a sharpened head (a random head's distributions are near uniform, so every KL would be
~0) and its sensitivity map, shared by the fit tests."""

from __future__ import annotations

import functools

import torch

from tests.helpers import random_tokens, tiny_llama


def sharp_llama(tied: bool = False, seed: int = 0):
    model = tiny_llama(seed=seed)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    if tied:
        model.config.tie_word_embeddings = True
        model.model.embed_tokens.weight = model.lm_head.weight
    return model


@functools.lru_cache(maxsize=2)
def tiny_map(tied: bool = False):
    """(model, map) measured on 8 x 64 random tokens; treat both as read-only."""
    from compressor.fit.sensitivity import sensitivity_map

    model = sharp_llama(tied)
    return model, sensitivity_map(model, random_tokens(8, 64), name="tiny")


def full_kl(a, b, tokens: torch.Tensor) -> float:
    """Mean KL(a || b) of the next-token distributions over every position of `tokens`."""
    with torch.no_grad():
        p = a(input_ids=tokens).logits.float().log_softmax(-1)
        q = b(input_ids=tokens).logits.float().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1).mean().item()
