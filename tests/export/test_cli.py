"""The command line: `python -m compressor export --run ID` on a stored run, `run --export FORMAT --out DIR`, and
bad input refused with exit 2 before any model loads."""

from __future__ import annotations

import json
import tempfile
import time

import pytest
import torch

from compressor.__main__ import main
from compressor.export import GGUF_FILE, RESULT_FILE
from tests.export.conftest import lab_weights

RUN_FLAGS = ["--model", "demo", "--recipe", "w4-g128", "--hardware", "t4", "--samples", "24", "--ppl-tokens", "512",
             "--max-new-tokens", "8", "--quiet"]  # the demo run's request (tests/conftest.py): its baseline is cached


@pytest.fixture
def store(demo_run, tmp_path):
    """A data folder whose run store holds the demo run three ways: kept (its saved model), without a model
    (pruned by the artifact policy), and failed."""
    from compressor.runs.store import FAILED, SUCCEEDED, RunStore

    data = tmp_path / "data"
    st = RunStore(data)
    report = demo_run.report.to_dict()
    for rid, fields in {"kept": dict(status=SUCCEEDED, report=report, artifact_path=str(demo_run.artifact_dir)),
                        "nomodel": dict(status=SUCCEEDED, report=report, artifact_path=None),
                        "broken": dict(status=FAILED, error="out of memory")}.items():
        st.create_run("cli", demo_run.payload, run_id=rid)
        st.update_run(rid, finished_at=time.time(), **fields)
    st.close()
    return data


@pytest.fixture
def lab_model(demo_run):
    from compressor.models.loading import load_model

    return load_model(str(demo_run.artifact_dir), roots=[demo_run.artifact_dir])[0]


@pytest.mark.parametrize("fmt", ["gguf", "ct", "hf"])
def test_export_a_stored_run(fmt, store, lab_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--run", "kept", "--format", fmt, "--out", str(out), "--data-dir", str(store)]) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / RESULT_FILE).read_text())
    assert printed.startswith(f"{result['fmt']}: ") and f"export written to {out}" in printed
    assert set(result["files"]) == {p.name for p in out.iterdir()}
    weights = lab_weights(lab_model)
    if fmt == "gguf":
        import gguf

        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(out / GGUF_FILE).tensors}
        assert types["blk.0.attn_q.weight"] == "Q4_1"  # w4-g128 is asymmetric: Q4_1, rounded min
        assert result["counts"]["rounded"] + result["counts"]["lossless"] == 42
        return
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    assert result["lossless"]
    for name, w in weights.items():  # the stored run's weights, bit for bit
        assert torch.equal(loaded[f"{name}.weight"], w), name


@pytest.mark.parametrize("run_id,needle", [
    ("nope", "no run 'nope' in"),
    ("nomodel", "kept no compressed model"),
    ("broken", "run broken is failed"),
])
def test_a_run_without_a_model_says_how_to_get_one(run_id, needle, store, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["export", "--run", run_id, "--format", "gguf", "--out", str(out), "--data-dir", str(store)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err and not out.exists()
    if run_id == "nope":
        assert "runs with a saved model there: kept" in err
    if run_id == "nomodel":
        assert "python -m compressor run --model demo --recipe w4-g128 --export FORMAT --out DIR" in err


def _path(arg: str, tmp_path) -> str:
    """`{name}` in an argument -> tmp_path / name."""
    for name in ("out", "full", "file"):
        arg = arg.replace(f"{{{name}}}", str(tmp_path / name))
    return arg


def _forbid_work(monkeypatch):
    import compressor.models.loading
    import compressor.runs.runner

    def fail(*a, **k):
        pytest.fail("bad export input must be refused before any model loads")

    monkeypatch.setattr(compressor.runs.runner, "run", fail)
    monkeypatch.setattr(compressor.models.loading, "load_model", fail)


@pytest.mark.parametrize("extra,needle", [
    (["--export", "onnx", "--out", "{out}"], "format='onnx' is not valid: choose one of compressed-tensors, gguf"),
    (["--export", "gguf", "--out", "{full}"], "is not empty: give a new or empty folder"),
    (["--export", "gguf", "--out", "{file}"], "is a file: give a folder"),
    (["--export", "gguf", "--out", "{file}/sub"], "is a file, not a folder"),
    (["--export", "gguf"], "--export gguf needs --out DIR"),
    (["--out", "{out}"], "--out is the folder for --export"),
    (["--recipe", "w3-g128", "--export", "gguf", "--out", "{out}"], "GGUF cannot hold 3-bit weights"),
    (["--recipe", "{stages: [{method: rtn, bits: 4}, {method: kivi}]}", "--export", "ct", "--out", "{out}"],
     "compressed-tensors cannot hold the KV-cache stage (kivi)"),
    (["--recipe", "nf4", "--export", "hf", "--out", "{out}"], "bitsandbytes layers are not saved"),
])
def test_run_export_bad_input_exits_2_before_the_run(extra, needle, tmp_path, monkeypatch, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    (tmp_path / "file").write_text("x")
    _forbid_work(monkeypatch)
    argv = ["run", *RUN_FLAGS, *[_path(a, tmp_path) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    if "3-bit" in needle:  # names the format that can, and no Python-only option
        assert "export to compressed-tensors" in err and "pass --mismatch" not in err


@pytest.mark.parametrize("extra,needle", [
    (["--format", "onnx"], "format='onnx' is not valid"),
    (["--format", "gguf", "--mismatch", "dense", "--out", "{full}"], "is not empty"),
])
def test_export_bad_input_exits_2_before_the_store_is_read(extra, needle, tmp_path, monkeypatch, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    _forbid_work(monkeypatch)
    argv = ["export", "--run", "kept", "--out", str(tmp_path / "out"), "--data-dir", str(tmp_path / "none"),
            *[_path(a, tmp_path) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "no run store" not in err


def test_export_needs_a_run_store(tmp_path, capsys):
    assert main(["export", "--run", "x", "--format", "gguf", "--out", str(tmp_path / "o"),
                 "--data-dir", str(tmp_path / "empty")]) == 2
    assert "no run store in" in capsys.readouterr().err and not (tmp_path / "empty").exists()


def test_run_with_export_writes_the_runs_model(demo_run, lab_model, tmp_path, monkeypatch, capsys):
    """A real CLI run (the demo run's request: its baseline is cached) ending in a compressed-tensors export that
    transformers loads with the run's weights bit for bit; no temp folder is left behind."""
    from transformers import AutoModelForCausalLM

    monkeypatch.setenv("LAB_DATA_DIR", str(demo_run.data_dir))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    out, report = tmp_path / "out", tmp_path / "report.json"
    assert main(["run", *RUN_FLAGS, "--export", "compressed-tensors", "--out", str(out), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "perplexity" in printed and "compressed-tensors: 42 lossless" in printed and report.is_file()
    assert list((tmp_path / "tmp").iterdir()) == []
    assert json.loads((out / "config.json").read_text())["quantization_config"]["format"] == "pack-quantized"
    loaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).state_dict()
    for name, w in lab_weights(lab_model).items():
        assert torch.equal(loaded[f"{name}.weight"], w), name


def test_a_run_that_saved_nothing_exports_nothing(tmp_path, capsys):
    from compressor.cli.export import export_after_run

    assert export_after_run(str(tmp_path), "gguf", tmp_path / "out", report=None) == 1
    assert "saved no compressed model" in capsys.readouterr().err
