"""Where the page's jobs run: job managers that run each job in a worker process, or, on a Hugging Face
ZeroGPU Space, the app's own process inside a `@spaces.GPU` call (a GPU is attached only there).

The job target takes a RunRequest as JSON (`request.to_dict()`) and returns the report as JSON.
"""

from __future__ import annotations

import os
from pathlib import Path

from compressor.runs.config import ConfigError, ServerConfig
from compressor.runs.context import JobContext
from compressor.runs.manager import JobManager
from compressor.runs.runner import TARGET as RUN_TARGET
from compressor.runs.runner import run_job
from compressor.runs.store import default_data_dir

try:  # present on Spaces, absent elsewhere; the CPU path never needs it
    import spaces
except ImportError:
    spaces = None

ASK_TARGET = "compressor.runs.ask:answer"
ZERO_GPU = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))


def make_managers(data_dir: str | Path | None = None,
                  config: ServerConfig | None = None) -> tuple[JobManager, JobManager]:
    """The compression job manager and the free-prompt one (its own small store under the data folder),
    set from the LAB_* environment (`ServerConfig.from_env`: a bad value is a ConfigError naming it)."""
    config = config or ServerConfig.from_env()
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    manager = JobManager(data_dir, target=RUN_TARGET, concurrency=1, **config.run_manager_options())
    ask_manager = JobManager(data_dir / "prompt-box", target=ASK_TARGET, concurrency=1, **config.ask_manager_options())
    return manager, ask_manager


def _zero_gpu_duration_s() -> int:
    try:
        return ServerConfig.from_env().zero_gpu_duration_s
    except ConfigError:  # start-up reports it (make_managers); the decorator needs a number now
        return ServerConfig().zero_gpu_duration_s


def _gpu(fn):
    return spaces.GPU(duration=_zero_gpu_duration_s())(fn) if spaces is not None else fn


@_gpu
def _run_job_on_gpu(payload: dict, data_dir: str, artifact_dir: str) -> dict:
    # Plain arguments and a context of its own: ZeroGPU may run this in another process.
    ctx = JobContext.local(data_dir, artifact_dir=artifact_dir, on_log=None)
    return run_job({**payload, "device": "cuda"}, ctx)


def run_inline_on_gpu(manager: JobManager, payload: dict, owner: str) -> str:
    """Runs one job in this process under ZeroGPU, recorded by the manager as a queued run is; its id."""
    def on_gpu(job_payload: dict, ctx: JobContext) -> dict:
        return _run_job_on_gpu(job_payload, str(manager.data_dir), str(ctx.artifact_dir))

    return manager.run_inline(payload, owner, on_gpu).id
