"""Quantized-matmul benchmark: `python -m kernels.bench [--quick] [--shapes 4096x4096] [--batches 1,4]`.

Built for a shared machine: every cell (shape x batch x case) and a device-copy probe are timed once per
round, rounds interleaved, so a burst of load elsewhere hits all cells alike; each figure is the minimum
(the best estimate of the unloaded time) and the median over rounds, and the load average is printed
beside the table. Quantized cases run through QuantLinear, so the dispatch path is the one a model gets.

    ms        time per call (min / median over rounds)
    GB/s      (weight bytes held + x bytes + y bytes) / min time: the bytes that must move
    %copy     GB/s as a fraction of the copy probe's best bandwidth in the same rounds (read + write bytes)
    vs dense  speed-up over the dense fp16 (CUDA) / fp32 (CPU, the baseline as loaded) matmul, from minima

Two more modes on CPU (model layer shapes by default: the demo model's and SmolLM2-135M's):
    --overhead   QuantLinear around aten's int4/int8 kernels vs the bare aten call, M = 1, fp32 x as a
                 model gives it ([1, K] and [1, 1, K]): what the wrapper adds per call
    --crossover  for each M, the native kernel vs dequantize-to-bf16 + dense bf16 matmul (cpu_plan.DENSE_FROM)
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
# (N, K) of the demo model's linears (hidden 256, MLP 768) and SmolLM2-135M's (hidden 576, KV 192, MLP 1536)
MODEL_SHAPES = ((256, 256), (768, 256), (256, 768), (576, 576), (192, 576), (1536, 576), (576, 1536))
CROSSOVER_BATCHES = (1, 4, 8, 16, 24, 32, 48, 64, 96, 128)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_s(fn, device: torch.device, inner: int = 1) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / inner


def interleaved(fns: dict, device: torch.device, rounds: int, warmup: int = 2, inner: int = 1) -> dict:
    """{name: [seconds per call, one per round]}: every fn once per round, in turn."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            times[name].append(_time_s(fn, device, inner))
    return times


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} cpus"
    except OSError:
        return "load average n/a"


def _module_bytes(mod: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(mod.parameters()) + list(mod.buffers()))


