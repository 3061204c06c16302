"""Moved: a run is compressor/runs/runner.py (`run(RunRequest) -> Report`, job target
"compressor.runs.runner:run_job"). This name stays only while the job manager's DEFAULT_TARGET and
app.py still point here; delete it when they use the runner."""

from compressor.runs.runner import run_job  # noqa: F401
