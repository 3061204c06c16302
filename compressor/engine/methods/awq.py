"""AWQ: activation-aware weight quantization.

Lin et al., "AWQ: Activation-aware Weight Quantization for LLM Compression and Acceleration"
(MLSys 2024), https://arxiv.org/abs/2306.00978 ; reference code: mit-han-lab/llm-awq `auto_scale.py`,
`auto_clip.py`.

A few input channels carry large activations; the weights they multiply matter most. AWQ scales
input channel j of the weight by s_j = s_X[j]^alpha (s_X = mean |X_j|) before quantization and divides
the activation by s_j, which is folded into the op that produces it (RMSNorm weight, or the previous
linear). alpha is searched on a grid in [0, 1] to minimise the output error of the linears that share
the input; alpha = 0 is plain RTN, so the search never does worse than RTN on the calibration data.
An optional clipping search then shrinks each group's range where that lowers the output error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from torch import nn

from compressor.engine.quant import fake_quant, pack_linear, quantize, sqnr_db
from compressor.engine.registry import register
from compressor.engine.stage import QuantStageConfig
from compressor.errors import RecipeError

# Tokens used by the searches: AWQ subsamples the calibration set the same way (n_sample_token=512
# for clipping); the scale search is cheap enough for more.
SCALE_SEARCH_TOKENS = 4096
CLIP_SEARCH_TOKENS = 512
# Output channels per chunk in the clip search: bounds memory at tokens x chunk x groups floats.
CLIP_CHUNK = 256

FakeQuant = Callable[[torch.Tensor], torch.Tensor]  # W [N, K] -> dequantized Q(W) [N, K]


@dataclass
class AWQConfig(QuantStageConfig):
    """AWQ weight-only quantization: activation-aware scales, then RTN group-wise. Needs calibration.

    Args:
        bits: weight bits (2, 3, 4 or 8).
        group_size: columns sharing one scale and zero (128 in the paper); -1 = per channel.
        symmetric: zero fixed at 2**(bits-1) (False: per-group zero point, as in the paper).
        n_grid: points of the alpha grid in [0, 1) (20 in the paper's code).
        clip: also search a clipping threshold per group (llm-awq's auto_clip; skipped for q/k).
        max_shrink: smallest clipping ratio tried is 1 - max_shrink (0.5).
    """

    needs_calibration: ClassVar[bool] = True

    n_grid: int = 20
    clip: bool = True
    max_shrink: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or type(self).__name__
        if isinstance(self.n_grid, bool) or not isinstance(self.n_grid, int) or not 1 <= self.n_grid <= 100:
            raise RecipeError("n_grid", self.n_grid, "use an integer from 1 to 100 (AWQ uses 20)", stage)
        if not isinstance(self.clip, bool):
            raise RecipeError("clip", self.clip, "use true or false", stage)
        if not isinstance(self.max_shrink, (int, float)) or not 0 <= self.max_shrink < 1:
            raise RecipeError("max_shrink", self.max_shrink, "use 0 <= max_shrink < 1 (AWQ uses 0.5)", stage)


def _subsample(X: torch.Tensor, n: int) -> torch.Tensor:
    if X.shape[0] <= n:
        return X
    idx = torch.linspace(0, X.shape[0] - 1, n).round().long()  # evenly spaced, deterministic
    return X[idx]


@torch.no_grad()
def awq_search_scale(X: torch.Tensor, weights: list[torch.Tensor], fake_quants: list[FakeQuant], n_grid: int = 20,
                     ) -> tuple[torch.Tensor, float, list[float]]:
    """Grid-search s = s_X^alpha for linears sharing input X (paper sec. 3.2, eq. 5).

    X: [T, K] calibration inputs; weights: [N_i, K] each, quantized by fake_quants[i] (identity for a
    linear that stays in full precision). Returns (s [K], best alpha, loss per alpha) with
    loss = mean ||Q(W diag(s)) (diag(s)^-1 X) - W X||^2 over the concatenated outputs.
    """
    X = _subsample(X.float(), SCALE_SEARCH_TOKENS)
    W = torch.cat([w.float() for w in weights], dim=0)  # (sum N_i, K)
    Y = X @ W.T  # (T, sum N_i)
    s_X = X.abs().mean(dim=0)  # (K,)
    losses, best = [], (float("inf"), 0.0, torch.ones_like(s_X))
    for i in range(n_grid):
        alpha = i / n_grid
        s = s_X.pow(alpha).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()  # centre the scales around 1 (llm-awq does the same)
        W_q = torch.cat([fq(w.float() * s) for w, fq in zip(weights, fake_quants, strict=True)], dim=0) / s
        loss = (X @ W_q.T - Y).pow(2).mean().item()
        losses.append(loss)
        if loss < best[0]:
            best = (loss, alpha, s)
    return best[2], best[1], losses


@torch.no_grad()
def awq_search_clip(W: torch.Tensor, X: torch.Tensor, fake_quant: FakeQuant, group_size: int,
                    n_grid: int = 20, max_shrink: float = 0.5) -> torch.Tensor:
    """Per (output channel, group) clipping threshold minimising that group's output error.

    W: [N, K] (already scaled), X: [T, K] its inputs. Returns max_val [N, K // group_size]; quantize
    W.clamp(-max_val, max_val) afterwards. Ratios 1, 1 - 1/n_grid, ... down to 1 - max_shrink.
    """
    N, K = W.shape
    G = group_size
    X = _subsample(X.float(), CLIP_SEARCH_TOKENS).reshape(-1, K // G, G)  # (T, ng, G)
    out = []
    for n0 in range(0, N, CLIP_CHUNK):
        w = W[n0:n0 + CLIP_CHUNK].float()  # (n, K)
        wg = w.reshape(w.shape[0], K // G, G)  # (n, ng, G)
        org_max = wg.abs().amax(dim=-1)  # (n, ng)
        Y = torch.einsum("tgk,ngk->tng", X, wg)  # (T, n, ng): per-group partial outputs
        best_err = torch.full_like(org_max, float("inf"))
        best_max = org_max.clone()
        for i in range(int(max_shrink * n_grid)):
            max_val = org_max * (1 - i / n_grid)  # (n, ng)
            w_c = torch.maximum(torch.minimum(wg, max_val[..., None]), -max_val[..., None])
            w_q = fake_quant(w_c.reshape(-1, K)).reshape_as(wg)
            err = (torch.einsum("tgk,ngk->tng", X, w_q) - Y).pow(2).mean(dim=0)  # (n, ng)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_max = torch.where(better, max_val, best_max)
        out.append(best_max)
    return torch.cat(out, dim=0)


def apply_clip(W: torch.Tensor, max_val: torch.Tensor) -> torch.Tensor:
    """W [N, K] clamped to [-max_val, max_val] per group (max_val [N, K // G])."""
    N, K = W.shape
    m = max_val.repeat_interleave(K // max_val.shape[1], dim=1)  # (N, K)
    return torch.maximum(torch.minimum(W, m), -m)


# A Llama-style decoder layer: (op producing the input, linears reading it). AWQ's groups, in order.
SCALE_GROUPS = (
    ("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ("self_attn.v_proj", ("self_attn.o_proj",)),
    ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ("mlp.up_proj", ("mlp.down_proj",)),
)
# Linears whose outputs feed attention scores: llm-awq leaves their range unclipped.
NO_CLIP = ("q_proj", "k_proj")


def _get(layer: nn.Module, name: str) -> nn.Module | None:
    try:
        return layer.get_submodule(name)
    except AttributeError:
        return None


def foldable_groups(layer: nn.Module) -> list[tuple[nn.Module, list[str]]]:
    """The (preceding op, [linear names]) groups of `layer` whose scales fold exactly into that op.

    A norm folds when it is a plain `x * weight` norm (RMSNorm, LayerNorm); a preceding linear folds
    into its rows when its outputs are exactly the next linear's inputs (v -> o only without GQA).
    """
    out = []
    for prev_name, names in SCALE_GROUPS:
        prev, linears = _get(layer, prev_name), [_get(layer, n) for n in names]
        if prev is None or any(not isinstance(m, nn.Linear) for m in linears):
            continue
        if isinstance(prev, nn.Linear):
            if prev.out_features != linears[0].in_features:  # e.g. grouped-query v_proj -> o_proj
                continue
        elif not isinstance(getattr(prev, "weight", None), torch.Tensor) or "gemma" in type(prev).__name__.lower():
            continue  # no weight to fold into, or a (1 + weight) norm
        out.append((prev, list(names)))
    return out


@torch.no_grad()
def fold_scale(prev: nn.Module, linears: list[nn.Linear], s: torch.Tensor) -> None:
    """X -> X / s in the op producing X, W -> W * s in the linears reading it (exact)."""
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s.to(prev.weight)[:, None])
    else:
        prev.weight.div_(s.to(prev.weight))
    if getattr(prev, "bias", None) is not None:
        prev.bias.div_(s.to(prev.bias))
    for lin in linears:
        lin.weight.mul_(s.to(lin.weight))


def _rtn(c: AWQConfig, in_features: int) -> FakeQuant:
    return partial(fake_quant, bits=c.bits, group_size=c.group_for(in_features), symmetric=c.symmetric)


@register("awq", AWQConfig)
def apply(cfg: AWQConfig, layer_ctx) -> None:
    """Search and fold AWQ scales for each input group of the layer, then quantize its targets (RTN)."""
    layer, prefix = layer_ctx.layer, layer_ctx.prefix
    full = (lambda n: f"{prefix}.{n}") if prefix else (lambda n: n)
    targets = layer_ctx.targets()
    local = {n: (n[len(prefix) + 1:] if prefix else n) for n in targets}
    X = layer_ctx.input_activations(list(targets))  # {name: [T, K]}, before any scaling
    W0 = {n: m.weight.detach().float().clone() for n, m in targets.items()}
    b0 = {n: m.bias.detach().float().clone() for n, m in targets.items() if m.bias is not None}
    s_in = {}  # accumulated input scale of each target (inputs become X / s)
    s_out = {}  # output scale of a target that is the `prev` of a later group (v_proj, up_proj): rows / s

    def fq_for(name: str) -> FakeQuant:
        c = layer_ctx.override_for(full(name))
        if c is None:
            return lambda w: w  # stays in full precision: exact
        return _rtn(c, layer.get_submodule(name).in_features)

    for prev, names in foldable_groups(layer):
        targeted = [full(n) for n in names if full(n) in targets]
        if not targeted:
            continue
        linears = [layer.get_submodule(n) for n in names]
        s, alpha, _ = awq_search_scale(X[targeted[0]], [m.weight for m in linears], [fq_for(n) for n in names],
                                       n_grid=cfg.n_grid)
        fold_scale(prev, linears, s)
        prev_name = next((n for n, m in targets.items() if m is prev), None)
        if prev_name is not None:
            s_out[prev_name] = s  # its outputs are now Y / s by design: the SQNR reference must be too
        for n in names:
            s_in[full(n)] = s
        layer_ctx.record(targeted[0], awq_alpha=alpha)

    for name, linear in targets.items():
        c = layer_ctx.override_for(name) or cfg
        G = c.group_for(linear.in_features)
        s = s_in.get(name)
        x = X[name].float() if s is None else X[name].float() / s  # the inputs this linear now sees
        W = linear.weight.detach().float()
        if c.clip and not local[name].endswith(NO_CLIP):
            W = apply_clip(W, awq_search_clip(W, x, _rtn(c, linear.in_features), G, n_grid=c.n_grid,
                                              max_shrink=c.max_shrink))
        q, scales, zeros = quantize(W, c.bits, G, c.symmetric)
        module = pack_linear(q, scales, zeros, bits=c.bits, group_size=G, bias=linear.bias)
        # Output SQNR on calibration inputs: the original layer (with the output scale a later group
        # folded into it, which the next layer undoes) vs the packed one on scaled inputs.
        x_s = _subsample(x, SCALE_SEARCH_TOKENS)
        ref = _subsample(X[name].float(), SCALE_SEARCH_TOKENS) @ W0[name].T
        with torch.no_grad():
            out = module(x_s.to(linear.weight.dtype)).float()
        if name in b0:
            ref = ref + b0[name]
        if name in s_out:
            ref = ref / s_out[name].float()
        layer_ctx.replace(name, module)
        layer_ctx.record(name, sqnr_db=sqnr_db(ref, out), bits=c.bits, group_size=G, awq_scaled=s is not None)
