"""Perplexity of a GGUF export in llama.cpp against the lab's model and transformers' GGUF reader, same tokens.

    pip install llama-cpp-py-sync       # prebuilt CPU llama.cpp (needs glibc 2.38: see docs/export.md), or
    pip install llama-cpp-python        # a source build: many minutes on 2 cores; neither is a project requirement
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


class LlamaCpp:
    """llama.cpp on a GGUF file through whichever binding is installed: llama-cpp-python, or llama-cpp-py-sync's
    C API (its documented low-level escape hatch: get_ffi/get_lib). logits(tokens) -> [L, V] for every position."""

    def __init__(self, path: str, n_ctx: int, threads: int):
        try:
            import llama_cpp

            self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, logits_all=True,
                                       n_threads=threads, verbose=False)
            self.version = f"llama-cpp-python {llama_cpp.__version__}"
            return
        except ImportError:
            self.llm = None
        try:
            import llama_cpp_py_sync
            from llama_cpp_py_sync._cffi_bindings import get_ffi, get_lib
        except ImportError:
            raise SystemExit("no llama.cpp binding: pip install llama-cpp-py-sync (prebuilt) or llama-cpp-python "
                             "(builds llama.cpp)") from None
        self.ffi, self.lib = get_ffi(), get_lib()
        self._quiet = self.ffi.callback("ggml_log_callback", lambda level, text, data: None)  # kept alive here
        self.lib.llama_log_set(self._quiet, self.ffi.NULL)
        self.lib.llama_backend_init()
        mp = self.lib.llama_model_default_params()
        mp.n_gpu_layers = 0
        self.model = self.lib.llama_model_load_from_file(path.encode(), mp)
        cp = self.lib.llama_context_default_params()
        cp.n_ctx = cp.n_batch = cp.n_ubatch = n_ctx
        cp.n_threads = cp.n_threads_batch = threads
        self.ctx = self.lib.llama_init_from_model(self.model, cp)
        if self.model == self.ffi.NULL or self.ctx == self.ffi.NULL:
            raise SystemExit(f"llama.cpp could not load {path}")
        self.vocab = self.lib.llama_model_get_vocab(self.model)
        self.n_vocab = self.lib.llama_vocab_n_tokens(self.vocab)
        self.version = f"llama-cpp-py-sync {llama_cpp_py_sync.__version__} (llama.cpp {llama_cpp_py_sync.__llama_cpp_tag__})"

    def tokenize(self, text: str, add_bos: bool = True) -> list[int]:
        if self.llm is not None:
            return self.llm.tokenize(text.encode(), add_bos=add_bos)
        raw = text.encode()
        buf = self.ffi.new(f"llama_token[{len(raw) + 16}]")
        n = self.lib.llama_tokenize(self.vocab, raw, len(raw), buf, len(raw) + 16, add_bos, False)
        return [buf[i] for i in range(n)]

    def logits(self, tokens: list[int]) -> np.ndarray:
        if self.llm is not None:
            self.llm.reset()
            self.llm.eval(tokens)
            return np.asarray(self.llm.scores[: len(tokens)], dtype=np.float32)
        lib = self.lib
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        batch = lib.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, t in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = t, i, 1, 1
                batch.seq_id[i][0] = 0
            if lib.llama_decode(self.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed")
            return np.stack([np.frombuffer(self.ffi.buffer(lib.llama_get_logits_ith(self.ctx, i), 4 * self.n_vocab),
                                           dtype=np.float32).copy() for i in range(len(tokens))])  # (L, V)
        finally:
            lib.llama_batch_free(batch)


def _nll_llama(llm: LlamaCpp, windows: list[list[int]]) -> float:
    total, n = 0.0, 0
    for w in windows:
        logits = llm.logits(w).astype(np.float64)[:-1]  # (L-1, V)
        top = logits.max(-1, keepdims=True)
        logz = np.log(np.exp(logits - top).sum(-1)) + top[:, 0]
        total += float((logz - logits[np.arange(len(w) - 1), w[1:]]).sum())
        n += len(w) - 1
    return total / n


def _probe_logits(llm: LlamaCpp, model, ids: list[int]) -> float:
    """max |llama.cpp's logits - `model`'s| on one window (both fp32 outputs)."""
    with torch.no_grad():
        ref = model(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    return float(np.abs(llm.logits(ids) - ref).max())


def check(recipe: str, n_windows: int, threads: int = 2) -> dict:
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
        reader = load_export(tmp, "gguf") if result.transformers_loads else None
        hf = _nll_torch(reader, windows) if reader is not None else None
        llm = LlamaCpp(f"{tmp}/{GGUF_FILE}", WINDOW, threads)
        t0 = time.perf_counter()
        lc = _nll_llama(llm, windows)
        seconds = time.perf_counter() - t0
        same_tokens = llm.tokenize(text[:5000]) == tok(text[:5000])["input_ids"]
        # the same file, two readers: llama.cpp's kernels against transformers' dequantized fp32 weights
        vs_reader = _probe_logits(llm, reader, windows[0]) if reader is not None else None
    return {"recipe": recipe, "written": sorted({n.written_as for n in result.notes}), "lossless": result.lossless,
            "tokens": n_windows * (WINDOW - 1), "ppl_fp32": round(math.exp(base), 4), "ppl_lab": round(math.exp(lab), 4),
            "ppl_transformers_gguf": None if hf is None else round(math.exp(hf), 4), "ppl_llama_cpp": round(math.exp(lc), 4),
            "llama_cpp_seconds": round(seconds, 1), "llama_cpp_tokenizes_the_same": same_tokens,
            "logits_max_abs_llama_cpp_vs_transformers_gguf": None if vs_reader is None else round(vs_reader, 4),
            "llama_cpp": llm.version}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipes", nargs="*", default=["w4-g32-sym", "w4-g128", "int8"])
    p.add_argument("--windows", type=int, default=16, help=f"windows of {WINDOW} tokens")
    args = p.parse_args(argv)
    for recipe in args.recipes:
        print(json.dumps(check(recipe, args.windows)), flush=True)


if __name__ == "__main__":
    main()
