"""`python -m compressor sweep`: models x recipes x evaluation settings, each cell a run in the history.

    python -m compressor sweep --model demo --recipes w4-g128,int8,hqq-w4-g64 --json sweep.json
    python -m compressor sweep --model demo --recipes recipes.yaml --eval quick,standard --workers 2
    python -m compressor sweep --model demo --recipes w4-g128,int8 --ray auto      # each cell a Ray task

Cells run in this machine's worker processes (`--workers`, bounded by cores and memory) or, with `--ray`
(or LAB_RAY_ADDRESS), on a Ray cluster. Every cell is recorded in the data folder's run store like a
single run (the page's History shows it). Exit status 0 when every cell succeeded, 1 when one failed
or was cancelled (the table says which), 2 for bad input, before anything runs.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from compressor.cli.run import check_output_file, recipe_arg
from compressor.measure.settings import DEFAULT_PRESET
from compressor.runs.format import fmt, fmt_duration
from compressor.runs.store import SUCCEEDED

CLI_OWNER = "cli"
# column, width, Measurement attribute of the compressed model, figure kind (compressor/runs/format.py)
COLUMNS = (("weights", 11, "weight_bytes", "bytes"), ("KL", 8, "kld", "kl"), ("top-1", 8, "top1_agreement", "pct"),
           ("arith", 8, "arithmetic_accuracy", "pct"), ("decode/s", 9, "decode_tokens_per_s", "rate"))


def add_parser(sub) -> None:
    s = sub.add_parser("sweep", help="run a grid of models x recipes x evaluation settings, each cell a run")
    s.add_argument("--model", action="append", help="'demo', a local folder or a hub id; repeat it or give a "
                   "comma-separated list for several (default demo)")
    s.add_argument("--recipes", required=True, help="preset names a,b,c, a .yaml file, or YAML text of a list")
    s.add_argument("--eval", default=DEFAULT_PRESET, help="evaluation presets a,b or a YAML mapping of settings "
                   f"(default {DEFAULT_PRESET})")
    s.add_argument("--hardware", default="this-machine", help="profile each report is projected onto")
    s.add_argument("--device", default="cpu")
    s.add_argument("--workers", type=int, help="cells at once on this machine (default and upper bound: one per "
                   "core, as many as fit in memory)")
    s.add_argument("--ray", metavar="ADDRESS", help="run each cell as a Ray task: auto, ray://host:10001, or local "
                   "(default: LAB_RAY_ADDRESS, else this machine)")
    s.add_argument("--ray-cpus", type=int, default=2, help="CPUs each Ray task reserves (default 2)")
    s.add_argument("--json", type=Path, help="write the sweep, its progress and every cell's report here")
    s.add_argument("--quiet", action="store_true", help="no progress lines")
    s.set_defaults(func=cmd_sweep)


def spec_from_args(args):
    """The SweepSpec of the flags (bad recipes or settings fail here, before anything runs)."""
    from compressor.fit.sweeps import register
    from compressor.runs.sweep import SweepSpec

    register()  # `budget:` entries become the allocator's recipe per model (compressor/fit/sweeps.py)
    models = ",".join(args.model or ["demo"])
    return SweepSpec.build(models, recipe_arg(args.recipes), args.eval, hardware=args.hardware, device=args.device)


def cmd_sweep(args) -> int:
    from compressor.runs.sweep_exec import LocalExecutor, RunPlace, cell_bytes, local_slots, ray_address
    from compressor.runs.sweep_run import Sweeps, preflight_cells

    local_slots(args.workers)  # a bad --workers fails now, before the models are checked
    spec = spec_from_args(args)
    cells = spec.cells()
    if args.json:
        check_output_file(args.json)
    address = ray_address(args.ray)
    if address is None:
        largest = preflight_cells(cells)
        executor = LocalExecutor.own_pool(workers=args.workers, per_cell_bytes=cell_bytes(largest))
        place = executor.manager
    else:
        from compressor.runs.sweep_ray import RayExecutor

        place = RunPlace.open()
        executor = RayExecutor(place, address, cpus_per_cell=args.ray_cpus)
    sweeps = Sweeps(place, executor=executor, check_models=False)
    t0 = time.perf_counter()
    try:
        sweep_id = sweeps.start(spec, CLI_OWNER)
        _say(args, f"sweep {sweep_id}: {len(cells)} cells on {executor.name}")
        _follow(args, sweeps, sweep_id)
    except KeyboardInterrupt:
        if "sweep_id" in locals():
            sweeps.cancel(sweep_id, reason="interrupted from the command line")
            sweeps.wait(sweep_id, timeout=30)
        raise
    finally:
        sweeps.shutdown()
    cells = sweeps.cells(sweep_id)
    progress = sweeps.progress(sweep_id)
    print(format_table(cells))
    print(f"\n{progress.line()} in {fmt_duration(time.perf_counter() - t0)} ({executor.name})")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(sweep_json(sweeps.get(sweep_id), progress, cells), indent=1))
        print(f"sweep written to {args.json}")
    return 0 if progress.done == progress.total else 1


def _say(args, line: str) -> None:
    if not args.quiet:
        print(line, file=sys.stderr)


def _follow(args, sweeps, sweep_id: str, every_s: float = 1.0) -> None:
    """Prints the progress line whenever it changes, until the sweep ends."""
    last = None
    while True:
        done = sweeps.ended(sweep_id, every_s)
        line = sweeps.progress(sweep_id).line()
        if line.split(", about")[0] != last:
            _say(args, f"[sweep {sweep_id}] {line}")
            last = line.split(", about")[0]
        if done:
            return


def format_table(cells) -> str:
    """One line per cell: where it stands and the compressed model's headline figures."""
    head = f"{'model':<14}{'recipe':<28}{'eval':<10}{'status':<11}" + "".join(f"{c[0]:>{c[1]}}" for c in COLUMNS)
    lines = [head + "  run"]
    for c in cells:
        report = c.run.load_report() if c.run is not None and c.run.status == SUCCEEDED else None
        figures = "".join(f"{fmt(getattr(report.compressed, attr), kind) if report else '':>{w}}"
                          for _, w, attr, kind in COLUMNS)
        lines.append(f"{Path(c.model).name[:13]:<14}{c.recipe_label[:27]:<28}{c.eval_label[:9]:<10}{c.status:<11}"
                     f"{figures}  {c.run_id or ''}")
        error = c.run.error if c.run is not None else c.error
        if error and c.status != SUCCEEDED:
            lines.append(f"    {error[:300]}")
    return "\n".join(lines)


def sweep_json(sweep, progress, cells) -> dict:
    """The sweep, its progress and each cell with its run's report (None for a cell without one)."""
    return {"sweep": {"id": sweep.id, "executor": sweep.executor, "slots": sweep.slots, "status": sweep.status,
                      "spec": sweep.spec, "created_at": sweep.created_at, "finished_at": sweep.finished_at},
            "progress": progress.to_dict(),
            "cells": [{"index": c.index, "model": c.model, "recipe": c.recipe_label, "eval": c.eval_label,
                       "status": c.status, "run_id": c.run_id,
                       "error": c.run.error if c.run is not None else c.error,
                       "report": c.run.report if c.run is not None else None} for c in cells]}
