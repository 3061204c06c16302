"""A compressed KV cache is reported and projected at the projection's context, not at the speed run's length."""

import json

from compressor.__main__ import main
from compressor.engine.kvcache import model_kv_bytes_per_token
from compressor.runs.contract import Report


def test_kivi_bytes_per_token_are_measured_at_the_projection_context(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))
    out = tmp_path / "r.json"
    assert main(["run", "--model", "demo", "--recipe", "{method: kivi, bits: 2}", "--samples", "8",
                 "--ppl-tokens", "256", "--max-new-tokens", "4", "--quiet", "--json", str(out)]) == 0
    r = Report.from_dict(json.loads(out.read_text()))
    c = r.compressed
    # The speed run stops at 144 tokens, where KIVI's fp16 window is most of the cache: it overstates.
    assert c.kv_bytes_context == 512  # the demo model's positions cap the 2048-token projection context
    assert c.kv_bytes_per_token < 0.6 * c.kv_bytes_per_token_speed_run
    # projected with that figure, as measured and on a 16-bit profile alike (a compressed cache keeps its bytes)
    assert r.footprint["compressed"].measured.kv_bytes_per_token == c.kv_bytes_per_token
    assert r.footprint["compressed"].float16.kv_bytes_per_token == c.kv_bytes_per_token
    from compressor.engine.stage import stage_from_dict
    from compressor.models.loading import load_model

    model, _ = load_model("demo")
    expected = model_kv_bytes_per_token(model, stage_from_dict({"method": "kivi", "bits": 2}), context=512)
    assert c.kv_bytes_per_token == expected
