"""Pruned and factored models save and load back with the same structure and identical logits.

Structured pruning gives layers their own q/k/v/o and gate/up/down shapes (rebuilt from
config.pruned_layout), low-rank stages leave two-linear LowRankLinear modules, compact 2:4 leaves
Sparse24Linear; each also stacked under a later 4-bit RTN stage where that is supported.
"""

import json

import pytest
import torch

from compressor import compress, load_compressed, save_compressed
from compressor.errors import ModelLoadError
from compressor.models.loading import DEMO_DIR, load_model
from tests.helpers import random_tokens, tiny_llama

# Layer 0 loses half its KV groups and MLP channels, layer 1 only a quarter of its channels, so the
# two layers have different shapes and neither matches config.json's uniform sizes.
STRUCTURED = {"method": "structured", "heads_fraction": 0.5, "mlp_fraction": 0.5,
              "overrides": [{"pattern": r"layers\.1\.", "heads_fraction": 0.0, "mlp_fraction": 0.25}]}
RTN4 = {"method": "rtn", "bits": 4, "group_size": 32}  # 32 divides every pruned in_features (64, 128, 192)

# case: (kv_heads, recipe, types of the *_proj modules, types listed in config.json's module section)
CASES = {
    "structured-kv2": (2, [STRUCTURED], {"Linear"}, set()),
    "structured-kv4": (4, [STRUCTURED], {"Linear"}, set()),
    "structured-rtn": (2, [STRUCTURED, RTN4], {"QuantLinear"}, {"QuantLinear"}),
    "svd": (2, [{"method": "svd", "rank": 32}], {"LowRankLinear"}, {"LowRankLinear"}),
    "svd_llm": (2, [{"method": "svd_llm", "rank": 32}], {"LowRankLinear"}, {"LowRankLinear"}),
    "svd-rtn": (2, [{"method": "svd", "rank": 32}, RTN4], {"LowRankLinear"}, {"LowRankLinear", "QuantLinear"}),
    "wanda-24-compact": (2, [{"method": "wanda", "pattern": "2:4", "storage": "compact"}], {"Sparse24Linear"},
                         {"Sparse24Linear"}),
}


def _structure(model: torch.nn.Module) -> tuple[list, dict]:
    """(module names with their types, {state key: (shape, dtype)}): what must survive the round trip."""
    modules = [(n, type(m).__name__) for n, m in model.named_modules()]
    tensors = {k: (tuple(t.shape), t.dtype) for k, t in model.state_dict().items()}
    return modules, tensors


def _saved(folder, kv_heads: int, recipe: list, tokenizer=None):
    tokens = random_tokens(4, 32)
    model, report = compress(tiny_llama(heads=4, kv_heads=kv_heads), recipe, calibration=tokens)
    save_compressed(model, tokenizer, folder, report)
    return model, tokens


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_keeps_structure_logits_and_generation(case, tmp_path):
    kv_heads, recipe, proj_types, saved_types = CASES[case]
    model, tokens = _saved(tmp_path, kv_heads, recipe)
    section = json.loads((tmp_path / "config.json").read_text())["compression_lab"]
    assert {m["type"] for m in section["modules"].values()} == saved_types

    loaded = load_compressed(tmp_path)
    assert _structure(loaded) == _structure(model)
    assert {type(m).__name__ for n, m in loaded.model.layers.named_modules() if n.endswith("proj")} == proj_types
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, model(tokens).logits)
    ids = random_tokens(1, 5, seed=1)
    gen = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False}  # token 0 is EOS: never stop early
    out = loaded.generate(ids, **gen)
    assert out.shape == (1, 11)
    assert torch.equal(out, model.generate(ids, **gen))


@pytest.mark.parametrize("kv_heads", [2, 4])
def test_structured_layers_keep_their_own_shapes(kv_heads, tmp_path):
    model, _ = _saved(tmp_path, kv_heads, [STRUCTURED])
    loaded = load_compressed(tmp_path)
    layer0, layer1 = loaded.model.layers
    hd = layer0.self_attn.head_dim
    assert layer0.self_attn.q_proj.out_features == 2 * hd  # half of 4 heads
    assert layer0.self_attn.k_proj.out_features == kv_heads // 2 * hd
    assert layer1.self_attn.q_proj.out_features == 4 * hd  # heads untouched
    assert (layer0.mlp.down_proj.in_features, layer1.mlp.down_proj.in_features) == (128, 192)
    assert (layer0.mlp.intermediate_size, layer1.mlp.intermediate_size) == (128, 192)
    assert loaded.config.pruned_layout == model.config.pruned_layout


def _demo_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(DEMO_DIR)


def test_structured_model_opens_through_load_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_ALLOWED_MODEL_DIRS", str(tmp_path))
    model, tokens = _saved(tmp_path / "m", 2, [STRUCTURED, RTN4], _demo_tokenizer())
    loaded, _ = load_model(str(tmp_path / "m"))
    with torch.no_grad():
        assert torch.equal(loaded(tokens).logits, model(tokens).logits)


def _edit_config(folder, edit) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    edit(cfg)
    (folder / "config.json").write_text(json.dumps(cfg))


def _drop_layout(cfg):
    del cfg["pruned_layout"]


def _heads_not_whole_groups(cfg):
    cfg["pruned_layout"]["num_attention_heads"][0] = 3  # 3 heads over 1 KV head of a 2-per-group model


def _short_layout(cfg):
    cfg["pruned_layout"]["intermediate_size"] = [128]


def _unknown_type(cfg):
    first = next(iter(cfg["compression_lab"]["modules"].values()))
    first["type"] = "os.system"


@pytest.mark.parametrize("edit, match", [
    (_drop_layout, r"tensors do not fit the model rebuilt from config.json "
                   r"\(model.layers.0.mlp.down_proj.weight saved \(128, 128\), rebuilt \(128, 256\)"),
    (_heads_not_whole_groups, "layer 0: 3 heads over 1 KV heads"),
    (_short_layout, r"pruned_layout\['intermediate_size'\] must list a positive integer for each of the 2"),
    (_unknown_type, "type 'os.system', which this version cannot load"),
])
def test_unsupported_saved_structure_is_a_model_load_error(edit, match, tmp_path, monkeypatch):
    folder = tmp_path / "m"
    _saved(folder, 2, [STRUCTURED, {"method": "svd", "rank": 32, "targets": r"layers\.1\.mlp"}], _demo_tokenizer())
    _edit_config(folder, edit)
    with pytest.raises(ModelLoadError, match=match):
        load_compressed(folder)
    monkeypatch.setenv("LAB_ALLOWED_MODEL_DIRS", str(tmp_path))
    with pytest.raises(ModelLoadError, match=match):  # the app's path: no raw traceback either
        load_model(str(folder))
