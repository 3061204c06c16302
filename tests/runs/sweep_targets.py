"""Job targets for the sweep tests, with the contract's signature `target(payload, ctx) -> dict`.

Each runs in a worker process (the job manager's or Ray's), imported by name
("tests.runs.sweep_targets:NAME"). The payloads are real RunRequests (a sweep checks every cell), which
these targets read only for the recipe: what the tests are about is the executor, not the figures.
Keep this module light: no torch.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

BASELINE_S, CELL_S = 0.4, 0.4
HANG_RECIPE = "w3-g128"  # real_or_hang: the cell with this preset hangs until it is killed


def phased(payload: dict, ctx) -> dict:
    """The runner's phases in brief: the baseline (measured once per model, then read from ctx.cache),
    then the rest of the cell."""
    t0 = time.time()
    key = f"baseline:{payload['model']}"
    ctx.progress({"stage": "evaluate-baseline", "fraction": 0.1, "message": "baseline"})
    cached = ctx.cache.get(key)
    if cached is None:
        time.sleep(BASELINE_S)
        ctx.cache.put(key, {"measured_by": ctx.run_id})
    ctx.progress({"stage": "compress", "fraction": 0.5})
    time.sleep(CELL_S)
    return {"recipe": payload["recipe"], "baseline_cached": cached is not None, "pid": os.getpid(),
            "started": t0, "finished": time.time()}


def hang(payload: dict, ctx) -> dict:
    """Reports that it is past the baseline, then blocks for a minute (a cell to cancel or kill)."""
    ctx.log(f"pid={os.getpid()}")
    ctx.progress({"stage": "compress", "fraction": 0.4, "message": "hanging"})
    time.sleep(60)
    return {"slept": 60}


def real_or_hang(payload: dict, ctx) -> dict:
    """The real runner, except for the HANG_RECIPE cell, which hangs (the Ray test kills its worker)."""
    if payload["recipe"] == HANG_RECIPE:
        return hang(payload, ctx)
    from compressor.runs.runner import run_job

    return run_job(payload, ctx)


def hang_once(payload: dict, ctx) -> dict:
    """The HANG_RECIPE cell hangs on its first attempt and returns at once on the next (a worker killed
    once, then retried); other cells return at once."""
    marker = Path(tempfile.gettempdir()) / f"lab-sweep-attempt-{ctx.run_id}"
    if payload["recipe"] == HANG_RECIPE and not marker.exists():
        marker.write_text(str(os.getpid()))
        return hang(payload, ctx)
    marker.unlink(missing_ok=True)
    ctx.progress({"stage": "compress", "fraction": 0.5})
    return {"retried": payload["recipe"] == HANG_RECIPE, "pid": os.getpid()}
