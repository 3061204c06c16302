"""Perplexity of a GGUF export in llama.cpp against the lab's model and transformers' GGUF reader, same tokens.

    pip install llama-cpp-python        # a source build: many minutes on 2 cores; not a project requirement
    python -m compressor.export.llamacpp_check int8 w4-g128 --windows 16

For each recipe: compress the demo model, export GGUF, and compute perplexity on the same token windows
(the demo tokenizer's ids of the held-out text, BOS first) with (1) the fp32 baseline, (2) the lab's
compressed model, (3) transformers loading the GGUF, (4) llama.cpp loading the GGUF. Also checks that
llama.cpp tokenizes the text exactly as the original tokenizer does. Prints one JSON line per recipe.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time

import numpy as np
import torch

WINDOW = 256
# extra recipes by name, beside the presets
EXTRA = {"w4-g32-sym": {"stages": [{"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True}]}}


def _nll_torch(model, windows: list[list[int]]) -> float:
    total, n = 0.0, 0
    with torch.no_grad():
        for w in windows:
            logits = model(input_ids=torch.tensor([w])).logits[0, :-1].float()  # (L-1, V)
            total += float(torch.nn.functional.cross_entropy(logits, torch.tensor(w[1:]), reduction="sum"))
            n += len(w) - 1
    return total / n


def _nll_llama(llm, windows: list[list[int]]) -> float:
    total, n = 0.0, 0
    for w in windows:
        llm.reset()
        llm.eval(w)
        logits = np.asarray(llm.scores[: len(w)], dtype=np.float64)[:-1]  # (L-1, V)
        top = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        total += float((logz - logits[np.arange(len(w) - 1), w[1:]]).sum())
        n += len(w) - 1
    return total / n


def check(recipe: str, n_windows: int, threads: int = 2) -> dict:
    try:
        import llama_cpp
    except ImportError:
        raise SystemExit("llama-cpp-python is not installed: pip install llama-cpp-python (builds llama.cpp)") from None
    import compressor
    from compressor.export import GGUF_FILE, export_model
    from compressor.export.verify import load_export
    from compressor.measure.evaldata import held_out_text
    from compressor.models.loading import load_model

    text = held_out_text()
    model, tok = load_model("demo")
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = [[tok.bos_token_id] + ids[i * (WINDOW - 1):(i + 1) * (WINDOW - 1)] for i in range(n_windows)]
    base = _nll_torch(model, windows)
    model, _ = compressor.compress(model, EXTRA.get(recipe, recipe))
    with tempfile.TemporaryDirectory() as tmp:
        result = export_model(model, tok, "gguf", tmp)
        lab = _nll_torch(model, windows)
        hf = _nll_torch(load_export(tmp, "gguf"), windows) if result.transformers_loads else None
        llm = llama_cpp.Llama(model_path=f"{tmp}/{GGUF_FILE}", n_ctx=WINDOW, n_batch=WINDOW, logits_all=True,
                              n_threads=threads, verbose=False)
        t0 = time.perf_counter()
        lc = _nll_llama(llm, windows)
        seconds = time.perf_counter() - t0
        same_tokens = llm.tokenize(text[:5000].encode(), add_bos=True) == tok(text[:5000])["input_ids"]
    return {"recipe": recipe, "written": sorted({n.written_as for n in result.notes}), "lossless": result.lossless,
            "tokens": n_windows * (WINDOW - 1), "ppl_fp32": round(math.exp(base), 4), "ppl_lab": round(math.exp(lab), 4),
            "ppl_transformers_gguf": None if hf is None else round(math.exp(hf), 4), "ppl_llama_cpp": round(math.exp(lc), 4),
            "llama_cpp_seconds": round(seconds, 1), "llama_cpp_tokenizes_the_same": same_tokens,
            "llama_cpp_python": llama_cpp.__version__}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*", default=["w4-g32-sym", "w4-g128", "int8"])
    p.add_argument("--windows", type=int, default=16, help=f"windows of {WINDOW} tokens")
    args = p.parse_args(argv)
    for recipe in args.recipes:
        print(json.dumps(check(recipe, args.windows)), flush=True)


if __name__ == "__main__":
    main()
