"""The statistics behind the sensitivity map: one forward and one backward pass per calibration sequence.

The Fisher diagonal (the estimator, compressor/fit/sensitivity.py). For a small change dW of the
weights, the KL of the model's next-token distributions to the unchanged model's is, to second order,

    sum_s KL(p_s || q_s) ~= 1/2 dW^T F dW,   F = E_y[g g^T],   g = d/dW sum_s log p(y_s | y_<s)

with labels y_s *sampled from the model itself* (the true Fisher, not the empirical one with the
text's own next tokens: Kunstner et al. 2019, arXiv:1905.12558). One sampled label per position and
one backward pass per sequence give the gradient g of that sequence; g**2, averaged over sequences,
is an unbiased estimate of F's diagonal. A sequence's gradient sums over its positions, so the
cross-position terms (an error at position t changes the outputs at t' > t through attention) are
in it; a per-token estimate would drop them. A tied embedding's gradient holds both its uses
(input embedding and output head), which is what quantizing the shared weight changes.

Beside it, for comparison in benchmarks/fit_smollm2.py, the mean squared input of every linear
(`act_sq`, the diagonal of its layer Hessian X^T X / n, as Wanda and AWQ read it), from forward
hooks in the same pass.

Cost: n_sequences forward+backward passes of the model (~3x a forward each), whatever the number of
candidate formats; scoring the formats afterwards touches only weights (compressor/fit/sensitivity.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.hessian import STATS_DTYPE


@dataclass
class FisherStats:
    """Per candidate module (by qualified name): `fisher` [N, K] (mean over sequences of g**2) and
    `act_sq` [K] (mean over tokens of x**2 of its input)."""

    fisher: dict[str, torch.Tensor]
    act_sq: dict[str, torch.Tensor]
    n_sequences: int
    seq_len: int
    seconds: float


@contextlib.contextmanager
def _grads_only_for(model: nn.Module, weights: list[torch.Tensor]):
    """Gradients for `weights` only (the rest of the model needs none), restored afterwards."""
    before = {id(p): p.requires_grad for p in model.parameters()}
    keep = {id(w) for w in weights}
    try:
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(before[id(p)])
            p.grad = None


@contextlib.contextmanager
def _input_hooks(modules: dict[str, nn.Module], act_sq: dict[str, torch.Tensor], counts: dict[str, int]):
    """Forward hooks adding each module's sum over tokens of x**2 (removed on exit)."""
    def make(name: str):
        def hook(_module, args, _out):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(STATS_DTYPE)  # (tokens, K)
            act_sq[name] += x.pow(2).sum(0)
            counts[name] += x.shape[0]
        return hook

    handles = [m.register_forward_hook(make(n)) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def collect_fisher(model: nn.Module, modules: dict[str, nn.Module], tokens: torch.Tensor, *, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> FisherStats:
    """The Fisher diagonal of every module's `weight` and its inputs' mean square, over `tokens` [n, L].

    `modules` maps qualified names to nn.Linear (a tied head's weight is the embedding's too). The model's
    requires_grad flags and mode are restored; its weights are not changed.
    """
    t0 = time.perf_counter()
    device = next(model.parameters()).device
    weights = {name: m.weight for name, m in modules.items()}
    fisher = {name: torch.zeros(w.shape, dtype=STATS_DTYPE, device=device) for name, w in weights.items()}
    act_sq = {name: torch.zeros(w.shape[1], dtype=STATS_DTYPE, device=device) for name, w in weights.items()}
    counts = dict.fromkeys(modules, 0)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with _grads_only_for(model, list(weights.values())), _input_hooks(modules, act_sq, counts), \
                torch.enable_grad():
            for i in range(tokens.shape[0]):
                ids = tokens[i:i + 1].to(device)  # (1, L)
                logits = model(input_ids=ids, use_cache=False).logits[0].float()  # (L, V)
                with torch.no_grad():  # labels from the model's own distribution: the true Fisher
                    y = torch.multinomial(logits.softmax(-1).cpu(), 1, generator=gen)[:, 0].to(device)  # (L,)
                F.cross_entropy(logits, y, reduction="sum").backward()
                for name, w in weights.items():
                    fisher[name] += w.grad.detach().to(STATS_DTYPE).pow(2)
                for w in weights.values():
                    w.grad = None
                if progress is not None:
                    progress(i + 1, tokens.shape[0])
    finally:
        model.train(was_training)
    n = tokens.shape[0]
    for name in fisher:
        fisher[name] /= n
        act_sq[name] /= max(counts[name], 1)
    return FisherStats(fisher, act_sq, n, tokens.shape[1], time.perf_counter() - t0)
