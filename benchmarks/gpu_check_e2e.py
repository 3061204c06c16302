"""The format and end-to-end sections of benchmarks/gpu_check.py (its docstring lists them all): FP8 and 2:4 at
8192 x 8192, greedy decode of SmolLM2's and Llama-2-7B's shapes (eager and as one CUDA graph), and the autotuned
W4 GEMV's PTX. Each takes the run's `Check` and the device, adds rows, and never raises past its section.
"""

from __future__ import annotations

from benchmarks.gpu_check import Check, median_ms, on_gpu_layout, quant_linear, sqnr_db


def fp8_and_sparse(c: Check, device) -> None:
    import torch
    import torch.nn.functional as F

    from kernels.modules import FP8Linear

    n = k = 64 if c.dry else 8192
    w = torch.randn(n, k, device=device) * 0.02
    scale = w.abs().amax(1) / 448
    fp8 = FP8Linear.from_quantized((w / scale[:, None]).to(torch.float8_e4m3fn), scale)
    dense = w.half()
    for m in (1, 16) if c.dry else (1, 16, 2048):
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        try:
            db = sqnr_db(fp8(x), x.float() @ w.T)
            t8 = median_ms(lambda x=x: fp8(x), c.dry)
            td = median_ms(lambda x=x: F.linear(x.half(), dense), c.dry)
            c.row("fp8", f"FP8Linear {n}x{k} ({fp8.kernel_path})", m, f"{td / t8:.2f}x cuBLAS fp16",
                  f"{t8 * 1e3:.1f}", "", "", f"{db:.0f} dB")
        except Exception as e:  # noqa: BLE001 - a path that fails on this GPU is a finding, not a crash
            c.row("fp8", f"FP8Linear {n}x{k}", m, f"ERROR {type(e).__name__}: {str(e)[:80]}")
    if c.dry:
        c.row("2:4", "semi-structured", "", "n/a: needs CUDA")
        return
    from torch.sparse import to_sparse_semi_structured

    mask = torch.zeros(n, k // 4, 4, device=device, dtype=torch.bool)
    mask.scatter_(2, dense.abs().reshape(n, k // 4, 4).topk(2, dim=2).indices, True)
    pruned = dense * mask.reshape(n, k)
    try:
        sparse = to_sparse_semi_structured(pruned)
    except Exception as e:  # noqa: BLE001
        c.row("2:4", "to_sparse_semi_structured", "", f"ERROR {type(e).__name__}: {str(e)[:80]}")
        return
    for m in (1, 16, 2048):
        x = torch.randn(m, k, device=device, dtype=torch.float16)
        try:
            db = sqnr_db(F.linear(x, sparse), x.float() @ pruned.float().T)
            ts = median_ms(lambda x=x: F.linear(x, sparse), c.dry)
            td = median_ms(lambda x=x: F.linear(x, pruned), c.dry)
            c.row("2:4", f"semi-structured fp16 {n}x{k}", m, f"{td / ts:.2f}x cuBLAS fp16", f"{ts * 1e3:.1f}", "",
                  "", f"{db:.0f} dB")
        except Exception as e:  # noqa: BLE001
            c.row("2:4", f"semi-structured fp16 {n}x{k}", m, f"ERROR {type(e).__name__}: {str(e)[:80]}")


def decode(c: Check, device, name: str, shapes: dict, group: int, need_s: float) -> None:
    import torch

    from benchmarks.gpu_decode import hf_decode, random_llama, rtn_quantize_, static_decode

    if c.left() < need_s:
        c.row("decode", name, 1, "skipped: time budget")
        return
    model = random_llama(shapes, device=str(device), dtype=torch.float32 if c.dry else torch.float16)
    prompt = torch.randint(0, shapes["vocab_size"], (1, 3 if c.dry else 32), device=device)
    steps = (1, 1, 0) if c.dry else (32, 32, 128)  # HF eager, static eager, static graph
    result = {}
    for variant in ("fp16", "w4"):
        if variant == "w4":
            rtn_quantize_(model, 4, group)
            on_gpu_layout(model, c.dry)
        hf = hf_decode(model, prompt, steps[0])[0]
        st = static_decode(model, prompt, steps[1], graph=False, warmup=1 if c.dry else 2)[0]
        gr = static_decode(model, prompt, steps[2], graph=True)[0] if not c.dry else float("nan")
        result[variant] = {"hf_eager": hf, "static_eager": st, "graph": gr}
    c.figures.setdefault("decode", {})[name] = result
    base, w4 = result["fp16"], result["w4"]
    for key, label in (("hf_eager", "transformers eager"), ("static_eager", "static cache, eager"),
                       ("graph", "static cache, CUDA graph")):
        c.row("decode", f"{name}: {label} tok/s fp16 {base[key]:.0f} -> W4 {w4[key]:.0f}", 1,
              f"{w4[key] / base[key]:.2f}x" if base[key] == base[key] else "n/a: needs CUDA", "", "", "", "",
              "random weights")
    del model


def ptx_report(c: Check, device) -> None:
    """Registers, spills and load widths of the autotuned W4 GEMV at 8192 x 8192; PTX saved under DIR/ptx."""
    import torch

    from kernels import triton_gemv
    from kernels.triton_config import launch_args

    best = getattr(triton_gemv._tuned, "best_config", None)
    if c.dry or best is None:
        c.row("ptx", "autotuned W4 GEMV", 1, "n/a" if c.dry else "no autotuned config")
        return
    mod = quant_linear(8192, 8192, 4, 128, device, seed=4)
    x = torch.randn(1, 8192, device=device, dtype=torch.float16)
    mod(x)
    run = mod._run
    _, args = launch_args("qgemv", x, run.words, run.sz, None, None, None, bits=4, group_size=128,
                          in_features=8192, poison=False)
    meta = dict(best.kwargs)
    grid = (-(-8192 // meta["BLOCK_N"]), meta["SPLIT_K"], 1)
    kernel = triton_gemv._qgemv_kernel[grid](**args, **meta, num_warps=best.num_warps, num_stages=best.num_stages)
    ptx = kernel.asm.get("ptx", "")
    (c.out / "ptx").mkdir(exist_ok=True)
    (c.out / "ptx" / "qgemv_w4.ptx").write_text(ptx)
    counts = {k: ptx.count(k) for k in ("ld.global.v4", "ld.global.v2", "ld.global.b32", "ld.global.nc",
                                        "cvt.rn.f32", "fma.rn.f32", "atom.global")}
    c.figures["ptx_gemv_w4"] = {"config": str(best), "n_regs": kernel.n_regs, "n_spills": kernel.n_spills, **counts}
    c.row("ptx", f"W4 GEMV {best}", 1, f"{kernel.n_regs} regs, {kernel.n_spills} spills", "", "", "", "",
          ", ".join(f"{k}: {v}" for k, v in counts.items()))
