"""Quality measured on the same tokens for a baseline and a compressed model.

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
- Arithmetic exact match: greedy continuation, answer parsed strictly (`parse_answer`), a Wilson score
  interval on the accuracy and Newcombe's paired score interval on the compressed-minus-baseline difference.
- Online extras (WikiText-2 perplexity, a GSM8K slice, lm-eval-harness) run only when their libraries
  are installed and the hub is reachable; otherwise they report why they were skipped, at once.
"""

from __future__ import annotations

import base64
import importlib.util
import math
import re
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np
import torch
import torch.nn.functional as F

from compressor.errors import LabError

# --- settings -----------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """How much to evaluate. Defaults keep an RTN run on the demo model well under a minute on 2 cores.

    Args:
        ppl_tokens: tokens of held-out text scored for perplexity and KL.
        context: sliding-window length (tokens of context per forward).
        stride: window advance; tokens scored per window after the first. Default (None): half the
            context, at least 8; resolved here once, so every entry point measures the same windows.
        top_k: baseline log-probs kept per token for KL (plus one tail bucket).
        arithmetic_samples: arithmetic problems (exact match, greedy).
        max_new_tokens: tokens generated for each side-by-side sample prompt.
        speed_prompt_tokens: prompt length for prefill timing.
        speed_new_tokens: decode steps timed per repeat.
        speed_batch: the larger batch for prefill/decode timing (batch 1 is always measured).
        repeats: timed repeats (median, min, max reported) after one warm-up.
        online_extras: try WikiText-2 / GSM8K / lm-eval when libraries and the hub are available.
        attribute_stages: with a recipe of several stages, also measure perplexity, KL and
            arithmetic after each stage but the last, so the report attributes the quality change to
            each stage (one extra quality evaluation per stage, no speed runs).
    """

    ppl_tokens: int = 2048
    context: int = 256
    stride: int | None = None
    top_k: int = 32
    arithmetic_samples: int = 100
    max_new_tokens: int = 24
    speed_prompt_tokens: int = 128
    speed_new_tokens: int = 16
    speed_batch: int = 8
    repeats: int = 3
    online_extras: bool = True
    attribute_stages: bool = True

    # (min, max) accepted for each integer setting: large enough to mean something, small enough
    # that one run cannot occupy a shared 2-core machine for an hour.
    BOUNDS = {
        "ppl_tokens": (128, 65536), "context": (16, 8192), "stride": (8, 8192), "top_k": (1, 256),
        "arithmetic_samples": (0, 800), "max_new_tokens": (1, 256), "speed_prompt_tokens": (8, 4096),
        "speed_new_tokens": (2, 256), "speed_batch": (1, 64), "repeats": (1, 20),
    }

    def __post_init__(self):
        if self.stride is None and isinstance(self.context, int) and not isinstance(self.context, bool):
            self.stride = max(8, self.context // 2)
        for name, (lo, hi) in self.BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
                raise LabError(f"eval setting {name}={value!r} is not valid: use an integer in [{lo}, {hi}].")
        for name in ("online_extras", "attribute_stages"):
            if not isinstance(getattr(self, name), bool):
                raise LabError(f"eval setting {name}={getattr(self, name)!r} is not valid: use true or false.")
        if self.stride > self.context:
            raise LabError(f"eval setting stride={self.stride} is larger than context={self.context}: "
                           "use a stride <= context (half the context is usual).")

    @classmethod
    def from_dict(cls, d: dict | None) -> EvalSettings:
        d = dict(d or {})
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise LabError(f"unknown eval setting(s) {unknown}: known are {sorted(cls.__dataclass_fields__)}.")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


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


def max_positions(model) -> int | None:
    """The positions a model was trained for (`config.max_position_embeddings`), None when it declares none."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def leading_bos(tokenizer) -> int | None:
    """The BOS id when this tokenizer starts every text with it (Llama's, the demo model's), else None.

    Such models only ever saw BOS at position 0 in training, so each evaluation window and each
    prompt starts with it too; a window starting mid-sentence at position 0 is out of distribution.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos if bos is not None and ids and ids[0] == bos else None


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


# --- arithmetic ---------------------------------------------------------------------------------

# An integer in ASCII digits: an optional sign, then thousands groups ("1,234") or a plain run of
# digits, not glued to a word, a decimal point or a comma before it ("x85", ".85"). What follows is
# judged by _END.
_NUMBER = re.compile(r"(?<![\w.,])[-\u2212]?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)")
# What may follow the answer: closing punctuation or brackets, then a space or the end of the line.
# Anything else ("85.7", "85-3=82", "85%", "85th", "1,23") means the token is not this integer.
_END = re.compile(r"[.,;:!?)\]}*\"'\u201d\u2019]*(?:\s|$)")
# The end of the sentence holding the answer: . ! or ? followed by a space or the end of the line.
_SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
_DIGIT = re.compile(r"\d")  # any script's digits: only ASCII ones answer, but all of them compete
_PREFIX = re.compile(r"^\s*(?:(?:the\s+)?answer(?:\s+is)?\s*[:=]?|=)\s*", re.IGNORECASE)


def parse_answer(text: str) -> str | None:
    """The integer a model answered with, as a canonical string, or None.

    The rules, chosen so that a wrong answer never reads as a right one:

    - Only the first non-empty line counts: a wrong first line is not rescued by a later number.
    - An optional "Answer:", "the answer is" or "=" prefix and leading spaces are skipped.
    - The answer is the first number on that line, and it must be an integer in ASCII digits with an
      optional sign and thousands commas ("1,234"). Digits of other scripts ("٨٥", "８５") are not
      read, and a line whose first number is not such an integer is None.
    - It must be followed by a space or the end of the line, after optional closing punctuation
      (. , ; : ! ? brackets, quotes). So "85.", "85 apples" and "85, apples" read as 85, while a
      decimal ("85.7"), a computation that goes on ("85-3=82") or a malformed group ("1,23") is None.
    - The rest of its sentence (up to . ! or ? and a space) holds no other digit: a line offering
      several candidates ("85 or 86", "85, 86, 87", "12, 34") is None. A new sentence may follow
      ("85. Next: 27+58=85" reads as 85).
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    line = _PREFIX.sub("", lines[0], count=1)
    m = _NUMBER.search(line)
    if m is None or _DIGIT.search(line, 0, m.start()) or not _END.match(line, m.end()):
        return None
    end = _SENTENCE_END.search(line, m.end())
    if _DIGIT.search(line, m.end(), end.start() if end else len(line)):
        return None
    return str(int(m.group(0).replace(",", "").replace("\u2212", "-")))


