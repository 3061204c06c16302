"""The command line: exit codes, messages, the request its flags make, and real runs on the demo model."""

import json
import shutil
import tempfile

import pytest

from compressor.__main__ import main
from compressor.cli import build_parser
from compressor.cli.run import request_from_args
from compressor.runs.contract import Report, RunRequest


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


def test_a_cli_run_is_the_runners_run_and_the_pages_and_writes_the_report(demo_run, tmp_path, monkeypatch, capsys):
    """The CLI run with the demo run's settings: the same RunRequest, so it finds the demo run's baseline
    in the cache and measures the compressed model to the same figures."""
    r = demo_run.report
    for section in (r.baseline, r.compressed):
        for key in ("weight_bytes", "perplexity", "arithmetic_accuracy", "prefill_tokens_per_s",
                    "decode_tokens_per_s", "peak_memory_bytes", "kv_bytes_per_token"):
            assert getattr(section, key) is not None, key
    c, b = r.compressed, r.baseline
    assert c.weight_bytes < b.weight_bytes  # 4-bit packed decoder weights
    assert c.kld > 0 and 0 < c.top1_agreement <= 1
    assert r.timings.compress_s > 0
    assert len(r.samples) > 0 and all(s.prompt and isinstance(s.baseline, str) and isinstance(s.compressed, str)
                                      for s in r.samples)
    assert r.projection.label == "projection" and r.projection.compressed.label == "projection"
    assert r.compression.stages and r.compression.layers and r.environment.torch

    out = tmp_path / "r.json"
    argv = ["run", "--model", "demo", "--recipe", "w4-g128", "--hardware", "t4", "--json", str(out),
            "--samples", "24", "--ppl-tokens", "512", "--max-new-tokens", "8", "--quiet"]
    assert request_from_args(build_parser().parse_args(argv)) == r.request
    monkeypatch.setenv("LAB_DATA_DIR", str(demo_run.data_dir))  # the demo run's baseline cache
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where a leaked temp folder would be
    (tmp_path / "tmp").mkdir()
    assert main(argv) == 0
    assert list((tmp_path / "tmp").iterdir()) == []  # a CLI run leaves no temp folder behind
    table = capsys.readouterr().out
    assert "perplexity" in table and "projection" in table and "baseline quality from the cache" in table
    assert "Decode on this machine (cpu)" in table
    r2 = Report.from_dict(json.loads(out.read_text()))
    assert r2.timings.baseline_cached and r2.baseline.perplexity == b.perplexity
    assert r2.compressed.kld == pytest.approx(c.kld, rel=1e-3)
    assert r2.compressed.perplexity == pytest.approx(c.perplexity, rel=1e-6)
    _the_page_gives_the_cli_runs_quality(r2, demo_run.data_dir, tmp_path)


QUALITY = ("perplexity", "kld", "top1_agreement", "arithmetic_accuracy")


def _the_page_gives_the_cli_runs_quality(via_cli: Report, data_dir, tmp_path) -> None:
    """Issue 13: the CLI run's settings through the page's path (its request builder, the job payload,
    the job manager's worker process) give the same quality figures. Both read the demo run's baseline
    (a copy of its cache here); each compresses and measures the compressed model itself."""
    from compressor.runs.manager import JobManager
    from compressor.runs.runner import check_payload

    page_request = pytest.importorskip("ui.request", reason="the page is not installed").build_request
    e = via_cli.request.eval
    page = page_request("demo", "w4-g128", "t4", e.ppl_tokens, e.context, e.arithmetic_samples, e.max_new_tokens)
    shutil.copytree(data_dir, tmp_path / "page-data")
    with JobManager(tmp_path / "page-data", check_payload=check_payload) as m:  # what the page's Run button does
        run = m.wait(m.submit(page.to_dict(), owner="v-page"), timeout=300)
    assert run.status == "succeeded", run.error
    via_page = run.load_report()
    assert via_page.request == via_cli.request and via_page.timings.baseline_cached
    for side in ("baseline", "compressed"):
        for key in QUALITY:
            cli, pg = getattr(getattr(via_cli, side), key), getattr(getattr(via_page, side), key)
            assert (cli is None) == (pg is None) and (cli is None or cli == pytest.approx(pg, rel=1e-4)), (side, key)
    assert via_page.compressed.kld > 0 and via_page.compressed.weight_bytes == via_cli.compressed.weight_bytes




def test_the_cli_and_a_page_payload_make_the_same_request():
    """One rule for defaults: the page sends {eval: {context: 512}}, the CLI --context 512; both stride 256."""
    args = build_parser().parse_args(["run", "--recipe", "w4-g128", "--hardware", "t4", "--context", "512",
                                      "--samples", "8"])
    page = RunRequest.from_dict({"model": "demo", "recipe": "w4-g128", "hardware": "t4",
                                 "eval": {"context": 512, "arithmetic_samples": 8}})
    assert request_from_args(args) == page
    assert page.eval.stride == 256


def test_stacked_recipe_attributes_the_quality_change_to_each_stage(tmp_path, capsys):
    small = ["--samples", "16", "--ppl-tokens", "512", "--max-new-tokens", "4", "--quiet"]
    stacked, alone = tmp_path / "stacked.json", tmp_path / "alone.json"
    recipe = "[{method: magnitude, sparsity: 0.6}, {method: rtn, bits: 4, group_size: 64}]"
    assert main(["run", "--model", "demo", "--recipe", recipe, "--json", str(stacked), *small]) == 0
    assert "quality after each stage" in capsys.readouterr().out
    assert main(["run", "--model", "demo", "--recipe", "{method: magnitude, sparsity: 0.6}",
                 "--json", str(alone), *small]) == 0
    r, one = (Report.from_dict(json.loads(p.read_text())) for p in (stacked, alone))
    rows = r.attribution
    assert [row.method for row in rows] == ["magnitude", "rtn"]
    # Stage 0's numbers are those of the same pruning run on its own; the last are the compressed column.
    assert rows[0].after["perplexity"] == pytest.approx(one.compressed.perplexity, rel=1e-6)
    assert rows[0].after["kld"] == pytest.approx(one.compressed.kld, rel=1e-6)
    assert rows[1].after["perplexity"] == r.compressed.perplexity
    assert rows[0].delta["perplexity"] > 0 and rows[1].delta["perplexity"] != 0
    total = sum(row.delta["perplexity"] for row in rows)
    assert total == pytest.approx(r.compressed.perplexity - r.baseline.perplexity)
    assert r.timings.stage_eval_s > 0
    assert one.attribution == []  # one stage: nothing to attribute, no extra evaluation
