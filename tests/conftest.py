"""Test settings: offline hub, Triton's interpreter on CPU, quiet libraries.

Environment variables are set here, before any test module imports torch, transformers or kernels.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton kernels run under the interpreter on CPU; must be set before they are decorated.
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, torch.get_num_threads()))

import pytest  # noqa: E402


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch):
    """A 2-layer Llama with 256 positions and the demo's tokenizer, in the data folder."""
    from tests.helpers import tiny_model_folder

    return tiny_model_folder(tmp_path, monkeypatch)


# --- one finished demo run, shared by the end-to-end tests --------------------------------------------

# The CLI flags `--recipe w4-g128 --hardware t4 --samples 24 --ppl-tokens 512 --max-new-tokens 8` make
# this same request: a CLI run with them finds this run's baseline in the cache.
DEMO_RUN_PAYLOAD = {"model": "demo", "recipe": "w4-g128", "hardware": "t4",
                    "eval": {"arithmetic_samples": 24, "ppl_tokens": 512, "max_new_tokens": 8}}


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory):
    """ONE real run (RTN 4-bit on the demo model, small evaluation, projected onto a T4) through the job
    target `compressor.runs.runner.run_job`, for every test that only reads a finished report.

    Yields a namespace: `report` (a Report), `payload`, `data_dir` (its baseline cache: point
    LAB_DATA_DIR here to reuse the baseline), `artifact_dir` (report.json and the saved compressed model).
    Treat it as read-only: tests that change a report change a copy (`Report.from_dict(report.to_dict())`).
    """
    from types import SimpleNamespace

    from compressor.runs.context import JobContext
    from compressor.runs.contract import Report
    from compressor.runs.runner import run_job

    root = tmp_path_factory.mktemp("demo-run")
    ctx = JobContext.local(root / "data", artifact_dir=root / "artifacts", on_log=None)
    report = Report.from_dict(run_job(dict(DEMO_RUN_PAYLOAD), ctx))
    return SimpleNamespace(report=report, payload=DEMO_RUN_PAYLOAD, data_dir=root / "data",
                           artifact_dir=root / "artifacts")


# --- one Chromium per session, for every browser test (tests/ui, tests/fit) ------------------------------


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium through Playwright; the test is skipped without Debian's chromium."""
    from pathlib import Path

    from tests.ui.pages import CHROMIUM, CHROMIUM_ARGS

    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM}: install it with `apt-get install -y chromium`")
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()

