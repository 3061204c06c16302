"""A sweep of presets on the demo model through the local executor: total time with 1 cell at a time (each
cell 2 threads on 2 cores) against 2 cells at once (1 thread each), and what overlapping does to the speed
figures the cells measure. Prints a Markdown table.

Run:  python -m benchmarks.sweep_local [--recipes int8,w4-g128,...] [--workers 1,2] [--repeats 2]
                                       [--eval quick] [--out /tmp/sweep-bench]

Each sweep runs in a fresh process on a fresh data folder (a cold baseline cache: each sweep measures the
demo's baseline once, then shares it), through `compressor.runs.sweep_run.Sweeps` and
`LocalExecutor.own_pool` (what `python -m compressor sweep --workers N` uses). Configurations alternate
within each repeat (1, 2, then 2, 1, ...), so a change of machine load hits both. "wall" counts the whole
process (imports, model checks, worker start-up); "sweep" runs from the first cell handed over to the last
one finished. Speed figures measured while another cell shares the cores are not the machine's: compare
their medians across configurations before trusting a 2-at-once sweep's tokens/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PRESETS = "int8,w4-g128,w3-g128,hqq-w4-g64,fp8,gptq-w4-g128"


def child(args) -> None:
    """One sweep in this process; its figures as JSON in --json."""
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    os.environ["LAB_DATA_DIR"] = args.data
    from compressor.runs.sweep import SweepSpec
    from compressor.runs.sweep_exec import LocalExecutor, cell_bytes
    from compressor.runs.sweep_run import Sweeps, preflight_cells

    spec = SweepSpec.build(args.model, args.recipes, args.eval)
    cells = spec.cells()
    executor = LocalExecutor.own_pool(args.data, workers=args.workers, per_cell_bytes=cell_bytes(preflight_cells(cells)))
    sweeps = Sweeps(executor.manager, executor=executor, check_models=False)
    threads = os.environ.get("OMP_NUM_THREADS")  # the pool's setting for its workers (put back on shutdown)
    try:
        sweep_id = sweeps.start(spec, "benchmark")
        progress = sweeps.wait(sweep_id)
    finally:
        sweeps.shutdown()
    records = [c.run for c in sweeps.cells(sweep_id)]
    reports = [r.load_report() if r.report else None for r in records]
    started = [r.started_at for r in records if r.started_at]
    finished = [r.finished_at for r in records if r.finished_at]
    out = {"workers": executor.slots, "threads": int(threads) if threads else None,
           "wall_s": time.perf_counter() - t0, "sweep_s": max(finished) - min(started), "done": progress.done,
           "total": progress.total, "load_before": load0, "load_after": os.getloadavg(),
           "cells": [{"recipe": c.recipe_label, "status": r.status, "seconds": (r.finished_at or 0) - (r.started_at or 0),
                      "baseline_cached": rep.timings.baseline_cached if rep else None,
                      "decode": rep.compressed.decode_tokens_per_s if rep else None,
                      "baseline_decode": rep.baseline.decode_tokens_per_s if rep else None,
                      "threads": rep.environment.threads if rep else None}
                     for c, r, rep in zip(cells, records, reports, strict=True)]}
    Path(args.json).write_text(json.dumps(out, indent=1))


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _fmt(v, digits=1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="demo")
    p.add_argument("--recipes", default=PRESETS)
    p.add_argument("--eval", default="quick")
    p.add_argument("--workers", default="1,2", help="configurations to compare: cells at once")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", default="/tmp/sweep-bench")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        args.workers = int(args.workers)
        return child(args)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [int(w) for w in args.workers.split(",")]
    results: dict[int, list[dict]] = {w: [] for w in configs}
    for rep in range(args.repeats):
        for w in configs if rep % 2 == 0 else configs[::-1]:
            name = f"r{rep}-w{w}"
            cmd = [sys.executable, "-m", "benchmarks.sweep_local", "--child", "--workers", str(w), "--model",
                   args.model, "--recipes", args.recipes, "--eval", args.eval, "--data", str(out / name),
                   "--json", str(out / f"{name}.json")]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            (out / f"{name}.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0:
                print(f"{name}: exit {proc.returncode}; see {out / name}.log", file=sys.stderr)
                continue
            r = json.loads((out / f"{name}.json").read_text())
            results[w].append(r)
            print(f"{name}: {r['done']}/{r['total']} cells, sweep {r['sweep_s']:.1f} s, wall {r['wall_s']:.1f} s, "
                  f"load {r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}", file=sys.stderr, flush=True)

    n = len(args.recipes.split(","))
    print(f"\n{n} presets on {args.model}, evaluation {args.eval}, {args.repeats} repeat(s); medians (min-max)\n")
    print("| cells at once | threads/cell | sweep s | wall s | median cell s | decode tok/s (median over cells) "
          "| load avg (1 min) before -> after |")
    print("|---|---|---|---|---|---|---|")
    base = _median([r["sweep_s"] for r in results[configs[0]]])
    for w in configs:
        rs = results[w]
        if not rs:
            print(f"| {w} | - | failed | | | | |")
            continue
        sweep = [r["sweep_s"] for r in rs]
        cell = _median([c["seconds"] for r in rs for c in r["cells"]])
        decode = _median([c["decode"] for r in rs for c in r["cells"]])
        loads = ", ".join(f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f}" for r in rs)
        ratio = f" (x{base / _median(sweep):.2f})" if base and w != configs[0] else ""
        print(f"| {w} | {rs[0]['cells'][0]['threads']} | {_fmt(_median(sweep))}{ratio} ({_fmt(min(sweep))}-"
              f"{_fmt(max(sweep))}) | {_fmt(_median([r['wall_s'] for r in rs]))} | {_fmt(cell)} | {_fmt(decode)} "
              f"| {loads} |")
    print("\nper preset, decode tok/s measured inside the cell (median over repeats):\n")
    print("| preset | " + " | ".join(f"{w} at once" for w in configs) + " |")
    print("|---|" + "---|" * len(configs))
    for i, preset in enumerate(args.recipes.split(",")):
        cells = [_fmt(_median([r["cells"][i]["decode"] for r in results[w]])) for w in configs]
        print(f"| {preset} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
