"""Answer one free prompt with the baseline and a run's compressed model, for the app's prompt box.

A job target (`target(payload, ctx) -> dict`), run by the job manager (compressor.runs) in a worker
process so that the UI thread never loads a model or generates.

    payload = {"model": "demo", "recipe": {...}, "artifact": "/data/.../artifacts/<run_id>" or None,
               "prompt": "27+58=", "max_new_tokens": 32}
    -> {"prompt": ..., "baseline": "...", "compressed": "...", "source": "artifact" | "recompressed"}

The compressed side loads the run's saved model when its artifact folder holds one (config.json),
else compresses the baseline again with the run's recipe (deterministic for calibration-free
methods and for calibrated ones on the built-in calibration set).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from compressor.errors import LabError
from compressor.runs.limits import check_prompt

MAX_NEW_TOKENS = (1, 128)


def answer(payload: dict, ctx=None) -> dict:
    """Greedy answers of the baseline model and of the compressed artifact to the same prompt."""
    from compressor.engine.kvcache import kv_cache_in_generate
    from compressor.measure.generation import greedy_generate
    from compressor.models.loading import load_model

    prompt = check_prompt(payload.get("prompt") or "")  # the page checks it too, before submitting
    n_new = payload.get("max_new_tokens", 32)
    lo, hi = MAX_NEW_TOKENS
    if isinstance(n_new, bool) or not isinstance(n_new, int) or not lo <= n_new <= hi:
        raise LabError(f"max_new_tokens={n_new!r} is not valid: use an integer in [{lo}, {hi}].")
    spec = payload.get("model") or "demo"
    artifact = payload.get("artifact")
    saved = bool(artifact) and (Path(artifact) / "config.json").is_file()
    if not saved and payload.get("recipe") in (None, ""):
        raise LabError("this run kept no compressed model and no recipe to rebuild it: run it again.")
    out = {"prompt": prompt, "seconds": {}, "source": "artifact" if saved else "recompressed"}
    _step(ctx, "generate-baseline", 0.0, "baseline: loading and generating")
    t0 = time.perf_counter()
    model, tokenizer = load_model(spec)
    _check_positions(model, tokenizer, prompt, n_new)
    out["baseline"] = greedy_generate(model, tokenizer, [prompt], n_new)[0]
    out["seconds"]["baseline"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    if saved:
        _step(ctx, "generate-compressed", 0.5, "compressed: loading the saved model")
        del model
        # the folder comes from the run store, not from the user: allow exactly it, wherever the app keeps
        # its data (a data folder given to the app need not be one of loading.allowed_roots)
        model, tokenizer = load_model(str(artifact), roots=[Path(artifact).resolve()])
    else:
        from compressor.engine.compress import compress

        _step(ctx, "compress", 0.5, "compressed: compressing again with the run's recipe")
        model, _ = compress(model, payload["recipe"])
    # a KV stage (attached by compress, or restored by load_model) changes generation only through its cache
    kv = kv_cache_in_generate(model) if getattr(model, "kv_cache_config", None) else contextlib.nullcontext()
    with kv:
        out["compressed"] = greedy_generate(model, tokenizer, [prompt], n_new)[0]
    out["seconds"]["compressed"] = round(time.perf_counter() - t0, 3)
    return out


def _check_positions(model, tokenizer, prompt: str, n_new: int) -> None:
    """Refuses a prompt whose tokens and answer go beyond the positions the model was trained for: RoPE
    models would answer with extrapolated noise, learned-position ones would fail with an IndexError."""
    from compressor.measure.generation import max_positions

    max_pos = max_positions(model)
    if max_pos is None:
        return
    n = len(tokenizer(prompt)["input_ids"])
    if n + n_new > max_pos:
        raise LabError(f"prompt is {n} tokens, and with {n_new} new tokens it reaches {n + n_new} positions, "
                       f"beyond the model's max_position_embeddings={max_pos}: keep the prompt under "
                       f"{max_pos - n_new} tokens.")


def _step(ctx, stage: str, fraction: float, message: str) -> None:
    if ctx is not None:
        ctx.progress({"stage": stage, "fraction": fraction, "message": message})
