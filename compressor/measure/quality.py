"""Perplexity, KL to the baseline and top-1 agreement, measured on the same tokens for both models.

- Perplexity with a sliding window (`window` tokens of context, advancing by `stride`; each token is
  scored once, with at least `window - stride` tokens of context except in the first window), as in
  the Hugging Face perplexity guide.
- KL divergence of the compressed model's next-token distribution to the baseline's, and top-1
  agreement, as llama.cpp's `--kl-divergence` reports them. The baseline is summarised once as a
  `Reference`: for every scored token its top-k log-probs and token ids plus the log of the remaining
  mass. KL is computed over those k tokens plus one "tail" bucket; by the data-processing inequality
  this is a lower bound on the full-vocabulary KL and equals it when the tail mass is zero. The
  reference also records the mean tail mass so a reader can see how tight it is. It is small enough
  (tokens x k) to cache as JSON with the baseline measurements.
"""

from __future__ import annotations

import base64
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from compressor.errors import LabError

# --- tokens and windows -------------------------------------------------------------------------


def eval_tokens(tokenizer, text: str, n_tokens: int) -> torch.Tensor:
    """The first `n_tokens` + 1 tokens of `text` (the +1 is the last target). Shape [n_tokens + 1]."""
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt", verbose=False)["input_ids"][0]
    if ids.numel() < 2:
        raise LabError("evaluation text tokenizes to fewer than 2 tokens: give a longer text.")
    return ids[: n_tokens + 1]


def sliding_windows(n: int, context: int, stride: int) -> list[tuple[int, int, int]]:
    """Windows over a sequence of n tokens: (begin, end, n_scored). The last n_scored positions of
    each window predict tokens no earlier window scored; together they score positions 1..n-1 once.
    A window starts at least one token before its first target, so stride == context works too."""
    out, prev_end, begin = [], 1, 0  # position 0 has no context: it is never a target
    while prev_end < n:
        end = min(begin + context, n)
        n_scored = end - prev_end
        if n_scored <= 0:
            break
        out.append((begin, end, n_scored))
        prev_end = end
        begin = min(begin + stride, prev_end - 1)
    return out


@torch.no_grad()
def window_logprobs(model, tokens: torch.Tensor, context: int, stride: int, bos_id: int | None = None):
    """Yield (log_probs [n_scored, V] fp32, targets [n_scored]) window by window. With `bos_id`,
    each window is fed as [BOS] + window and the BOS position's prediction is dropped."""
    device = next(model.parameters()).device
    tokens = tokens.to(device)
    lead = 0 if bos_id is None else 1
    for begin, end, n_scored in sliding_windows(tokens.numel(), context, stride):
        ids = tokens[begin:end].unsqueeze(0)  # (1, T)
        if lead:
            ids = torch.cat([torch.full((1, 1), bos_id, dtype=ids.dtype, device=device), ids], dim=1)  # (1, T+1)
        logits = model(input_ids=ids, use_cache=False).logits[0, lead:]  # (T, V)
        # logits at position t predict token t + 1
        logp = F.log_softmax(logits[-n_scored - 1 : -1].float(), dim=-1)  # (n_scored, V)
        yield logp, ids[0, -n_scored:]


def perplexity_from_logprobs(logp: torch.Tensor, targets: torch.Tensor) -> float:
    """exp(mean negative log-likelihood of the targets). logp: [T, V], targets: [T]."""
    nll = -logp.gather(-1, targets.view(-1, 1)).mean()
    return math.exp(nll.item())


# --- the baseline reference and KL --------------------------------------------------------------


