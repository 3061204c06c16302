"""Online extras (WikiText-2 perplexity, a GSM8K slice, lm-eval-harness): they run only when their
libraries are installed and the hub is reachable; otherwise they report why they were skipped, at once."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import torch

from compressor.engine.text import leading_bos
from compressor.measure.arithmetic import wilson_ci
from compressor.measure.generation import greedy_generate
from compressor.measure.quality import eval_tokens, evaluate_quality
from compressor.measure.settings import EvalSettings


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
