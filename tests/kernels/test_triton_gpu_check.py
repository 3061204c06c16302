"""benchmarks/gpu_check.py --dry-run: the GPU session's one command runs end to end on CPU (Triton's interpreter,
tiny shapes), every section reporting a row and the correctness and decode sections passing."""

import importlib.util
import json

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")


def test_gpu_check_dry_run_writes_its_table(tmp_path):
    from benchmarks.gpu_check import main

    assert main(["--dry-run", "--out", str(tmp_path)]) == 0
    table = (tmp_path / "gpu_check.md").read_text()
    for section in ("ceilings", "correct", "kernels", "decode", "crossover", "prefill", "fp8", "ptx"):
        assert f"| {section} |" in table, section
    assert "ERROR" not in table and "FAIL" not in table
    figures = json.loads((tmp_path / "gpu_check.json").read_text())
    assert figures["correct"]["cases"] > 0 and not figures["correct"]["failures"]
    decode = figures["decode"]["tiny Llama (dry run)"]
    assert decode["w4"]["static_eager"] > 0  # the quantized model decoded through the Triton kernels
