"""Answer one free prompt with the baseline and a run's compressed model, for the app's prompt box.

A job target (`target(payload, ctx) -> dict`), run by a `compressor.jobs.JobManager` in a worker
process so that the UI thread never loads a model or generates.

    payload = {"model": "demo", "artifact": "/data/.../artifacts/<run_id>", "prompt": "27+58=",
               "max_new_tokens": 32}
    -> {"prompt": ..., "baseline": "...", "compressed": "...", "seconds": {...}}
"""

from __future__ import annotations

import time

from .errors import LabError

MAX_PROMPT_CHARS = 2000
MAX_NEW_TOKENS = (1, 128)


def answer(payload: dict, ctx=None) -> dict:
    """Greedy answers of the baseline model and of the compressed artifact to the same prompt."""
    from .evaluate import greedy_generate
    from .loading import load_model

    prompt = str(payload.get("prompt") or "")
    if not prompt.strip():
        raise LabError("prompt is empty: type a few words for both models to continue.")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise LabError(f"prompt has {len(prompt)} characters: keep it under {MAX_PROMPT_CHARS}.")
    n_new = payload.get("max_new_tokens", 32)
    lo, hi = MAX_NEW_TOKENS
    if isinstance(n_new, bool) or not isinstance(n_new, int) or not lo <= n_new <= hi:
        raise LabError(f"max_new_tokens={n_new!r} is not valid: use an integer in [{lo}, {hi}].")
    artifact = payload.get("artifact")
    if not artifact:
        raise LabError("this run kept no compressed model (it failed, or its artifact was pruned): run it again.")
    out = {"prompt": prompt, "seconds": {}}
    for side, spec in (("baseline", payload.get("model") or "demo"), ("compressed", artifact)):
        t0 = time.perf_counter()
        if ctx is not None:
            ctx.progress({"stage": f"generate-{side}", "fraction": 0.5 if side == "compressed" else 0.0,
                          "message": f"{side}: loading and generating"})
        model, tokenizer = load_model(spec)
        out[side] = greedy_generate(model, tokenizer, [prompt], n_new)[0]
        out["seconds"][side] = round(time.perf_counter() - t0, 3)
        del model
    return out