@torch.no_grad()
def greedy_generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int = 32) -> list[str]:
    """Greedy continuations (text only, prompt removed), batched with left padding."""
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out = []
    try:
        for i in range(0, len(prompts), batch_size):
            # special tokens as the tokenizer adds them by default: prompts look like a user's
            enc = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True).to(device)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=None,
                                 temperature=None, top_p=None, top_k=None)
            new = gen[:, enc["input_ids"].shape[1] :]  # (B, max_new_tokens)
            out += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return out


def wilson_ci(correct, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for the success rate of 0/1 outcomes (Wilson 1927,
    https://doi.org/10.1080/01621459.1927.10502953; method 3 of Newcombe 1998,
    https://doi.org/10.1002/(SICI)1097-0258(19980430)17:8<857::AID-SIM777>3.0.CO;2-E).

    Unlike a percentile bootstrap it keeps a width at 0% and 100%: 8/8 gives [0.68, 1.0], as 8 in a
    row still happens 6% of the time at a true rate of 0.7. (nan, nan) for no outcomes.
    """
    n, k = len(correct), sum(int(c) for c in correct)
    if n == 0:
        return (float("nan"), float("nan"))
    return _wilson(k, n, NormalDist().inv_cdf(1 - alpha / 2))


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p, z2 = k / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # at k = 0 or k = n one end is exactly 0 or 1; rounding must not move it
    return (0.0 if k == 0 else max(0.0, centre - half), 1.0 if k == n else min(1.0, centre + half))


def paired_diff_ci(a, b, alpha: float = 0.05) -> tuple[float, float]:
    """Interval for mean(b) - mean(a), where a[i] and b[i] are 0/1 outcomes on the same item i.

    Newcombe's hybrid score interval for the difference of paired proportions (method 10 of
    Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions
    based on paired data", Statistics in Medicine 17:2635-2650): the Wilson intervals of both rates,
    combined by "square and add" with the estimated correlation phi between them. It stays honest with
    few discordant pairs, where a bootstrap collapses: identical outcomes on 8 items give
    [-0.32, 0.32], not [0, 0].

    With counts n11 (both right), n12 (only b right), n21 (only a right), n22 (both wrong):
    theta = (n12 - n21) / n; phi = (n11 n22 - n12 n21) / sqrt(product of the four margins), set to 0
    when a margin is 0, reduced by n/2 towards 0 when positive (0 if that crosses 0), as Newcombe does.
    (nan, nan) when there are no items or the lengths differ.
    """
    if len(a) == 0 or len(a) != len(b):
        return (float("nan"), float("nan"))
    n11 = n12 = n21 = n22 = 0
    for x, y in zip(a, b, strict=True):
        n11 += bool(x) and bool(y)
        n12 += bool(y) and not x
        n21 += bool(x) and not y
        n22 += not x and not y
    n = n11 + n12 + n21 + n22
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p1, p2 = (n11 + n12) / n, (n11 + n21) / n  # rate of b, rate of a
    l1, u1 = _wilson(n11 + n12, n, z)
    l2, u2 = _wilson(n11 + n21, n, z)
    margins = (n11 + n12) * (n21 + n22) * (n11 + n21) * (n12 + n22)
    cross = n11 * n22 - n12 * n21
    cross = max(cross - n / 2, 0.0) if cross > 0 else cross
    phi = cross / math.sqrt(margins) if margins else 0.0
    theta = p1 - p2
    delta = math.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    eps = math.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return (max(-1.0, theta - delta), min(1.0, theta + eps))


def arithmetic_max_new_tokens(tokenizer, problems: list[dict]) -> int:
    """Enough tokens for the longest answer plus a little trailing text."""
    longest = max((len(tokenizer(" " + p["answer"], add_special_tokens=False)["input_ids"]) for p in problems),
                  default=1)
    return longest + 2


def evaluate_arithmetic(model, tokenizer, problems: list[dict]) -> dict:
    """Exact match on `problems` (dicts with prompt, answer, kind). Per-item outcomes are kept for
    paired comparisons; accuracy comes with a 95% Wilson interval and a per-kind breakdown."""
    if not problems:
        return {"accuracy": None, "n": 0, "ci95": None, "correct": [], "by_kind": {}, "examples": []}
    texts = greedy_generate(model, tokenizer, [p["prompt"] for p in problems],
                            arithmetic_max_new_tokens(tokenizer, problems))
    correct = [parse_answer(t) == p["answer"] for t, p in zip(texts, problems, strict=True)]
    by_kind: dict[str, list[bool]] = {}
    for ok, p in zip(correct, problems, strict=True):
        by_kind.setdefault(p.get("kind", "all"), []).append(ok)
    return {
        "accuracy": float(np.mean(correct)), "n": len(correct), "ci95": list(wilson_ci(correct)),
        "correct": [int(c) for c in correct],
        "by_kind": {k: {"accuracy": float(np.mean(v)), "n": len(v)} for k, v in sorted(by_kind.items())},
        "examples": [{"prompt": p["prompt"], "answer": p["answer"], "output": t}
                     for p, t in list(zip(problems, texts, strict=True))[:5]],
    }


# --- online extras ------------------------------------------------------------------------------


def _online_status() -> str | None:
    """None when online extras can run, else the reason they cannot (returned at once)."""
    if importlib.util.find_spec("datasets") is None:
        return "skipped: the `datasets` library is not installed (pip install datasets)"
    from compressor.models.loading import hub_reachable

    if not hub_reachable(timeout=2.0):
        return "skipped: offline (HF_HUB_OFFLINE is set or the Hugging Face Hub did not answer in 2 s)"
    return None


@torch.no_grad()
def online_extras(model, tokenizer, settings: EvalSettings, gsm8k_samples: int = 20) -> dict:
    """WikiText-2 perplexity, a GSM8K slice, lm-eval-harness; each says why when it did not run."""
    reason = _online_status() if settings.online_extras else "skipped: disabled in eval settings"
    out: dict = {}
    if reason:
        out["wikitext2"] = out["gsm8k"] = {"status": reason}
    else:
        out["wikitext2"] = _guard(lambda: _wikitext2(model, tokenizer, settings))
        out["gsm8k"] = _guard(lambda: _gsm8k(model, tokenizer, gsm8k_samples))
    if importlib.util.find_spec("lm_eval") is None:
        out["lm_eval"] = {"status": "skipped: lm-eval-harness is not installed (pip install lm-eval)"}
    elif reason:
        out["lm_eval"] = {"status": reason}
    else:
        out["lm_eval"] = _guard(lambda: _lm_eval(model, tokenizer))
    return out


def _guard(fn) -> dict:
    try:
        return {"status": "ok", **fn()}
    except Exception as e:  # an online extra never fails the run; it reports why
        return {"status": f"failed: {type(e).__name__}: {e}"}


def _wikitext2(model, tokenizer, settings: EvalSettings) -> dict:
    from datasets import load_dataset

    ds = load_dataset("wikitext", "wikitext-2-raw-v1", split="test")
    tokens = eval_tokens(tokenizer, "\n\n".join(ds["text"]), settings.ppl_tokens)
    res, _ = evaluate_quality(model, tokens, settings.context, settings.stride, top_k=1,
                              bos_id=leading_bos(tokenizer))
    return {"perplexity": res.perplexity, "n_tokens": res.n_tokens, "context": settings.context,
            "stride": settings.stride}


def _gsm8k(model, tokenizer, n: int) -> dict:
    from datasets import load_dataset

    ds = load_dataset("openai/gsm8k", "main", split=f"test[:{n}]")
    prompts = [f"Question: {q}\nAnswer:" for q in ds["question"]]
    golds = [a.split("####")[-1].strip().replace(",", "") for a in ds["answer"]]
    outs = greedy_generate(model, tokenizer, prompts, max_new_tokens=128, batch_size=4)
    # GSM8K answers end with the number; take the last number the model wrote
    preds = [(re.findall(r"-?\d[\d,]*", o) or [""])[-1].replace(",", "") for o in outs]
    correct = [p == g for p, g in zip(preds, golds, strict=True)]
    return {"accuracy": float(np.mean(correct)), "n": len(correct), "ci95": list(wilson_ci(correct))}


def _lm_eval(model, tokenizer, tasks: tuple[str, ...] = ("arc_easy",), limit: int = 50) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    res = simple_evaluate(model=HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4), tasks=list(tasks),
                          limit=limit)
    return {"tasks": list(tasks), "limit": limit, "results": res.get("results", {})}