@dataclass
class Reference:
    """The baseline's next-token distributions on the evaluation tokens, summarised as top-k."""

    top_ids: torch.Tensor  # [T, k] int64
    top_logp: torch.Tensor  # [T, k] fp32
    tail_logp: torch.Tensor  # [T] fp32, log of 1 - sum(exp(top_logp))
    nll: float  # mean NLL of the baseline on the targets
    n_tokens: int

    def to_dict(self) -> dict:
        def enc(t: torch.Tensor, dtype) -> str:
            return base64.b64encode(t.cpu().numpy().astype(dtype).tobytes()).decode()

        return {"k": self.top_ids.shape[1], "n_tokens": self.n_tokens, "nll": self.nll,
                "top_ids": enc(self.top_ids, np.int32), "top_logp": enc(self.top_logp, np.float32),
                "tail_logp": enc(self.tail_logp, np.float32)}

    @classmethod
    def from_dict(cls, d: dict) -> Reference:
        def dec(s: str, dtype, shape) -> torch.Tensor:
            return torch.from_numpy(np.frombuffer(base64.b64decode(s), dtype=dtype).copy().reshape(shape))

        t, k = d["n_tokens"], d["k"]
        return cls(dec(d["top_ids"], np.int32, (t, k)).long(), dec(d["top_logp"], np.float32, (t, k)),
                   dec(d["tail_logp"], np.float32, (t,)), float(d["nll"]), t)

    @property
    def mean_tail_mass(self) -> float:
        return self.tail_logp.exp().mean().item()


def _tail_logp(top_logp: torch.Tensor) -> torch.Tensor:
    # log(1 - sum p_top), computed stably; clamped so a tail of exactly zero stays finite
    return torch.log1p(-top_logp.exp().sum(-1).clamp(max=1 - 1e-7))


def topk_summary(logp: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top ids [T, k], top log-probs [T, k], tail log-prob [T]) of log-probs [T, V]."""
    k = min(k, logp.shape[-1])
    top_logp, top_ids = logp.topk(k, dim=-1)
    return top_ids, top_logp, _tail_logp(top_logp)


def kl_topk(ref_ids, ref_logp, ref_tail, logq: torch.Tensor) -> torch.Tensor:
    """Per-token KL(P || Q) over the reference's top-k tokens plus one tail bucket. logq: [T, V]."""
    q_top = logq.gather(-1, ref_ids)  # (T, k)
    q_tail = _tail_logp(q_top)
    p_top, p_tail = ref_logp.exp(), ref_tail.exp()
    kl = (p_top * (ref_logp - q_top)).sum(-1) + p_tail * (ref_tail - q_tail)
    return kl.clamp(min=0.0)  # rounding can leave -1e-9


@dataclass
class QualityResult:
    perplexity: float
    nll: float
    n_tokens: int
    context: int
    stride: int
    kld: float | None = None  # mean KL(baseline || this) in nats, None for the baseline itself
    kld_p99: float | None = None
    top1_agreement: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def evaluate_quality(model, tokens: torch.Tensor, context: int, stride: int, top_k: int = 32,
                     reference: Reference | None = None,
                     bos_id: int | None = None) -> tuple[QualityResult, Reference]:
    """Perplexity on `tokens`; with a `reference` (the baseline's), also KL and top-1 agreement.
    Returns the result and this model's own Reference (use it as the baseline's)."""
    nlls, ids_l, logp_l, tail_l, kls, agree = [], [], [], [], [], []
    offset = 0
    for logp, targets in window_logprobs(model, tokens, context, stride, bos_id):
        nlls.append(-logp.gather(-1, targets.view(-1, 1)).squeeze(1).cpu())
        ids, top, tail = topk_summary(logp, top_k)
        ids_l.append(ids.cpu())
        logp_l.append(top.cpu())
        tail_l.append(tail.cpu())
        if reference is not None:
            n = logp.shape[0]
            sl = slice(offset, offset + n)
            r_ids = reference.top_ids[sl].to(logp.device)
            kls.append(kl_topk(r_ids, reference.top_logp[sl].to(logp.device),
                               reference.tail_logp[sl].to(logp.device), logp).cpu())
            agree.append((ids[:, 0] == r_ids[:, 0]).cpu())
            offset += n
    nll = torch.cat(nlls)
    own = Reference(torch.cat(ids_l), torch.cat(logp_l), torch.cat(tail_l), nll.mean().item(), nll.numel())
    result = QualityResult(math.exp(nll.mean().item()), nll.mean().item(), nll.numel(), context, stride)
    if reference is not None:
        if reference.n_tokens != nll.numel():
            raise LabError(f"the baseline reference covers {reference.n_tokens} tokens but this evaluation "
                           f"scored {nll.numel()}: evaluate both with the same tokens and settings.")
        kl = torch.cat(kls)
        result.kld = kl.mean().item()
        result.kld_p99 = kl.quantile(0.99).item()
        result.top1_agreement = torch.cat(agree).float().mean().item()
    return result, own
