"""A report stored by the code before the typed contract (schema 1) still opens in the page: every result
builder renders each stored fixture with the figures it holds. The expected figures are read from the
fixture's own JSON, in its old shape, so the page's path (upgrade, then attributes) is checked end to end."""

from __future__ import annotations

import html
import json

import pytest

from compressor.runs import format as f
from tests.ui.reports import V1, run_of, stored
from ui.cards import metric_cards_html, samples_html
from ui.hardware import details_markdown, hardware_html
from ui.history import HISTORY_COLUMNS, history_rows
from ui.plots import layer_error_plot, memory_plot, quality_plot, speed_plot
from ui.records import report_of

MiB = 2**20


@pytest.fixture(params=V1, ids=lambda p: p.stem)
def old(request):
    return stored(request.param)


def test_cards_show_the_stored_figures(old):
    cards = metric_cards_html(report_of(run_of(old)))
    b, c = old["baseline"], old["compressed"]
    for key, kind in (("weight_bytes", "bytes"), ("kv_bytes_per_token", "bytes"), ("decode_tokens_per_s", "rate"),
                      ("prefill_tokens_per_s", "rate"), ("perplexity", "num"), ("arithmetic_accuracy", "pct")):
        assert f'<div class="lab-card-value">{f.fmt(c[key], kind)}' in cards, key  # an interval may follow
        assert f"baseline {f.fmt(b[key], kind)}" in cards, key
    assert f.fmt_kl(c["kld"]) in cards and f"top-1 agreement {f.fmt_pct(c['top1_agreement'])}" in cards
    assert f.fmt_interval(c["arithmetic_diff_ci95"], "pts") in cards
    assert f"compressed in {old['compress_seconds']:.1f} s" in cards
    assert html.escape(old["model"]["spec"]) in cards


def test_a_stacked_report_shows_each_stage_share(old):
    cards = metric_cards_html(report_of(run_of(old)))
    if not old["attribution"]:
        assert 'id="lab-attribution"' not in cards
        return
    assert 'id="lab-attribution"' in cards
    for a in old["attribution"]:
        assert f"{a['index']}: {a['method']}" in cards
        for key, kind in (("perplexity", "num"), ("kld", "kl"), ("arithmetic_accuracy", "pct")):
            if a[f"delta_{key}"]:
                assert f.fmt_change(a[f"delta_{key}"], kind) in cards, (a["method"], key)
        if a.get("note"):
            assert html.escape(a["note"]) in cards


def test_samples_show_both_generations(old):
    out = samples_html(report_of(run_of(old)))
    assert out.count('class="lab-sample"') == len(old["samples"])
    for s in old["samples"]:
        assert all(html.escape(s[k]) in out for k in ("prompt", "baseline", "compressed"))


def test_plots_draw_the_stored_figures(old):
    report = report_of(run_of(old))
    b, c = old["baseline"], old["compressed"]
    memory = memory_plot(report)  # horizontal bars: values on x
    assert list(memory.data[0].x) == [b["weight_bytes"] / MiB, c["weight_bytes"] / MiB]
    context = old["settings"]["context"]
    assert list(memory.data[1].x) == [b["kv_bytes_per_token"] * context / MiB, c["kv_bytes_per_token"] * context / MiB]
    assert list(memory.data[2].x) == [b["peak_memory_bytes"] / MiB, c["peak_memory_bytes"] / MiB]

    # decode and prefill on their own axes (measured row first), the projection on a row of its own
    speed = speed_plot(report, projected=True)
    measured = [bar for bar in speed.data if bar.marker.pattern.shape is None]
    projected = [bar for bar in speed.data if bar.marker.pattern.shape == "/"]
    assert [list(bar.x) for bar in measured] == [[b["decode_tokens_per_s"], c["decode_tokens_per_s"]],
                                                 [b["prefill_tokens_per_s"], c["prefill_tokens_per_s"]]]
    assert len({bar.xaxis for bar in measured}) == 2  # two scales
    p = old["projection"]
    assert [list(bar.x) for bar in projected] == [
        [p["baseline"]["decode_tokens_per_s"], p["compressed"]["decode_tokens_per_s"]],
        [p["baseline"]["prefill_tokens_per_s"], p["compressed"]["prefill_tokens_per_s"]]]
    titles = [a.text for a in speed.layout.annotations if "tokens/s" in a.text]  # the panels' titles
    assert len(titles) == 4 and all("projection" in t for t in titles[2:])

    quality = quality_plot(report)  # one panel per figure; perplexity as its change from the baseline
    assert quality.data[0].x[0] == pytest.approx(100 * (c["perplexity"] / b["perplexity"] - 1))
    assert list(quality.data[1].x) == [100 * b["arithmetic_accuracy"], 100 * c["arithmetic_accuracy"]]
    assert quality.data[1].error_x.array[1] == pytest.approx(100 * (c["arithmetic_ci95"][1] - c["arithmetic_accuracy"]))
    assert list(quality.data[2].x) == [c["kld"]] and list(quality.data[3].x) == [100 * c["top1_agreement"]]
    assert len({bar.xaxis for bar in quality.data}) == 4

    layers = layer_error_plot(report)  # a heatmap per stage: every stored SQNR is a cell
    cells = sorted(v for trace in layers.data for row in trace.z for v in row if v is not None)
    assert cells == sorted(r["sqnr_db"] for r in old["layers"])
    assert {a.text for a in layers.layout.annotations} == {f"stage {r['stage']}: {r['method']}" for r in old["layers"]}


