"""The engine: report contents, sequential pipeline, decoder-layer discovery, calibration tokens."""

import json

import pytest
import torch

from compressor import CompressionReport, calibration_batches, compress, weight_bytes
from compressor.engine.report import state_dict_bytes
from compressor.engine.sequential import capture_layer_inputs, find_decoder_layers
from compressor.models.loading import DEMO_DIR
from tests.helpers import random_tokens, tiny_llama


def test_report_measures_bytes_and_round_trips_json():
    model = tiny_llama()
    before = weight_bytes(model)
    model, report = compress(model, {"method": "rtn", "bits": 4, "group_size": 64,
                                     "overrides": [{"pattern": "down_proj", "bits": 8, "group_size": -1}]})
    assert report.weight_bytes_before == before and report.weight_bytes_after == weight_bytes(model)
    assert report.weight_bytes_after < 0.45 * before  # embeddings and lm_head stay fp32
    rows = {r.name: r for r in report.layers}
    down = rows["model.layers.0.mlp.down_proj"]
    assert (down.bits, down.group_size) == (8, 256)
    assert down.effective_bits == pytest.approx(8 + 32 / 256)  # fp16 scale + zero per row of 256
    q = rows["model.layers.0.self_attn.q_proj"]
    assert q.effective_bits == pytest.approx(4 + 32 / 64) and q.sqnr_basis == "weights" and q.sqnr_db > 15
    assert q.bytes_before == 128 * 128 * 4 and q.bytes_after == state_dict_bytes(model.get_submodule(q.name))
    again = CompressionReport.from_dict(json.loads(report.to_json()))
    assert again.to_dict() == report.to_dict()
    assert report.sanity["finite_logits"] and "effective bits" in report.summary()


def test_decoder_layers_found_generically_and_inputs_captured():
    model = tiny_llama(layers=3)
    name, layers = find_decoder_layers(model)
    assert name == "model.layers" and len(layers) == 3
    captured = capture_layer_inputs(model, layers[0], random_tokens(4, 32))
    hidden, args, kwargs = captured[0]
    assert hidden.shape == (4, 32, 128)
    assert "position_embeddings" in kwargs  # rotary embeddings reach every layer
    # Re-running layer 0 on the captured arguments reproduces the model's own hidden states.
    out = layers[0](hidden, *args, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    ref = model(random_tokens(4, 32), output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_calibration_batches_from_builtin_and_user_text():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(DEMO_DIR)
    batches = calibration_batches(tok, "builtin", n_samples=4, seq_len=64)
    assert batches.shape == (4, 64) and batches.dtype == torch.int64
    assert not torch.equal(batches[0], batches[1])
    short = calibration_batches(tok, "The quick brown fox jumps over the lazy dog. " * 4, n_samples=3, seq_len=64)
    assert short.shape[0] == 3 and short.shape[1] <= 64


def test_skipped_layers_are_untouched_and_calibrated_stages_propagate():
    model = tiny_llama()
    ref_w = model.model.layers[0].mlp.up_proj.weight.clone()
    model, report = compress(model, {"method": "gptq", "bits": 3, "overrides": [{"pattern": r"layers\.0\.",
                                                                                   "skip": True}]},
                             calibration=random_tokens(4, 64))
    assert torch.equal(model.model.layers[0].mlp.up_proj.weight, ref_w)
    assert {r.name.split(".")[2] for r in report.layers} == {"1"}
    assert report.stages[0].decoder_layers[0]["output_sqnr_db"] is None  # layer 0 not modified


def test_after_stage_measures_each_stage_in_order_and_keeps_what_it_returns():
    model = tiny_llama()
    seen = []

    def after_stage(index, m):
        assert m is model
        seen.append((index, [type(mod).__name__ for mod in m.model.layers[0].mlp.children()]))
        return {"zeros": float((m.model.layers[0].mlp.up_proj.weight == 0).float().mean())
                if isinstance(m.model.layers[0].mlp.up_proj, torch.nn.Linear) else None}

    recipe = [{"method": "magnitude", "sparsity": 0.5}, {"method": "rtn", "bits": 8, "group_size": -1}]
    _, report = compress(model, recipe, after_stage=after_stage)
    assert [i for i, _ in seen] == [0, 1]
    assert "Linear" in seen[0][1] and "Linear" not in seen[1][1]  # measured after stage 0, before stage 1
    assert report.stages[0].quality["zeros"] == pytest.approx(0.5, abs=0.005)
    assert report.stages[1].quality == {"zeros": None}
    assert CompressionReport.from_dict(report.to_dict()).stages[0].quality == report.stages[0].quality
