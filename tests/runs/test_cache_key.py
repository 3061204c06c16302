"""The baseline cache key: it changes with the model's file contents (not only name, size and mtime),
with a hub model's revision, and with the evaluation data; a changed eval set never reuses a stale baseline."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from compressor.measure import evaldata
from compressor.measure.settings import EvalSettings
from compressor.runs import fingerprint
from compressor.runs.contract import Environment, RunRequest
from compressor.runs.runner import run

# The smallest evaluation the engine accepts, no probe ("t4" is a profile, not a measurement).
SMALL = {"ppl_tokens": 128, "context": 64, "stride": 32, "arithmetic_samples": 2, "max_new_tokens": 2,
         "repeats": 1, "speed_prompt_tokens": 8, "speed_new_tokens": 2, "speed_batch": 1,
         "online_extras": False, "attribute_stages": False}


class DictCache(dict):
    def get(self, key):
        return super().get(key)

    def put(self, key, value):
        self[key] = value


def _model_in(folder: Path):
    return SimpleNamespace(config=SimpleNamespace(_name_or_path=str(folder)))


def _rewrite_keeping_size_and_mtime(path: Path, data: bytes) -> None:
    """What `cp -p`, `rsync -a` or `tar x` leave: other bytes, same size, the old mtime."""
    st = path.stat()
    assert len(data) == st.st_size
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "m"
    f.mkdir()
    (f / "model.safetensors").write_bytes(bytes(range(256)) * 64)
    (f / "config.json").write_text('{"a": 1}')
    (f / "tokenizer.model").write_bytes(b"sentencepiece" * 10)
    (f / "README.md").write_text("about the model")
    return f


def test_weights_rewritten_with_same_size_and_mtime_change_the_fingerprint(folder):
    before = fingerprint.model_fingerprint(_model_in(folder), "m")
    w = folder / "model.safetensors"
    _rewrite_keeping_size_and_mtime(w, bytes(reversed(w.read_bytes())))
    assert fingerprint.model_fingerprint(_model_in(folder), "m") != before


@pytest.mark.parametrize("name", ["tokenizer.model", "merges.txt", "chat_template.jinja"])
def test_tokenizer_files_of_any_suffix_are_in_the_fingerprint(folder, name):
    before = fingerprint.model_fingerprint(_model_in(folder), "m")
    path = folder / name
    if path.exists():
        _rewrite_keeping_size_and_mtime(path, path.read_bytes().upper())
    else:
        path.write_text("new file")
    assert fingerprint.model_fingerprint(_model_in(folder), "m") != before


def test_a_readme_edit_keeps_the_fingerprint(folder):
    before = fingerprint.model_fingerprint(_model_in(folder), "m")
    (folder / "README.md").write_text("a longer text about the model")
    assert fingerprint.model_fingerprint(_model_in(folder), "m") == before


def test_large_files_are_sampled_and_hashing_is_not_repeated(folder, monkeypatch):
    monkeypatch.setattr(fingerprint, "FULL_HASH_MAX_BYTES", 1024)  # the 16 KiB weights count as large
    monkeypatch.setattr(fingerprint, "SAMPLE_CHUNK_BYTES", 16)
    reads = []
    real = fingerprint._file_digest
    monkeypatch.setattr(fingerprint, "_file_digest", lambda p, st: reads.append(p.name) or real(p, st))
    first = fingerprint.model_fingerprint(_model_in(folder), "m")
    assert "model.safetensors" in reads
    reads.clear()
    assert fingerprint.model_fingerprint(_model_in(folder), "m") == first
    assert reads == []  # memoised by (path, size, mtime_ns, ctime_ns)
    w = folder / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[0] ^= 0xFF  # the first chunk is always sampled
    _rewrite_keeping_size_and_mtime(w, bytes(data))
    assert fingerprint.model_fingerprint(_model_in(folder), "m") != first
    assert reads == ["model.safetensors"]


def test_hub_model_fingerprint_holds_the_resolved_revision(tmp_path, monkeypatch):
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    repo = cache / "models--org--name"
    commit = "a" * 40
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    fp = fingerprint.model_fingerprint(_model_in("org/name"), "org/name")
    assert fp["revision"] == commit and fp["identified"]
    (repo / "refs" / "main").write_text("b" * 40)  # the hub's main moved and was downloaded
    (repo / "snapshots" / ("b" * 40)).mkdir()
    (repo / "snapshots" / ("b" * 40) / "config.json").write_text("{}")
    assert fingerprint.model_fingerprint(_model_in("org/name"), "org/name")["revision"] == "b" * 40
    unknown = fingerprint.model_fingerprint(_model_in("org/other"), "org/other")
    assert unknown["revision"] is None and not unknown["identified"]


def test_cache_key_changes_with_the_eval_data():
    fp = {"spec": "m"}
    env = Environment(device="cpu", python="3", torch="2", transformers="5", platform="p", cpu="c", threads=2)
    s = EvalSettings.from_dict(SMALL)
    tokens = torch.arange(10)
    problems = [{"prompt": "1+1=", "answer": "2"}]
    data = fingerprint.eval_data_digest(tokens, problems, ["p"])
    key = fingerprint.baseline_cache_key(fp, s, env, data)
    assert key != fingerprint.baseline_cache_key(fp, s, env, fingerprint.eval_data_digest(tokens + 1, problems, ["p"]))
    assert key != fingerprint.baseline_cache_key(fp, s, env, fingerprint.eval_data_digest(tokens, problems * 2, ["p"]))
    assert key != fingerprint.baseline_cache_key(fp, s, env, fingerprint.eval_data_digest(tokens, problems, ["q"]))


def test_changed_prompts_or_weights_do_not_reuse_the_cached_baseline(tiny_folder, monkeypatch):
    cache = DictCache()
    request = RunRequest(model=str(tiny_folder), recipe="int8", hardware="t4", eval=SMALL)
    first = run(request, cache=cache)
    assert not first.timings.baseline_cached
    again = run(request, cache=cache)
    assert again.timings.baseline_cached

    prompts = evaldata.load_prompts()
    monkeypatch.setattr(evaldata, "load_prompts", lambda: prompts + ["One more prompt"])
    more = run(request, cache=cache)  # crashed in zip()
    assert not more.timings.baseline_cached and len(more.samples) == len(prompts) + 1

    from safetensors.torch import load_file, save_file

    w = tiny_folder / "model.safetensors"
    st = w.stat()
    save_file({k: v * 0.5 if "mlp" in k else v for k, v in load_file(w).items()}, w, metadata={"format": "pt"})
    os.utime(w, ns=(st.st_atime_ns, st.st_mtime_ns))
    changed = run(request, cache=cache)
    assert not changed.timings.baseline_cached
    assert changed.baseline.perplexity != more.baseline.perplexity

