"""Speed and memory of a causal LM, measured the same way for baseline and compressed models.

Prefill: one forward over a [B, P] prompt that fills a KV cache; tokens/s = B * P / seconds.
Time to first token: the batch-1 prefill plus picking the first token.
Decode: `n_new` single-token forwards reusing the cache (the path `generate` takes);
tokens/s = B * n_new / seconds. Each figure: one warm-up, then `repeats` timed runs; median, min, max.
On CPU, batch-1 decode runs on one thread (`DECODE_THREADS`), for the baseline and the compressed model
alike: its matmuls have M = 1, and splitting them over threads costs more in wake-ups than it saves. On
the 2-core development machine, quiet, one thread decoded faster for every model measured (demo fp32
212 vs 133 tok/s on two; SmolLM2 fp32 16.0 vs 15.3, its RTN int4 29.8 vs 19.6: docs/benchmarks.md).
Prefill keeps torch's thread count.

Memory: weight bytes are counted exactly (parameters + buffers). KV bytes per token come from the
cache object a real prefill filled (and from the config formula, for comparison). Peak memory is
`torch.cuda.max_memory_allocated` on GPU; on CPU it is the process's peak resident set size during
generation, read from the kernel's high-water mark (`VmHWM`, reset through `/proc/self/clear_refs`)
with RSS sampling as the fallback. RSS includes the Python runtime and libraries, so the figure that
isolates generation is `peak_memory_delta_bytes` (peak minus resident size just before).
"""

from __future__ import annotations

import ctypes
import gc
import os
import statistics
import threading
import time
from contextlib import contextmanager

import psutil
import torch

from compressor.engine.kvcache import cache_nbytes, head_dim_of, kv_cache_for, kv_heads_per_layer
from compressor.engine.report import weight_bytes  # noqa: F401  (re-exported: speed and memory in one place)

# --- memory -------------------------------------------------------------------------------------


def _dtype_bytes(dtype) -> int:
    return torch.tensor([], dtype=dtype).element_size()


def kv_bytes_per_token_from_config(config, dtype=torch.float32) -> int:
    """sum over layers of kv_heads[layer] x head_dim x 2 (K and V) x bytes per element.

    Structured pruning removes whole KV groups per layer and lists what is left in
    `config.pruned_layout["num_key_value_heads"]` (compressor/engine/methods/prune_structured.py), keeping
    head_dim and the global `num_key_value_heads`; without a layout every layer has the global count.
    """
    return sum(kv_heads_per_layer(config)) * head_dim_of(config) * 2 * _dtype_bytes(dtype)


def _trim_heap() -> None:
    """Return freed memory to the OS so RSS before a measurement reflects live memory (glibc)."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _read_hwm() -> int | None:
    try:
        with open(f"/proc/{os.getpid()}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open(f"/proc/{os.getpid()}/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


@contextmanager
def peak_memory(device: torch.device | str):
    """Measures peak memory inside the block. Yields a dict filled on exit with peak_memory_bytes,
    peak_memory_delta_bytes and memory_method."""
    result: dict = {}
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        yield result
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        result.update(peak_memory_bytes=peak, peak_memory_delta_bytes=peak - before,
                      memory_method="torch.cuda.max_memory_allocated")
        return
    _trim_heap()
    proc = psutil.Process()
    before = proc.memory_info().rss
    hwm_ok = _reset_hwm()
    sampled = [before]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            sampled.append(proc.memory_info().rss)
            stop.wait(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
    peak = max(sampled)
    hwm = _read_hwm() if hwm_ok else None
    if hwm is not None:
        peak = max(peak, hwm)
    result.update(peak_memory_bytes=peak, peak_memory_delta_bytes=peak - before,
                  memory_method="process RSS peak (VmHWM reset via clear_refs)" if hwm is not None
                  else "process RSS sampled every 2 ms")


# --- speed --------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _stats(xs: list[float]) -> dict:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def kernel_paths(model: torch.nn.Module) -> dict[str, int]:
    """How many modules last ran each kernel path (modules with a `kernel_path` attribute, and
    bitsandbytes layers by class)."""
    counts: dict[str, int] = {}
    for m in model.modules():
        path = getattr(m, "kernel_path", None)
        if path is None and type(m).__module__.startswith("bitsandbytes"):
            path = f"bitsandbytes-{type(m).__name__}"  # bnb layers name no path; their class says it
        if path:
            counts[str(path)] = counts.get(str(path), 0) + 1
    return counts


DECODE_THREADS = 1  # CPU threads for batch-1 decode (see the module docstring)


def decode_threads(device: torch.device, batch: int) -> int:
    """Threads batch-`batch` decode runs on: DECODE_THREADS for batch 1 on CPU, else torch's count."""
    return DECODE_THREADS if device.type == "cpu" and batch == 1 else torch.get_num_threads()


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


