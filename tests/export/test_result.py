"""ExportResult as the CLI and the app read it: summary line, counts, JSON written beside the export."""

from __future__ import annotations

import json
import math

import pytest

from compressor.export import RESULT_FILE, ExportResult, TensorNote, export_model


def test_summary_names_the_worst_tensor_and_counts():
    notes = [TensorNote("a", "int4 g32 sym", "Q4_0", "lossless"),
             TensorNote("b", "int4 g32 asym", "Q4_1", "rounded", 2e-5, 90.0, "fp16 min"),
             TensorNote("c", "fp8", "Q8_0", "requantized", 3e-4, 50.0, "no FP8 type")]
    r = ExportResult("gguf", None, notes=notes)
    assert not r.lossless and r.counts() == {"lossless": 1, "rounded": 1, "requantized": 1, "dense": 0}
    assert "max |dW| 0.0003 (c: no FP8 type)" in r.summary()
    assert ExportResult("gguf", None, notes=[notes[1], *notes]).written() == \
        "2 Q4_1 rounded, 1 Q4_0 lossless, 1 Q8_0 requantized"
    assert ExportResult("gguf", None, notes=notes[:1]).summary().endswith("every weight bit-exact")
    with pytest.raises(ValueError):
        TensorNote("d", "x", "y", "approximately")


def test_export_json_is_written_and_readable(compressed_tiny, demo_tokenizer, tmp_path):
    result = export_model(compressed_tiny("int4-g32-sym"), demo_tokenizer, "gguf", tmp_path)
    saved = json.loads((tmp_path / RESULT_FILE).read_text())
    assert saved["fmt"] == "gguf" and saved["lossless"] is True and saved["version"] == 1
    assert len(saved["notes"]) == len(result.notes) == 15
    assert math.isinf(result.notes[0].sqnr_db) and saved["notes"][0]["sqnr_db"] == "inf"
    assert set(result.files) == {"model.gguf", RESULT_FILE} and result.bytes_written > 0


@pytest.mark.parametrize("fmt", ["gguf", "compressed-tensors"])
def test_the_recipe_travels_with_the_export(fmt, demo_tokenizer, tmp_path):
    import gguf

    import compressor
    from tests.helpers import tiny_llama

    model, report = compressor.compress(tiny_llama(vocab=4096), "int8")
    export_model(model, demo_tokenizer, fmt, tmp_path, report=report)
    if fmt == "gguf":
        field = gguf.GGUFReader(tmp_path / "model.gguf").fields["compression_lab.recipe"]
        recipe = json.loads(bytes(field.parts[field.data[0]]).decode())
    else:
        recipe = json.loads((tmp_path / "config.json").read_text())["compression_lab_export"]["recipe"]
    assert recipe == report.recipe and recipe["stages"][0]["bits"] == 8


def test_table_says_a_per_layer_remark_once_with_its_count():
    from compressor.export.table import condense

    notes = [f"model.layers.{i}.mlp.up_proj: 50.0% zeros stored densely" for i in range(3)] + ["tied head not written"]
    assert condense(notes) == "3 layers: 50.0% zeros stored densely; tied head not written"
