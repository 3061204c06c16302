"""Every preset end to end through the CLI, on the demo model: prints a Markdown table.

Run:  python -m benchmarks.presets [--out /tmp/presets] [--only int8,w4-g128] [--format-only]

Each preset runs as `python -m compressor run --model demo --recipe PRESET --json OUT/PRESET.json`
in a fresh process (so peak memory and timings are per run), with the CLI's default evaluation
settings and hardware "this machine". --format-only re-prints the table from existing JSON files.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def run(preset: str, out: Path) -> tuple[int, float]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "compressor", "run", "--model", "demo", "--recipe", preset,
                           "--json", str(out / f"{preset}.json")], capture_output=True, text=True)
    (out / f"{preset}.log").write_text(proc.stdout + proc.stderr)
    return proc.returncode, time.perf_counter() - t


def row(preset: str, r, rc: int | None, wall: float | None) -> str:
    """One table row of a Report (compressor.runs.contract)."""
    b, c = r.baseline, r.compressed
    check = (r.projection.check_against_measured or {}).get("compressed") if r.projection else None
    ratio = check.ratio if check else None
    paths = ", ".join(sorted(c.kernel_paths)) or "-"
    return (f"| {preset} | {c.weight_bytes / 2**20:.1f} | {c.perplexity:.2f} | "
            f"{100 * (c.perplexity / b.perplexity - 1):+.1f}% | {c.kld:.4f} | "
            f"{c.arithmetic_accuracy:.0%} | {c.decode_tokens_per_s:.0f} | {b.decode_tokens_per_s:.0f} | "
            f"{paths} | {'-' if ratio is None else f'{ratio:.2f}'} | {r.timings.compress_s:.1f} | "
            f"{'-' if wall is None else f'{wall:.0f}'} | {'-' if rc is None else rc} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="/tmp/presets")
    p.add_argument("--only", default="")
    p.add_argument("--format-only", action="store_true")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from compressor.engine.presets import list_presets
    from compressor.runs.contract import Report

    presets = [s for s in args.only.split(",") if s] or list(list_presets())
    results = {}
    for preset in presets:
        rc = wall = None
        if not args.format_only:
            rc, wall = run(preset, out)
            print(f"{preset}: exit {rc}, {wall:.1f} s", file=sys.stderr, flush=True)
        path = out / f"{preset}.json"
        if path.is_file():
            results[preset] = (Report.from_dict(json.loads(path.read_text())), rc, wall)
    first = next(iter(results.values()))[0]
    b, settings = first.baseline, first.request.eval
    print(f"Baseline (fp32): {b.weight_bytes / 2**20:.1f} MiB weights, perplexity {b.perplexity:.2f}, "
          f"arithmetic {b.arithmetic_accuracy:.0%} ({settings.arithmetic_samples} problems), "
          f"{settings.ppl_tokens} perplexity tokens.\n")
    print("| preset | weights MiB | perplexity | change | KL | arithmetic | decode tok/s | baseline decode | "
          "kernel path | projected/measured decode | compress s | wall s | exit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset, (r, rc, wall) in results.items():
        print(row(preset, r, rc, wall))


if __name__ == "__main__":
    main()