def test_the_hardware_panel_shows_the_stored_projection(old):
    out = hardware_html(report_of(run_of(old)))
    p = old["projection"]
    assert html.escape(p["hardware"]["name"]) in out and "projection" in out and "not a measurement" in out
    assert f"context {p['context']} x batch {p['batch']}" in out
    if p["context_clamped_from"]:
        assert f"asked for {p['context_clamped_from']}" in out
    for side in ("baseline", "compressed"):
        assert f.fmt_rate(p[side]["decode_tokens_per_s"]) in out
        assert f.fmt_bytes(p[side]["memory_needed_bytes"]) in out
    fits = [p[side]["fits"] for side in ("baseline", "compressed")]
    assert out.count('lab-fit yes">fits') == fits.count(True)
    assert out.count("does not fit") == fits.count(False)
    for side, check in (p.get("check_against_measured") or {}).items():
        if side in ("baseline", "compressed"):
            assert (f"projected {f.fmt_rate(check['projected_decode_tokens_per_s'])} vs measured "
                    f"{f.fmt_rate(check['measured_decode_tokens_per_s'])}") in out


def test_details_show_the_stored_sanity_report(old):
    text = details_markdown(report_of(run_of(old)))
    for s in old["stages"]:
        assert f"stage {s['index']}: **{s['method']}** ({s['kind']})" in text
    assert f"effective bits {old['compression']['summary']['effective_bits']:.3f}" in text
    for path, n in old["compressed"]["kernel_paths"].items():
        assert f"{path}: {n}" in text
    assert f"total {old['timings']['total_s']:.1f} s" in text
    assert f"stride {old['compressed']['quality']['stride']}" in text
    assert old["environment"]["torch"] in text


def test_the_history_row_holds_the_stored_figures(old):
    row = dict(zip(HISTORY_COLUMNS, history_rows([run_of(old, recipe=old["recipe"], model_spec="demo")])[0],
                   strict=True))
    b, c = old["baseline"], old["compressed"]
    assert row["weights MiB"] == round(c["weight_bytes"] / MiB, 3)
    assert row["weights x"] == round(b["weight_bytes"] / c["weight_bytes"], 2)
    assert row["perplexity"] == round(c["perplexity"], 3) and row["KL"] == round(c["kld"], 5)
    assert row["top-1 %"] == round(100 * c["top1_agreement"], 1)
    assert row["arith %"] == round(100 * c["arithmetic_accuracy"], 1)
    assert row["decode tok/s"] == round(c["decode_tokens_per_s"], 1)
    first = old["recipe"]["stages"][0]
    assert row["run"].startswith(f"demo · {first['method']} w{first['bits']}")  # model · recipe · hardware · time
    assert row["id"] == "r1"
    assert row["error"] == ""


def test_the_raw_report_is_the_current_schema_and_strict_json(old):
    d = report_of(run_of(old)).to_dict()
    assert d["schema_version"] == 2
    text = json.dumps(d, allow_nan=False)
    assert report_of(run_of(json.loads(text))).to_dict() == d
