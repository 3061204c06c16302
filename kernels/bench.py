"""Quantized-matmul benchmark: `python -m kernels.bench [--quick] [--shapes 4096x4096] [--batches 1,4]`.

For each weight shape N x K and batch M it times (median of repeats after warm-up) the dense matmul and
each quantized path that runs on this device, through QuantLinear (so the dispatch path is the one a
model gets), and prints:
    ms        median time per call
    GB/s      (weight bytes + x bytes + y bytes) / time: the bytes that must move
    %copy     GB/s as a fraction of a large device copy measured in the same run (read + write bytes)
    vs dense  speed-up over the dense fp16 (CUDA) / bf16 (CPU) matmul of the same shape
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from kernels.modules import QuantLinear

SHAPES = ((4096, 4096), (8192, 8192), (4096, 14336))  # (N, K): out_features x in_features
BATCHES = (1, 4, 16, 64)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(fn, device: torch.device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def copy_bandwidth_gbs(device: torch.device, mib: int) -> float:
    """GB/s of dst.copy_(src) on a large buffer, counting bytes read plus bytes written."""
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), device, warmup=2, repeats=7)
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def _module_bytes(mod: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))


def quant_module(n: int, k: int, bits: int, group_size: int, device: torch.device) -> QuantLinear:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 2**bits, (n, k), generator=g, dtype=torch.uint8)
    scales = (torch.rand(n, k // group_size, generator=g) * 0.01 + 1e-3).half()
    zeros = torch.full((n, k // group_size), 2.0 ** (bits - 1), dtype=torch.float16)
    return QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=group_size).to(device)


def cases(device: torch.device, quick: bool):
    """(label, build(n, k) -> (callable(x), module or dense weight), activation dtype)."""
    if device.type == "cuda":
        yield "dense fp16", "dense", torch.float16, None
        for bits in (4, 3, 2, 8):
            yield f"W{bits}A16 g128", (bits, 128), torch.float16, None
    else:
        yield "dense bf16", "dense", torch.bfloat16, None
        yield "dense fp32", "dense", torch.float32, None
        yield "int4 g128", (4, 128), torch.bfloat16, "cpu-int4pack"
        yield "int8 per-channel", (8, None), torch.bfloat16, "cpu-int8pack"
        if not quick:
            yield "int4 g128 reference", (4, 128, "reference"), torch.bfloat16, "reference"


def run(shapes, batches, quick: bool, device: torch.device) -> list[dict]:
    warmup, repeats = (1, 3) if quick else (2, 7)
    if device.type == "cuda":
        warmup, repeats = 10, 50
        os.environ.setdefault("KERNELS_AUTOTUNE", "full")
    copy_gbs = copy_bandwidth_gbs(device, 256 if device.type == "cpu" else 2048)
    print(f"device copy bandwidth: {copy_gbs:.1f} GB/s (read + write)")
    rows = []
    for n, k in shapes:
        dense_ms = {}
        for label, spec, dtype, expect in cases(device, quick):
            if spec == "dense":
                w = torch.randn(n, k, dtype=dtype, device=device)
                fn_for = lambda x, w=w: x @ w.T  # noqa: E731
                wbytes = w.numel() * w.element_size()
                mod = None
            else:
                bits, g = spec[:2]
                mod = quant_module(n, k, bits, g or k, device)
                if spec[2:] == ("reference",):
                    mod._native_checked = True  # keep the canonical layout: times the reference path
                fn_for = mod
                mod(torch.zeros(1, k, dtype=dtype, device=device))  # adopt the runtime layout before measuring
                wbytes = _module_bytes(mod)
            for m in batches:
                x = torch.randn(m, k, dtype=dtype, device=device)
                with torch.no_grad():
                    ms = median_ms(lambda x=x, f=fn_for: f(x), device, warmup, repeats)
                moved = wbytes + x.numel() * x.element_size() + m * n * x.element_size()
                gbs = moved / (ms * 1e-3) / 1e9
                path = mod.kernel_path if mod is not None else "dense"
                if expect is not None and path != expect:
                    print(f"  note: {label} ran {path}, expected {expect}")
                if spec == "dense" and dtype in (torch.float16, torch.bfloat16):
                    dense_ms[m] = ms
                rows.append({"shape": f"{n}x{k}", "m": m, "case": label, "path": path, "ms": ms, "gbs": gbs,
                             "copy": gbs / copy_gbs, "speedup": dense_ms.get(m, float("nan")) / ms})
                r = rows[-1]
                print(f"{r['shape']:>11} M={m:<3} {label:<20} {path:<14} {ms:9.3f} ms {gbs:8.1f} GB/s "
                      f"{100 * r['copy']:5.1f}% copy  x{r['speedup']:.2f} vs dense", flush=True)
            del mod
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=",".join(f"{n}x{k}" for n, k in SHAPES), help="N x K list, e.g. 4096x4096")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes M, e.g. 1,4")
    ap.add_argument("--quick", action="store_true", help="fewer repeats, skip the slow reference case")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{time.strftime('%Y-%m-%d')} torch {torch.__version__} device {name} threads {torch.get_num_threads()}")
    run(shapes, batches, args.quick, device)


if __name__ == "__main__":
    main()
