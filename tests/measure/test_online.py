"""Online extras say at once why they did not run."""

from compressor.measure.online import online_extras
from compressor.measure.settings import EvalSettings
from tests.helpers import tiny_llama


def test_online_extras_say_why_they_did_not_run_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = online_extras(tiny_llama(), None, EvalSettings())
    assert set(out) == {"wikitext2", "gsm8k", "lm_eval"}
    assert all(v["status"].startswith("skipped") for v in out.values())