def quant_module(n: int, k: int, bits: int, group_size: int, device: torch.device,
                 symmetric: bool = True) -> QuantLinear:
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 2**bits, (n, k), generator=g, dtype=torch.uint8)
    scales = (torch.rand(n, k // group_size, generator=g) * 0.01 + 1e-3).half()
    zeros = torch.full((n, k // group_size), 2.0 ** (bits - 1), dtype=torch.float16) if symmetric else \
        torch.randint(0, 2**bits, (n, k // group_size), generator=g).half()
    return QuantLinear.from_quantized(q, scales, zeros, bits=bits, group_size=group_size).to(device)


def cases(device: torch.device, quick: bool):
    """(label, spec, activation dtype, expected path at M = 1)."""
    if device.type == "cuda":
        yield "dense fp16", "dense", torch.float16, None
        for bits in (4, 3, 2, 8):
            yield f"W{bits}A16 g128", (bits, 128), torch.float16, None
        return
    yield "dense fp32", "dense", torch.float32, None
    yield "dense bf16", "dense", torch.bfloat16, None
    yield "int4 g128", (4, 128), torch.float32, "cpu-int4pack"
    yield "int8 per-channel", (8, None), torch.float32, "cpu-int8pack"
    yield "int3 g128", (3, 128), torch.float32, "cpu-int4pack"
    yield "int2 g128", (2, 128), torch.float32, "cpu-int4pack"
    if not quick:
        yield "int4 g128 reference", (4, 128, "reference"), torch.float32, "reference"


def _build(spec, n: int, k: int, dtype, device: torch.device):
    """(callable x -> y, module or None, weight bytes held)."""
    if spec == "dense":
        w = torch.randn(n, k, dtype=dtype, device=device)
        return (lambda x, w=w: torch.nn.functional.linear(x, w)), None, w.numel() * w.element_size()
    bits, g = spec[:2]
    mod = quant_module(n, k, bits, g or k, device)
    if spec[2:] == ("reference",):
        from kernels.reference import qmatmul_ref

        def ref(x, m=mod):
            return qmatmul_ref(x, m.qweight, m.scales, m.zeros, bits=m.bits, group_size=m.group_size, in_features=k)
        return ref, None, _module_bytes(mod)
    mod(torch.zeros(1, k, dtype=dtype, device=device))  # adopt the runtime layout: its bytes are held
    return mod, mod, _module_bytes(mod)


def run(shapes, batches, quick: bool, device: torch.device, rounds: int | None = None) -> list[dict]:
    rounds = rounds or (3 if quick else 7)
    if device.type == "cuda":
        rounds = max(rounds, 20)
        os.environ.setdefault("KERNELS_AUTOTUNE", "full")
    print(load_average(), "(before)")
    rows = []
    mib = 256 if device.type == "cpu" else 2048
    src = torch.empty(mib * 2**20, dtype=torch.uint8, device=device).fill_(1)
    dst = torch.empty_like(src)
    for n, k in shapes:
        fns, meta = {"copy": lambda: dst.copy_(src)}, {}
        built = [(label, *_build(spec, n, k, dtype, device), dtype, expect)
                 for label, spec, dtype, expect in cases(device, quick)]
        for label, fn, mod, wbytes, dtype, expect in built:
            for m in batches:
                x = torch.randn(m, k, dtype=dtype, device=device)
                fns[(label, m)] = lambda f=fn, x=x: f(x)
                meta[(label, m)] = (mod, x, wbytes + x.numel() * x.element_size() + m * n * x.element_size(), expect)
        with torch.no_grad():
            times = interleaved(fns, device, rounds)
        copy_s = min(times.pop("copy"))
        copy_gbs = 2 * src.numel() / copy_s / 1e9
        print(f"{n}x{k}: copy probe {copy_gbs:.1f} GB/s (read + write, best of {rounds} interleaved rounds)")
        for m in batches:
            base = min(times[(built[0][0], m)])
            for label, *_ in built:
                ts = times[(label, m)]
                mod, x, moved, expect = meta[(label, m)]
                path = "reference" if label.endswith("reference") else "dense"
                if mod is not None:
                    with torch.no_grad():
                        mod(x)  # interleaved calls at other M overwrote kernel_path
                    path = mod.kernel_path
                gbs = moved / min(ts) / 1e9
                r = {"shape": f"{n}x{k}", "m": m, "case": label, "path": path, "ms_min": 1e3 * min(ts),
                     "ms_median": 1e3 * statistics.median(ts), "gbs": gbs, "copy": gbs / copy_gbs,
                     "speedup": base / min(ts)}
                rows.append(r)
                note = f"  (expected {expect} at M=1)" if expect and m == 1 and path != expect else ""
                print(f"{r['shape']:>11} M={m:<3} {label:<20} {path:<16} {r['ms_min']:8.3f} / {r['ms_median']:8.3f} ms "
                      f"{gbs:7.1f} GB/s {100 * r['copy']:5.1f}% copy  x{r['speedup']:.2f} vs {built[0][0]}{note}",
                      flush=True)
        del built, fns
    print(load_average(), "(after)")
    return rows


def _overhead_fns(mod: QuantLinear, k: int) -> dict:
    """The bare aten call (x already bf16 and 2-D) and the module on fp32 [1, K] and [1, 1, K]."""
    x2, x3 = torch.randn(1, k), torch.randn(1, 1, k)
    mod(x2)  # adopt the runtime layout
    w, nw, xb = mod.qweight, mod.native, x2.bfloat16()
    if mod.bits == 4:
        def bare(): return torch.ops.aten._weight_int4pack_mm_for_cpu(xb, w, nw.group_size, nw.scale)
    else:
        def bare(): return torch.ops.aten._weight_int8pack_mm(xb, w, nw.scale)
    return {"bare": bare, "2d": lambda: mod(x2), "3d": lambda: mod(x3)}


def overhead(shapes, rounds: int) -> list[dict]:
    """Per-call time of QuantLinear vs the bare aten call it wraps (x already bf16 and 2-D), M = 1."""
    print(load_average(), "(before)")
    print(f"{'shape':>10} {'case':<6} {'bare aten':>17} {'module [1,K]':>17} {'module [1,1,K]':>17}   "
          "wrapper adds (min, median), us")
    rows = []
    for n, k in shapes:
        for label, bits, g in (("int4", 4, 64 if k % 128 else 128), ("int8", 8, k)):
            mod = quant_module(n, k, bits, g, torch.device("cpu"))
            with torch.no_grad():
                t = interleaved(_overhead_fns(mod, k), torch.device("cpu"), rounds, warmup=20, inner=20)
            us = {key: (1e6 * min(v), 1e6 * statistics.median(v)) for key, v in t.items()}
            add2 = (us["2d"][0] - us["bare"][0], us["2d"][1] - us["bare"][1])
            add3 = (us["3d"][0] - us["bare"][0], us["3d"][1] - us["bare"][1])
            rows.append({"shape": f"{n}x{k}", "case": label, "path": mod.kernel_path, "us": us,
                         "adds_2d": add2, "adds_3d": add3})
            fmt = "{0[0]:7.1f} / {0[1]:7.1f}".format
            print(f"{n:>5}x{k:<4} {label:<6} {fmt(us['bare'])} {fmt(us['2d'])} {fmt(us['3d'])}   "
                  f"[1,K] +{add2[0]:.1f} / +{add2[1]:.1f}   [1,1,K] +{add3[0]:.1f} / +{add3[1]:.1f}  ({mod.kernel_path})",
                  flush=True)
    print(load_average(), "(after)")
    return rows


def _crossover_fns(plan, x: torch.Tensor, w32: torch.Tensor) -> dict:
    """The plan forced onto its kernel, forced onto dequantize + dense bf16, and dense fp32, for one x."""
    def forced(dense_from: int):
        plan.dense_from = dense_from
        return plan(x)
    return {"kernel": lambda: forced(1 << 62), "dense-bf16": lambda: forced(0),
            "fp32": lambda: torch.nn.functional.linear(x, w32)}


def crossover(shapes, batches, rounds: int) -> list[dict]:
    """Kernel vs dequantize-then-dense-bf16 vs dense fp32 by M; prints the first M where dense bf16 wins."""
    print(load_average(), "(before)")
    rows = []
    for n, k in shapes:
        for label, bits, g in (("int4", 4, 64 if k % 128 else 128), ("int8", 8, k)):
            mod = quant_module(n, k, bits, g, torch.device("cpu"))
            mod(torch.zeros(1, k))
            plan, w32 = mod._run, torch.randn(n, k)
            rule, first = plan.dense_from, None
            for m in batches:
                with torch.no_grad():
                    t = interleaved(_crossover_fns(plan, torch.randn(m, k), w32), torch.device("cpu"), rounds)
                ms = {key: 1e3 * min(v) for key, v in t.items()}
                rows.append({"shape": f"{n}x{k}", "case": label, "m": m, **ms})
                if first is None and ms["dense-bf16"] < ms["kernel"]:
                    first = m
                print(f"{n:>5}x{k:<4} {label} M={m:<4} kernel {ms['kernel']:8.3f} ms  dense-bf16 {ms['dense-bf16']:8.3f} ms"
                      f"  fp32 {ms['fp32']:8.3f} ms  kernel/dense x{ms['kernel'] / ms['dense-bf16']:.2f}", flush=True)
            plan.dense_from = rule
            print(f"{n:>5}x{k:<4} {label}: dense bf16 first wins at M = {first} (the plan switches at M = {rule})")
    print(load_average(), "(after)")
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default=None, help="N x K list, e.g. 4096x4096 (default: big shapes for the "
                    "table, model shapes for --overhead/--crossover)")
    ap.add_argument("--batches", default=None, help="batch sizes M, e.g. 1,4")
    ap.add_argument("--quick", action="store_true", help="fewer rounds, skip the slow reference case")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per cell")
    ap.add_argument("--overhead", action="store_true", help="wrapper vs bare aten call at M = 1 (CPU)")
    ap.add_argument("--crossover", action="store_true", help="native kernel vs dequantize + dense bf16 by M (CPU)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    parse_shapes = lambda s: [tuple(int(v) for v in p.lower().split("x")) for p in s.split(",")]  # noqa: E731
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"{time.strftime('%Y-%m-%d %H:%M')} torch {torch.__version__} device {name} threads {torch.get_num_threads()}"
          f" OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}")
    if args.overhead or args.crossover:
        if device.type != "cpu":
            raise SystemExit("--overhead and --crossover measure the CPU kernels: pass --device cpu")
        shapes = parse_shapes(args.shapes) if args.shapes else MODEL_SHAPES
        if args.overhead:
            overhead(shapes, args.rounds or (50 if args.quick else 200))
        if args.crossover:
            batches = [int(b) for b in args.batches.split(",")] if args.batches else CROSSOVER_BATCHES
            crossover(shapes, batches, args.rounds or (3 if args.quick else 7))
        return
    shapes = parse_shapes(args.shapes) if args.shapes else SHAPES
    batches = [int(b) for b in args.batches.split(",")] if args.batches else BATCHES
    run(shapes, batches, args.quick, device, args.rounds)


if __name__ == "__main__":
    main()
