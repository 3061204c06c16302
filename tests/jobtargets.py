"""Real job targets for the job tests: they sleep, raise, report progress, allocate and save files.

Each runs inside a worker process, imported by name ("tests.jobtargets:NAME"), with the contract's
signature `target(payload, ctx) -> dict`. Keep this module free of heavy imports: the tests check
that a worker starts without torch.
"""

from __future__ import annotations

import os
import sys
import time

from compressor.errors import RecipeError
from compressor.progress import Progress


def echo(payload: dict, ctx) -> dict:
    """Returns the payload with the worker's pid and whether torch was loaded before the target."""
    ctx.progress(Progress(stage="echo", fraction=1.0, message="echoing"))
    return {"payload": payload, "pid": os.getpid(), "torch_loaded": "torch" in sys.modules}


def steps(payload: dict, ctx) -> dict:
    """Reports `n` layer steps of `step_s` seconds each, as dicts and as Progress objects."""
    n, step_s = int(payload.get("n", 4)), float(payload.get("step_s", 0.01))
    t0 = time.time()
    for i in range(1, n + 1):
        time.sleep(step_s)
        event = {"stage": "quantize", "fraction": i / n, "layer": i, "n_layers": n, "eta_s": (n - i) * step_s}
        ctx.progress(event if i % 2 else Progress(**event))
    ctx.log(f"done {n} steps")
    return {"steps": n, "seconds": time.time() - t0, "started": t0, "tag": payload.get("tag")}


def sleep_then_return(payload: dict, ctx) -> dict:
    """Logs its pid, then sleeps `seconds` in one blocking call (as a long kernel would)."""
    ctx.log(f"pid={os.getpid()}")
    ctx.progress({"stage": "sleep", "fraction": 0.0, "message": "sleeping"})
    t0 = time.time()
    time.sleep(float(payload.get("seconds", 60)))
    return {"slept": time.time() - t0, "started": t0, "tag": payload.get("tag")}


def spin(payload: dict, ctx) -> dict:
    """Busy-computes in pure Python for `seconds` (no sleep, no I/O): cancel must still stop it."""
    ctx.log(f"pid={os.getpid()}")
    deadline, x = time.time() + float(payload.get("seconds", 60)), 0
    while time.time() < deadline:
        x = (x * 1103515245 + 12345) % 2**31
    return {"x": x}


def raise_lab_error(payload: dict, ctx) -> dict:
    ctx.progress({"stage": "validate", "fraction": 0.1})
    raise RecipeError("bits", payload.get("bits", 5), "use 2, 3, 4 or 8", stage="rtn")


def raise_other(payload: dict, ctx) -> dict:
    return {"ratio": 1 / int(payload.get("zero", 0))}


def allocate_and_hang(payload: dict, ctx) -> dict:
    """Holds `mb` MiB of touched memory and waits (a job about to be killed by the OOM killer)."""
    block = bytearray(int(payload.get("mb", 64)) * 2**20)
    block[:: 4096] = b"\x01" * len(block[::4096])  # touch every page so it is resident
    ctx.log(f"pid={os.getpid()}")
    time.sleep(float(payload.get("seconds", 60)))
    return {"held": len(block)}


def use_cache(payload: dict, ctx) -> dict:
    """Measures a 'baseline' once per key; later runs read it from ctx.cache."""
    key = payload["key"]
    hit = ctx.cache.get(key)
    if hit is None:
        hit = {"perplexity": 12.5, "measured_by": os.getpid()}
        ctx.cache.put(key, hit)
        return {"cached": False, "baseline": hit}
    return {"cached": True, "baseline": hit}


def save_artifact(payload: dict, ctx) -> dict:
    """Writes `kb` KiB into ctx.artifact_dir (a stand-in for a saved compressed model)."""
    path = ctx.artifact_dir / "model.safetensors"
    path.write_bytes(os.urandom(int(payload.get("kb", 4)) * 1024))
    return {"artifact": str(path)}


def not_a_dict(payload: dict, ctx) -> list:
    return [1, 2, 3]


def dispatch(payload: dict, ctx) -> dict:
    """Runs the target named by payload["fn"], so one manager can run a mix of behaviours in order."""
    return globals()[payload["fn"]](payload, ctx)
