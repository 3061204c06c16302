"""Compile the dequant-matmul kernels for Hopper (sm_90a) on a machine without a GPU and read what the loop costs.

    python -m kernels.triton_sass [--kernel gemv|gemm] [--bits 4,3,2,8] [--config 1024,32,4,2] [--out DIR]

Triton compiles to PTX for any target without a device; the ptxas and cuobjdump its wheel ships turn that into
SASS. For each config this prints registers and spills (ptxas -v), the instructions of the main K loop per
weight value a thread handles, split into the integer pipe (LOP3, SHF, ... : 64 lanes an SM per clock on
Hopper) and the FMA pipe (FFMA, IMAD, ...: 128), layout conversions left in the TTGIR, and the global loads'
widths. Issue-bound time estimate for an N x K weight: values x instructions per value / (lanes x SMs x clock).
Arguments are specialised as a real launch would be (pointers and multiples of 16 marked divisible by 16).
GEMV configs are (BLOCK_N, BLOCK_K, warps, stages), GEMM ones (BLOCK_M, BLOCK_N, BLOCK_K, warps, stages).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels.triton_gemm import _qgemm_kernel
from kernels.triton_gemv import _qgemv_kernel

INT_PIPE = ("LOP3", "SHF", "ISETP", "PRMT", "IADD3", "VIADD", "LEA", "SEL", "PLOP3", "IABS", "BFE", "BFI", "POPC")
FMA_PIPE = ("FFMA", "FADD", "FMUL", "IMAD", "HADD2", "HFMA2", "HMUL2", "MOV", "CS2R", "F2FP")
POINTERS = {"x_ptr": "fp16", "w_ptr": "i32", "sz_ptr": "i32", "perm_ptr": "i32", "bias_ptr": "fp16", "y_ptr": "fp16"}
DIVISIBLE = {"N", "K", "KW", "PLANE", "stride_xm", "stride_wk", "stride_ym"}  # multiples of 16 at 8192 x 8192
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def compile_sass(kernel, constexprs: dict, warps: int, stages: int, out: Path, name: str) -> dict:
    """Compile for sm_90a; write PTX / SASS under `out`; return registers, spills, loop mix and conversions."""
    signature, attrs = {}, {}
    for i, arg in enumerate(kernel.arg_names):
        signature[arg] = "constexpr" if arg in constexprs else "*" + POINTERS[arg] if arg in POINTERS else "i32"
        if arg in POINTERS or arg in DIVISIBLE:
            attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps, "num_stages": stages})
    ptx, cubin = out / f"{name}.ptx", out / f"{name}.cubin"
    ptx.write_text(compiled.asm["ptx"])
    ptxas = BIN / "ptxas-blackwell" if (BIN / "ptxas-blackwell").exists() else BIN / "ptxas"
    report = subprocess.run([str(ptxas), "-arch=sm_90a", "-v", str(ptx), "-o", str(cubin)], capture_output=True,
                            text=True, check=True).stderr
    sass = subprocess.run([str(BIN / "cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True,
                          check=True).stdout
    (out / f"{name}.sass").write_text(sass)
    regs = re.search(r"Used (\d+) registers", report)
    spills = re.search(r"(\d+) bytes spill stores", report)
    return {"regs": int(regs.group(1)) if regs else None, "spills": int(spills.group(1)) if spills else None,
            "loop": loop_mix(sass), "converts": compiled.asm["ttgir"].count("convert_layout"),
            "ldg128": sass.count("LDG.E.128")}


def loop_mix(sass: str) -> Counter:
    """Opcode counts of the longest backward-branch body (the main K loop)."""
    ins = [(int(m.group(1), 16), m.group(2).strip()) for m in re.finditer(r"/\*([0-9a-f]{4,})\*/\s+(.*?);", sass)]
    best: list[str] = []
    for addr, text in ins:
        target = re.search(r"BRA\s+(?:\S+\s+)?0x([0-9a-f]+)", text)
        if target and int(target.group(1), 16) < addr:
            body = [t for a, t in ins if int(target.group(1), 16) <= a <= addr]
            best = body if len(body) > len(best) else best
    return Counter(re.sub(r"^@!?U?P\w+\s+", "", t).split()[0].split(".")[0] for t in best)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernel", choices=("gemv", "gemm"), default="gemv")
    ap.add_argument("--bits", default="4,3,2,8")
    ap.add_argument("--config", action="append", help="GEMV: BN,BK,warps,stages; GEMM: BM,BN,BK,warps,stages")
    ap.add_argument("--out", default=None, help="keep PTX/SASS here (default: a temporary folder)")
    args = ap.parse_args(argv)
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    gemv = args.kernel == "gemv"
    configs = [tuple(int(v) for v in c.split(",")) for c in args.config or
               (["1024,32,4,2", "512,64,4,3"] if gemv else ["16,128,128,4,3", "128,128,64,8,3"])]
    out = Path(args.out or tempfile.mkdtemp(prefix="triton_sass_"))
    out.mkdir(parents=True, exist_ok=True)
    for bits in (int(b) for b in args.bits.split(",")):
        for cfg in configs:
            flags = {"BITS": bits, "HAS_PERM": False, "HAS_BIAS": False, "EVEN_K": True}
            if gemv:
                bn, bk, warps, stages = cfg
                kernel, meta, values = _qgemv_kernel, {"BLOCK_N": bn, "BLOCK_K": bk}, bn * bk / (32 * warps)
            else:
                bm, bn, bk, warps, stages = cfg
                kernel, values = _qgemm_kernel, bn * bk / (32 * warps)
                meta = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": 8, "DOT_FP32": False}
            name = f"{args.kernel}_w{bits}_" + "_".join(map(str, cfg))
            r = compile_sass(kernel, {**flags, **meta}, warps, stages, out, name)
            mix = r["loop"]
            per = {pipe: sum(mix[o] for o in ops) / values for pipe, ops in (("int", INT_PIPE), ("fma", FMA_PIPE))}
            print(f"{name}: {r['regs']} regs, {r['spills']} B spilled, {r['converts']} layout conversions, "
                  f"{r['ldg128']} LDG.128; loop {sum(mix.values()) / values:.2f} instr/value "
                  f"(int pipe {per['int']:.2f}, fma pipe {per['fma']:.2f}); top: {dict(mix.most_common(8))}")
    print(f"PTX and SASS in {out}")


if __name__ == "__main__":
    main()