@torch.no_grad()
def _prefill_decode(model, ids: torch.Tensor, n_new: int) -> tuple[float, float, float, object]:
    """One prefill + n_new greedy decode steps (on `decode_threads`). Returns (prefill_s, first_token_s,
    decode_s, cache)."""
    device = ids.device
    _sync(device)
    cache = kv_cache_for(model)  # a compressed KV cache when a KV stage configured the model
    t0 = time.perf_counter()
    out = model(input_ids=ids, past_key_values=cache, use_cache=True)
    _sync(device)
    t1 = time.perf_counter()
    tok = out.logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
    _sync(device)
    t_first = time.perf_counter()
    cache = out.past_key_values
    with _threads(decode_threads(device, ids.shape[0])):
        t_dec = time.perf_counter()  # after the switch: a thread-count change is not a decode step
        for _ in range(n_new):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            tok = out.logits[:, -1].argmax(-1, keepdim=True)
        _sync(device)
        t2 = time.perf_counter()
    return t1 - t0, t_first - t0, t2 - t_dec, cache


@torch.no_grad()
def measure_speed(model, vocab_size: int, prompt_tokens: int = 128, new_tokens: int = 16,
                  batches: tuple[int, ...] = (1, 8), repeats: int = 3, seed: int = 0) -> dict:
    """Prefill and decode tokens/s at each batch size, time to first token at batch 1, peak memory
    and KV bytes per token of a batch-1 generation, and the kernel paths that ran."""
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    res: dict = {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "repeats": repeats,
                 "warmup": 1, "by_batch": {}}
    for b in batches:
        ids = torch.randint(1, vocab_size, (b, prompt_tokens), generator=g).to(device)  # (B, P)
        _prefill_decode(model, ids, 2)  # warm-up: first-call allocations, kernel selection, autotune
        pre, first, dec = [], [], []
        for _ in range(repeats):
            p, f, d, _ = _prefill_decode(model, ids, new_tokens)
            pre.append(b * prompt_tokens / p)
            first.append(f)
            dec.append(b * new_tokens / d)
        res["by_batch"][str(b)] = {"prefill_tokens_per_s": _stats(pre), "decode_tokens_per_s": _stats(dec),
                                   "time_to_first_token_s": _stats(first)}
    ids = torch.randint(1, vocab_size, (1, prompt_tokens), generator=g).to(device)
    with peak_memory(device) as mem:
        _, _, _, cache = _prefill_decode(model, ids, new_tokens)
    res.update(mem)
    measured = cache_nbytes(cache)  # holds prompt_tokens + new_tokens positions
    res["kv_bytes_per_token_measured"] = measured / (prompt_tokens + new_tokens) if measured else None
    res["kernel_paths"] = kernel_paths(model)
    res["decode_threads"] = decode_threads(device, 1)
    b1 = res["by_batch"][str(batches[0])]
    res["prefill_tokens_per_s"] = b1["prefill_tokens_per_s"]["median"]
    res["decode_tokens_per_s"] = b1["decode_tokens_per_s"]["median"]
    res["time_to_first_token_s"] = b1["time_to_first_token_s"]["median"]
    return res
