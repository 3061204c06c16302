"""The command line: exit codes, messages, and one real end-to-end run on the demo model."""

import json

import pytest

from compressor.__main__ import main


@pytest.fixture(autouse=True)
def _data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_DATA_DIR", str(tmp_path / "data"))  # the baseline cache lives here


def test_presets_and_hardware_list(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "rtn" in out
    assert main(["hardware"]) == 0
    out = capsys.readouterr().out
    assert "h100" in out and "hf-cpu-basic" in out and "this-machine" in out


@pytest.mark.parametrize("argv,needle", [
    (["run", "--model", "demo", "--recipe", "no-such-preset"], "no-such-preset"),
    (["run", "--model", "demo", "--recipe", "{method: rtn, bits: 5}"], "bits=5 is not valid: choose one of"),
    (["run", "--model", "demo", "--recipe", "w4-g128", "--hardware", "h1000"], "h1000"),
    (["run", "--model", "demo", "--recipe", "w4-g128", "--context", "100000"], "context"),
    (["run", "--model", "/no/such/model", "--recipe", "w4-g128", "--hardware", "t4"], "/no/such/model"),
])
def test_bad_input_exits_2_with_the_message_and_no_traceback(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run"])  # --recipe missing
    assert e.value.code == 2


def test_end_to_end_rtn_run_writes_the_report(tmp_path, capsys):
    out = tmp_path / "r.json"
    argv = ["run", "--model", "demo", "--recipe", "w4-g128", "--hardware", "t4", "--json", str(out),
            "--samples", "24", "--ppl-tokens", "512", "--max-new-tokens", "8", "--quiet"]
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "perplexity" in table and "projection" in table
    r = json.loads(out.read_text())
    for section in ("baseline", "compressed"):
        for key in ("weight_bytes", "perplexity", "arithmetic_accuracy", "prefill_tokens_per_s",
                    "decode_tokens_per_s", "peak_memory_bytes", "kv_bytes_per_token"):
            assert r[section][key] is not None, (section, key)
    c, b = r["compressed"], r["baseline"]
    assert c["weight_bytes"] < b["weight_bytes"]  # 4-bit packed decoder weights
    assert c["kld"] > 0 and 0 < c["top1_agreement"] <= 1
    assert r["compress_seconds"] > 0
    assert len(r["samples"]) > 0 and {"prompt", "baseline", "compressed"} <= set(r["samples"][0])
    assert r["projection"]["label"] == "projection" and r["projection"]["compressed"]["label"] == "projection"
    assert r["stages"] and r["layers"] and r["environment"]["torch"]
    # a second run reuses the cached baseline and still measures the compressed model
    assert main(argv) == 0
    r2 = json.loads(out.read_text())
    assert r2["timings"]["baseline_cached"] and r2["baseline"]["perplexity"] == b["perplexity"]
    assert r2["compressed"]["kld"] == pytest.approx(c["kld"], rel=1e-3)


def test_stacked_recipe_attributes_the_quality_change_to_each_stage(tmp_path, capsys):
    small = ["--samples", "16", "--ppl-tokens", "512", "--max-new-tokens", "4", "--quiet"]
    stacked, alone = tmp_path / "stacked.json", tmp_path / "alone.json"
    recipe = "[{method: magnitude, sparsity: 0.6}, {method: rtn, bits: 4, group_size: 64}]"
    assert main(["run", "--model", "demo", "--recipe", recipe, "--json", str(stacked), *small]) == 0
    assert "quality after each stage" in capsys.readouterr().out
    assert main(["run", "--model", "demo", "--recipe", "{method: magnitude, sparsity: 0.6}",
                 "--json", str(alone), *small]) == 0
    r, one = json.loads(stacked.read_text()), json.loads(alone.read_text())
    rows = r["attribution"]
    assert [row["method"] for row in rows] == ["magnitude", "rtn"]
    # Stage 0's numbers are those of the same pruning run on its own; the last are the compressed column.
    assert rows[0]["perplexity"] == pytest.approx(one["compressed"]["perplexity"], rel=1e-6)
    assert rows[0]["kld"] == pytest.approx(one["compressed"]["kld"], rel=1e-6)
    assert rows[1]["perplexity"] == r["compressed"]["perplexity"]
    assert rows[0]["delta_perplexity"] > 0 and rows[1]["delta_perplexity"] != 0
    total = sum(row["delta_perplexity"] for row in rows)
    assert total == pytest.approx(r["compressed"]["perplexity"] - r["baseline"]["perplexity"])
    assert r["timings"]["stage_eval_s"] > 0
    assert one["attribution"] == []  # one stage: nothing to attribute, no extra evaluation
