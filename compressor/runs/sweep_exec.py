"""Where a sweep's cells run: one interface, two executors.

    executor.submit(payload, owner) -> run_id   a run recorded in the run store, queued
    executor.poll(timeout)                      moves results along (waits up to `timeout` s)
    executor.cancel(run_id, reason)             stops one cell, queued or running
    executor.close()

    slots          cells that run at once (the ETA spreads the work left over them)
    max_in_flight  cells handed over but not finished that the sweep allows; None: hand over all
                   (the executor's own scheduler queues them)

`LocalExecutor` is the job manager's worker pool (compressor.runs.manager): each cell is a job like any
other, in the same FIFO queue as everyone's runs, so a sweep hands over `slots` cells at a time and the
rest of the queue is served between them. `RayExecutor` (compressor.runs.sweep_ray) runs each cell as a
Ray task. `make_executor` picks one: Ray when an address is given (or LAB_RAY_ADDRESS is set), else local.

The local pool is bounded by this machine: `local_slots` allows at most one cell per core and as many as
fit in available memory (an estimate per cell: `cell_bytes`), and each cell's worker gets cores / slots
threads (OMP_NUM_THREADS, which torch reads as it starts).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from compressor.errors import LabError

RAY_ADDRESS_ENV = "LAB_RAY_ADDRESS"
CELL_RUNTIME_BYTES = 768 * 2**20  # a worker with torch and transformers loaded, before any model (measured ~530 MiB)
CELL_WEIGHT_COPIES = 3  # baseline weights in fp32, the compressed copy, activations and calibration buffers


@dataclass
class RunPlace:
    """Where cells are recorded: a run store, its artifact folder and the artifact policy. A JobManager
    has these three attributes and serves as one; `RunPlace.open` makes one without a worker pool (a
    CLI sweep that runs on Ray)."""

    store: object
    artifact_root: Path
    artifacts: object = field(default=None)

    @classmethod
    def open(cls, data_dir: str | Path | None = None) -> RunPlace:
        from compressor.runs.artifacts import ArtifactPolicy
        from compressor.runs.store import RunStore

        store = RunStore(data_dir, check=True)
        root = store.data_dir / "artifacts"
        root.mkdir(exist_ok=True)
        return cls(store, root, ArtifactPolicy())


class Executor(Protocol):
    name: str
    slots: int
    max_in_flight: int | None

    def submit(self, payload: dict, owner: str) -> str: ...

    def poll(self, timeout: float) -> None: ...

    def cancel(self, run_id: str, reason: str) -> None: ...

    def close(self) -> None: ...


def machine_cores() -> int:
    """Cores this process may run on (its affinity, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cell_bytes(n_params: int) -> int:
    """Estimated peak memory of one cell of a model with `n_params` parameters (an estimate, for bounding)."""
    return CELL_RUNTIME_BYTES + CELL_WEIGHT_COPIES * 4 * n_params


def local_slots(requested: int | None = None, per_cell_bytes: int | None = None, *, cores: int | None = None,
                available_bytes: int | None = None) -> int:
    """Cells to run at once here: `requested` (default: one per core), at most one per core and as many
    as `per_cell_bytes` fit in available memory; at least one."""
    import psutil

    cores = cores or machine_cores()
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise LabError(f"workers={requested!r} is not valid: use an integer >= 1 (cells that run at once)")
    slots = min(requested or cores, cores)
    if per_cell_bytes:
        available = psutil.virtual_memory().available if available_bytes is None else available_bytes
        slots = min(slots, max(1, available // per_cell_bytes))
    return max(1, slots)


class LocalExecutor:
    """Cells as jobs of a JobManager (its worker processes), `slots` of them handed over at a time.

    With `own=True` the executor shut the manager down when closed (the CLI's own pool); the page's
    manager is the page's to stop.
    """

    def __init__(self, manager, slots: int | None = None, own: bool = False):
        self.manager = manager
        self.slots = slots or manager.concurrency
        self.max_in_flight = self.slots
        self.name = f"local ({self.slots} at once)"
        self._own = own
        self._threads_env: str | None = None  # OMP_NUM_THREADS before own_pool set it

    def submit(self, payload: dict, owner: str) -> str:
        return self.manager.submit(payload, owner)

    def poll(self, timeout: float) -> None:
        time.sleep(timeout)  # the manager's scheduler thread runs the cells and records them

    def cancel(self, run_id: str, reason: str) -> None:
        self.manager.cancel(run_id, reason=reason)

    def close(self) -> None:
        if self._own:
            self.manager.shutdown()
            _restore("OMP_NUM_THREADS", self._threads_env)
            self._own = False

    @classmethod
    def own_pool(cls, data_dir: str | Path | None = None, workers: int | None = None,
                 per_cell_bytes: int | None = None) -> LocalExecutor:
        """A pool of this machine's own for a sweep (the CLI): `local_slots` workers, each with
        cores / workers threads, recording in the data folder's run store."""
        from compressor.runs.manager import JobManager
        from compressor.runs.runner import TARGET, check_payload

        slots = local_slots(workers, per_cell_bytes)
        # Worker processes are spawned with this environment (torch takes its thread count from it);
        # `close` puts the variable back as it was.
        before = os.environ.get("OMP_NUM_THREADS")
        os.environ["OMP_NUM_THREADS"] = str(max(1, machine_cores() // slots))
        try:
            manager = JobManager(data_dir, target=TARGET, concurrency=slots, check_payload=check_payload)
        except BaseException:
            _restore("OMP_NUM_THREADS", before)
            raise
        executor = cls(manager, slots, own=True)
        executor._threads_env = before
        return executor


def _restore(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def ray_address(address: str | None = None) -> str | None:
    """The Ray cluster to use: `address`, else LAB_RAY_ADDRESS, else None (run here)."""
    address = address if address is not None else os.environ.get(RAY_ADDRESS_ENV, "")
    return address.strip() or None


def make_executor(manager, ray: str | None = None, **ray_options) -> Executor:
    """The Ray executor when `ray` (or LAB_RAY_ADDRESS) names a cluster ("auto", "ray://host:10001",
    "local" for a Ray started in this process), else the manager's local pool. Cells are recorded in
    `manager`'s run store either way."""
    address = ray_address(ray)
    if address is None:
        return LocalExecutor(manager)
    from compressor.runs.sweep_ray import RayExecutor

    return RayExecutor(manager, address, **ray_options)
