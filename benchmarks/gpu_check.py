"""One command for a GPU session: the Triton path checked against the reference on the hardware, then timed, one table.

    python -m benchmarks.gpu_check [--out DIR] [--budget-s 420] [--dry-run]

Sections, in order of importance; each is skipped (and says so) once the time budget is spent:
  ceilings     device-to-device copy bandwidth (read + write bytes), the yardstick of every "% copy"
  correct      QuantLinear on CUDA against kernels.reference for 2/3/4/8 bits, groups 32/128/per channel,
               fp16/bf16/fp32, M = 1, 7, 16, 33, 300, act-order and bias, odd N/K; outputs NaN-poisoned;
               bf16 split-K atomics; y past 2**31 elements
  kernels      8192 x 8192, g128: W4 at M = 1, 16, 2048 and W3/W2/W8 at M = 1, 16 against cuBLAS fp16
               (F.linear), each output checked (SQNR) before it is timed; autotune "full"
  crossover    the GEMV and the GEMM at M = 1..16 (W4): where triton_ops.GEMV_MAX_M belongs
  prefill      the fused GEMM against dequantize-once + dense matmul at M = 256, 1024, 2048 (DENSE_FROM_M)
  fp8 / 2:4    FP8Linear (_scaled_mm) and PyTorch's semi-structured 2:4 at 8192 x 8192
  decode       end-to-end greedy decode, fp16 baseline vs W4 RTN (QuantLinear) of SmolLM2-135M's shapes
               (random weights: its 98 MB GGUF does not fit a device call's 64 MiB) and Llama-2-7B's shapes
               (random weights, LlamaConfig): transformers' eager loop (launch-bound) and a static-cache
               step replayed as one CUDA graph (benchmarks/gpu_decode.py)
  ptx          the autotuned W4 GEMV's registers, spills and load widths; its PTX saved under DIR/ptx

Kernel times are medians of triton.testing.do_bench, which clears L2 before every call (a 32 MB W4 weight
fits the H200's 60 MB L2). "% copy" = bytes the call must move (weights held, x, y) / time / copy bandwidth.
Writes DIR/gpu_check.md (the table) and DIR/gpu_check.json; DIR is --out, else $OUT, else ./gpu_check_out.
--dry-run: CPU, Triton's interpreter, tiny shapes, so the script itself is tested (tests/kernels/test_gpu_check.py);
its times mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
               num_key_value_heads=3, head_dim=64, vocab_size=49152, tie_word_embeddings=True,
               max_position_embeddings=8192, rope_theta=100000.0)  # read from its GGUF (docs/models)
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000, max_position_embeddings=4096)
TINY = dict(hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=128, max_position_embeddings=64)


class Check:
    """Rows of the table, figures for the JSON, and the time budget."""

    def __init__(self, out: Path, budget_s: float, dry: bool):
        self.out, self.dry, self.t0, self.budget = out, dry, time.perf_counter(), budget_s
        self.rows: list[list[str]] = []
        self.figures: dict = {}

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.t0)

    def row(self, *cells) -> None:
        self.rows.append([str(c) for c in cells])
        print(" | ".join(self.rows[-1]), flush=True)
        self.write()

    def write(self) -> None:
        lines = ["| section | case | M | result | µs | GB/s | % copy | vs ref | note |",
                 "|---|---|---|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r + [""] * (9 - len(r))) + " |" for r in self.rows]
        (self.out / "gpu_check.md").write_text("\n".join(self.header() + [""] + lines) + "\n")
        (self.out / "gpu_check.json").write_text(json.dumps(self.figures, indent=1, default=str))

    def header(self) -> list[str]:
        import torch
        import triton

        dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU (dry run: Triton interpreter)"
        return [f"# gpu_check {time.strftime('%Y-%m-%d %H:%M')}", "",
                f"device: {dev}; torch {torch.__version__}; triton {triton.__version__}; "
                f"elapsed {time.perf_counter() - self.t0:.0f} s of {self.budget:.0f} s"]


def median_ms(fn, dry: bool) -> float:
    """Median ms per call: do_bench (L2 cleared before each call) on CUDA, a few perf_counter calls on CPU."""
    if not dry:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=10, rep=60, return_mode="median")
    times = []
    for _ in range(1):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def sqnr_db(y, ref) -> float:
    import torch

    err = (y.double() - ref.double()).pow(2).mean()
    return float(10 * torch.log10(ref.double().pow(2).mean() / err)) if err > 0 else float("inf")


def quant_linear(n: int, k: int, bits: int, group: int, device, act_order=False, bias=False, seed=0):
    """A QuantLinear with random q, fp16 scales and fractional zeros (HQQ-style), on `device`."""
    import torch

    from kernels.modules import QuantLinear

    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 2**bits, (n, k), generator=gen, dtype=torch.uint8).to(device)  # packed where it runs
    s = (torch.rand(n, k // group, generator=gen) * 0.02 + 0.005).to(device)
    z = (torch.rand(n, k // group, generator=gen) * (2**bits - 1)).to(device)
    perm = torch.randperm(k, generator=gen).to(device) if act_order else None
    b = torch.randn(n, generator=gen).half().to(device) if bias else None
    return QuantLinear.from_quantized(q, s, z, bits=bits, group_size=group, perm=perm, bias=b)


def on_gpu_layout(mod, dry: bool):
    """Dry run: put a CPU module in the Triton layout (what its first CUDA forward does) so the kernels run."""
    if dry:
        for m in mod.modules():
            if hasattr(m, "_prepare_gpu") and m._run is None:
                m._prepare_gpu()
    return mod


def reference(mod, x):
    from kernels.reference import qmatmul_ref

    sd = mod.state_dict()  # canonical, whatever the runtime layout
    return qmatmul_ref(x.float(), sd["qweight"], sd["scales"], sd["zeros"], bits=mod.bits, group_size=mod.group_size,
                       in_features=mod.in_features, perm=sd.get("perm"),
                       bias=None if mod.bias is None else mod.bias.float())


def ceilings(c: Check, device) -> float:
    import torch

    nbytes = (2**24 if c.dry else 2**30)
    src = torch.randn(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), c.dry)
    bw = 2 * nbytes / ms / 1e6  # GB/s, read + write
    c.figures["copy_GBps"] = bw
    c.row("ceilings", f"copy {nbytes >> 20} MiB", "", f"{bw:.0f} GB/s", f"{ms * 1e3:.0f}", f"{bw:.0f}", "100")
    return bw


def correctness(c: Check, device) -> None:
    """Every width, group and dtype against the reference; autotune "small" (one config a key) so the section
    costs compiles, not benchmarks."""
    import torch

    from kernels.pack import pack
    from kernels.reference import qmatmul_ref
    from kernels.triton_gemm import qgemm
    from kernels.triton_gemv import qgemv

    min_db = {torch.float32: 90, torch.float16: 55, torch.bfloat16: 40}
    n, k = (20, 64) if c.dry else (1000, 1152)  # N not a multiple of 16, K = 9 x 128: tails in every block
    groups = (32, k) if c.dry else (32, 128, k)
    ms = (1, 5) if c.dry else (1, 7, 300)  # the GEMV, a 16-row GEMM tile, a prefill tile
    worst, failures, cases = {}, [], 0
    os.environ["KERNELS_AUTOTUNE"] = "small"
    try:
        for bits in (2, 3, 4, 8):
            for g in groups:
                flags = bits == 4 and g == 32  # act-order and bias where GPTQ puts them
                mod = on_gpu_layout(quant_linear(n, k, bits, g, device, act_order=flags, bias=flags,
                                                 seed=bits * 10 + g), c.dry)
                dtypes = (torch.float16, torch.bfloat16) + ((torch.float32,) if bits == 4 else ())
                for dtype in dtypes:
                    for m in ms:
                        x = torch.randn(m, k, device=device, dtype=dtype)
                        y = mod(x)
                        db = sqnr_db(y, reference(mod, x))
                        cases += 1
                        worst[dtype] = min(worst.get(dtype, 1e9), db)
                        if not db > min_db[dtype] or y.isnan().any():
                            failures.append(f"w{bits} g{g} {dtype} M={m}: {db:.1f} dB ({mod.kernel_path})")
    finally:
        os.environ.pop("KERNELS_AUTOTUNE", None)
    c.figures["correct"] = {"cases": cases, "worst_db": {str(d): v for d, v in worst.items()}, "failures": failures}
    c.row("correct", f"{cases} cases: w2/3/4/8 x g{'/'.join(map(str, groups))} x fp16/bf16 (+fp32 w4)",
          ",".join(map(str, ms)), "PASS" if not failures else f"FAIL {len(failures)}: " + "; ".join(failures[:3]),
          "", "", "", " ".join(f"{str(d)[6:]}>={v:.0f}dB" for d, v in worst.items()))
    if c.dry:
        return
    gen = torch.Generator().manual_seed(5)
    q = torch.randint(0, 16, (4096, 4096), generator=gen, dtype=torch.uint8)
    s, z = torch.rand(4096, 32, generator=gen).half() * 0.02, torch.rand(4096, 32, generator=gen).half() * 15
    qw, s, z = pack(q, 4).to(device), s.to(device), z.to(device)
    for name, fn, m in (("gemv", qgemv, 1), ("gemm", qgemm, 8)):
        x = torch.randn(m, 4096, device=device, dtype=torch.bfloat16)
        db = sqnr_db(fn(x, qw, s, z, bits=4, group_size=128, in_features=4096, split_k=8),
                     qmatmul_ref(x.float(), qw, s, z, bits=4, group_size=128, in_features=4096))
        c.row("correct", f"bf16 split-K=8 atomics ({name})", m, "PASS" if db > 38 else "FAIL", "", "", "", f"{db:.1f} dB")
    big_m, big_n = 65600, 32768  # y has 2.15e9 elements: int32 row offsets would wrap
    q = torch.randint(0, 16, (big_n, 64), generator=gen, dtype=torch.uint8)
    s, z = torch.rand(big_n, 1, generator=gen).half() * 0.02, torch.rand(big_n, 1, generator=gen).half() * 15
    qw, s, z = pack(q, 4).to(device), s.to(device), z.to(device)
    x = torch.randn(big_m, 64, device=device, dtype=torch.float16)
    y = qgemm(x, qw, s, z, bits=4, group_size=64, in_features=64, config={})  # the fused GEMM, not the dense path
    db = sqnr_db(y[-64:], qmatmul_ref(x[-64:].float(), qw, s, z, bits=4, group_size=64, in_features=64))
    c.row("correct", "y past 2**31 elements (last rows, fused GEMM)", big_m, "PASS" if db > 55 else "FAIL", "", "",
          "", f"{db:.1f} dB")
    del y, x


def kernel_rows(c: Check, device, copy_bw: float) -> None:
    import torch
    import torch.nn.functional as F

    n = k = 64 if c.dry else 8192
    g = 32 if c.dry else 128
    dense = torch.randn(n, k, device=device, dtype=torch.float16) * 0.02
    plan = [(4, 1), (4, 16), (4, 2048), (3, 1), (3, 16), (2, 1), (2, 16), (8, 1), (8, 16)]
    if c.dry:
        plan = [(4, 1), (4, 16), (3, 1)]
    c.figures["kernels"] = {}
    for bits, m in plan:
        if c.left() < (60 if bits != 4 else 20):
            c.row("kernels", f"W{bits} {n}x{k}", m, "skipped: time budget")
            continue
        mod = on_gpu_layout(quant_linear(n, k, bits, g, device, seed=bits), c.dry)
        x = torch.randn(m, k, device=device, dtype=torch.float16)
        db = sqnr_db(mod(x), reference(mod, x))  # the first call autotunes (mode "full" on a GPU)
        t_q = median_ms(lambda mod=mod, x=x: mod(x), c.dry)
        t_d = median_ms(lambda x=x: F.linear(x, dense), c.dry)
        held = sum(t.numel() * t.element_size() for t in mod.buffers())
        moved = held + x.numel() * 2 + m * n * 2
        gbps = moved / t_q / 1e6
        c.figures["kernels"][f"w{bits}_m{m}"] = {"ms": t_q, "cublas_ms": t_d, "sqnr": db, "path": mod.kernel_path}
        c.row("kernels", f"W{bits} g{g} {n}x{k} fp16 ({mod.kernel_path})", m, f"{t_d / t_q:.2f}x cuBLAS fp16",
              f"{t_q * 1e3:.1f}", f"{gbps:.0f}", f"{100 * gbps / copy_bw:.0f}", f"{db:.0f} dB",
              f"cuBLAS {t_d * 1e3:.1f} µs")


def crossover(c: Check, device) -> None:
    import torch

    from kernels.triton_gemm import qgemm
    from kernels.triton_gemv import qgemv
    from kernels.triton_ops import GEMV_MAX_M

    n = k = 64 if c.dry else 8192
    mod = on_gpu_layout(quant_linear(n, k, 4, 128 if not c.dry else 32, device, seed=9), c.dry)
    mod(torch.randn(1, k, device=device, dtype=torch.float16))
    run = mod._run
    for m in ((2,) if c.dry else (1, 2, 4, 8, 16)):
        if c.left() < 15:
            c.row("crossover", "GEMV vs GEMM", m, "skipped: time budget")
            continue
        x = torch.randn(m, k, device=device, dtype=torch.float16)
        times = {}
        for name, fn in (("gemv", qgemv), ("gemm", qgemm)):
            def call(fn=fn, x=x):
                return fn(x, run.words, run.sz, None, bits=4, group_size=run.group_size, in_features=k)
            call()
            times[name] = median_ms(call, c.dry)
        c.figures.setdefault("crossover", {})[m] = times
        best = min(times, key=times.get)
        c.row("crossover", f"W4 {n}x{k}: GEMV {times['gemv'] * 1e3:.1f} µs, GEMM {times['gemm'] * 1e3:.1f} µs", m,
              f"{best} faster", "", "", "", "", f"triton_ops.GEMV_MAX_M = {GEMV_MAX_M}")


def prefill(c: Check, device) -> None:
    """The fused GEMM against dequantize-once + one dense matmul (triton_ops.DENSE_FROM_M) and cuBLAS fp16."""
    import torch
    import torch.nn.functional as F

    from kernels.triton_gemm import qgemm
    from kernels.triton_ops import DENSE_FROM_M
    from kernels.triton_unpack import dequantize_t

    n = k = 64 if c.dry else 8192
    g = 32 if c.dry else 128
    mod = on_gpu_layout(quant_linear(n, k, 4, g, device, seed=11), c.dry)
    mod(torch.randn(1, k, device=device, dtype=torch.float16))
    run = mod._run
    dense = torch.randn(n, k, device=device, dtype=torch.float16) * 0.02
    for m in ((32,) if c.dry else (256, 1024, 2048)):
        if c.left() < 20:
            c.row("prefill", "GEMM vs dense", m, "skipped: time budget")
            continue
        x = torch.randn(m, k, device=device, dtype=torch.float16)

        def fused(x=x):
            return qgemm(x, run.words, run.sz, None, bits=4, group_size=g, in_features=k)

        def once(x=x):
            return x @ dequantize_t(run.words, run.sz, bits=4, group_size=g, in_features=k, dtype=x.dtype)

        fused(), once()
        times = {name: median_ms(fn, c.dry) for name, fn in (("gemm", fused), ("dense", once),
                                                              ("cublas", lambda x=x: F.linear(x, dense)))}
        c.figures.setdefault("prefill", {})[m] = times
        c.row("prefill", f"W4 {n}x{k}: GEMM {times['gemm'] * 1e3:.0f} µs, dequant+dense {times['dense'] * 1e3:.0f} µs",
              m, f"{min(('gemm', 'dense'), key=times.get)} faster", "", "", "",
              f"{times['cublas'] / times['gemm']:.2f}x / {times['cublas'] / times['dense']:.2f}x cuBLAS",
              f"triton_ops.DENSE_FROM_M = {DENSE_FROM_M}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.environ.get("OUT") or "gpu_check_out")
    ap.add_argument("--budget-s", type=float, default=420.0, help="stop starting sections after this many seconds")
    ap.add_argument("--dry-run", action="store_true", help="CPU, Triton interpreter, tiny shapes")
    args = ap.parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before triton decorates the kernels
    sys.path.insert(0, str(ROOT))
    import torch

    from benchmarks.gpu_check_e2e import decode, fp8_and_sparse, ptx_report

    logging_quiet()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here: run with --dry-run to check the script on CPU", file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry_run else "cuda")
    c = Check(out, args.budget_s, args.dry_run)
    sections = [("ceilings", lambda: c.figures.update(bw=ceilings(c, device))),
                ("correct", lambda: correctness(c, device)),
                ("kernels", lambda: kernel_rows(c, device, c.figures.get("bw", 1.0))),
                ("decode", lambda: decode(c, device, "tiny Llama (dry run)" if args.dry_run else
                                          "SmolLM2-135M shapes, W4 g64", TINY if args.dry_run else SMOLLM2,
                                          32 if args.dry_run else 64, 40)),
                ("decode", lambda: None if args.dry_run else decode(c, device, "Llama-2-7B shapes, W4 g128",
                                                                    LLAMA_7B, 128, 90)),
                ("crossover", lambda: crossover(c, device)),
                ("prefill", lambda: prefill(c, device)),
                ("fp8/2:4", lambda: fp8_and_sparse(c, device)),
                ("ptx", lambda: ptx_report(c, device))]
    status = 0
    for name, fn in sections:
        if c.left() < 5:
            c.row(name, "", "", "skipped: time budget")
            continue
        started = time.perf_counter()
        try:
            with torch.no_grad():
                fn()
        except Exception as e:  # noqa: BLE001 - one broken section must not hide the others' figures
            status = 1
            c.row(name, "", "", f"ERROR {type(e).__name__}: {str(e)[:120]}")
            (out / f"error_{name.replace('/', '_')}.txt").write_text(traceback.format_exc())
        seconds = c.figures.setdefault("section_seconds", {})
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    c.write()
    print("\n".join(c.header()))
    print((out / "gpu_check.md").read_text().split("\n\n", 2)[-1])
    return status


def logging_quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


if __name__ == "__main__":
    sys.exit(main())
