"""Review of the page's report rendering as pure functions: odd numbers (None, NaN, inf), reports from older
versions, the Pareto front, CSV export, and the ZeroGPU path with a fake `spaces` module. No served app."""

from __future__ import annotations

import csv
import importlib
import io
import re
import sys
import types

import pytest

from compressor.errors import LabError
from tests.ui.reports import opened, run_of
from ui import backend
from ui.cards import CARDS, attribution_html, kv_notes, metric_cards_html, samples_html
from ui.hardware import details_markdown, hardware_html
from ui.history import FORMULA_START, HISTORY_COLUMNS, history_rows, runs_csv
from ui.pareto import pareto_front, pareto_plot
from ui.plots import layer_error_plot, memory_plot, quality_plot, speed_plot
from ui.recipes import stored_recipe_label
from ui.records import report_of

NAN, INF = float("nan"), float("inf")


def _deltas(html_text: str) -> list[tuple[str, str]]:
    """(colour class, delta text) of each metric card, in CARDS order."""
    return re.findall(r'lab-delta (\w+)">([^<]*)<', html_text)


def test_cards_give_no_delta_or_colour_for_a_nan_measurement():
    rep = opened({"baseline": {"perplexity": 10.0, "weight_bytes": 100},
                  "compressed": {"perplexity": NAN, "weight_bytes": NAN}})
    by_label = dict(zip([c[0] for c in CARDS], _deltas(metric_cards_html(rep)), strict=False))
    assert by_label["Perplexity"] == ("neutral", "&nbsp;")
    assert by_label["Weight memory"] == ("neutral", "&nbsp;")


@pytest.mark.parametrize("interval, shown", [
    ([0.05, 0.45], ("good", "+25.0 pts")),  # the paired interval leaves out 0: a difference, coloured
    ([-0.05, 0.55], ("neutral", "+25.0 pts (within noise)")),  # it holds 0: no colour, and said so
    (None, ("neutral", "+25.0 pts")),  # an older report without the interval: no claim
])
def test_cards_colour_an_accuracy_change_only_when_its_paired_interval_leaves_out_zero(interval, shown):
    # 0 % -> 25 % is +25 points: the relative change is undefined, the difference in points is not
    rep = opened({"baseline": {"arithmetic_accuracy": 0.0},
                  "compressed": {"arithmetic_accuracy": 0.25, "arithmetic_diff_ci95": interval}})
    by_label = dict(zip([c[0] for c in CARDS], _deltas(metric_cards_html(rep)), strict=False))
    assert by_label["Arithmetic accuracy"] == shown


@pytest.mark.parametrize("key,b,c,cls", [
    ("perplexity", 10.0, 12.0, "bad"), ("perplexity", 10.0, 9.0, "good"),
    ("weight_bytes", 100, 25, "good"),
    ("decode_tokens_per_s", 50.0, 40.0, "neutral"),  # schema 1 kept one timing per side: no spread, no claim
])
def test_card_colours_follow_the_direction_of_each_metric(key, b, c, cls):
    # schema 1 stored the batch-1 speeds together: a decode rate came with its prefill rate and first-token time
    same = {"prefill_tokens_per_s": 80.0, "time_to_first_token_s": 0.1} if key == "decode_tokens_per_s" else {}
    html_text = metric_cards_html(opened({"baseline": {key: b, **same}, "compressed": {key: c, **same}}))
    i = [card[1] for card in CARDS].index(key)
    assert _deltas(html_text)[i][0] == cls


def test_attribution_gives_a_nan_delta_no_colour():
    rep = opened({"baseline": {"perplexity": 10.0},
                  "stages": [{"index": 0, "method": "rtn", "kind": "quantize", "quality": {"perplexity": NAN}},
                             {"index": 1, "method": "kivi", "kind": "kv", "quality": {"perplexity": 11.0}}]})
    out = attribution_html(rep)
    assert "0: rtn" in out and "1: kivi" in out
    assert "nan" not in out.lower()


@pytest.mark.parametrize("config, max_tokens, fix", [
    ({"method": "kivi", "residual": 64}, 12, "<code>residual: 0</code>"),
    ({"method": "kivi", "residual": 12}, 12, "<code>residual: 0</code>"),
    ({"method": "kivi", "residual": 11}, 12, None),
    ({"method": "kivi", "residual": 0}, 12, None),
    ({"method": "streaming", "sinks": 4, "window": 124}, 30, "smaller than 30"),
    ({"method": "streaming", "sinks": 4, "window": 8}, 30, None),
    ({"method": "kivi", "residual": 64}, None, None),  # a report without the figure: no claim
])
def test_the_kv_note_compares_the_window_with_the_longest_problem_the_run_scored(config, max_tokens, fix):
    rep = opened({"stages": [{"index": 0, "method": config["method"], "kind": "kv", "config": config}],
                  "compressed": {"arithmetic": {"accuracy": 0.5, "n": 2, "max_tokens": max_tokens}}})
    notes = kv_notes(rep)
    assert (notes == []) == (fix is None)
    if fix:
        assert len(notes) == 1 and fix in notes[0] and f"at most {max_tokens} tokens" in notes[0]
        assert "lab-kv-note" in metric_cards_html(rep)


# Reports as older versions wrote them: keys missing, None where a number was. Every stored report named
# its model and recipe (both were required fields), which `opened` adds.
OLD_REPORTS = [
    {},
    {"baseline": None, "compressed": None, "projection": None, "stages": None},
    {"stages": [{"index": 0, "method": "rtn", "kind": "quant", "seconds": None}]},
    {"stages": [{"index": 0, "method": "kivi", "kind": "kv", "config": None}], "settings": {"arithmetic_samples": 2}},
    {"timings": {"total_s": 3, "baseline_cached": True}, "compression": {"summary": None}},
    {"projection": {"hardware": "t4", "compressed": {"fits": None}}, "compressed": {"top1": 0.9}},
]


@pytest.mark.parametrize("report", OLD_REPORTS)
def test_every_panel_renders_an_older_report(report):
    rep = opened(report)
    metric_cards_html(rep)
    samples_html(rep)
    memory_plot(rep)
    speed_plot(rep, projected=True)
    quality_plot(rep)
    layer_error_plot(rep)
    hardware_html(rep)
    details_markdown(rep)
    history_rows([run_of({"model": "demo", "recipe": "int8", **report})])


@pytest.mark.parametrize("report", [{}, {"schema_version": 2, "model": {"spec": "demo"}}, {"schema_version": 99}])
def test_a_report_that_cannot_be_opened_is_named_in_the_history_not_raised(report):
    with pytest.raises(LabError, match="the report of run r1") as problem:
        report_of(run_of(report))
    row = history_rows([run_of(report)])[0]
    assert row[HISTORY_COLUMNS.index("error")] == str(problem.value)[:160]
    assert row[HISTORY_COLUMNS.index("perplexity")] is None


def test_details_list_integer_timings():
    assert "total 3.0 s" in details_markdown(opened({"timings": {"total_s": 3}}))


def test_details_give_the_cached_baselines_date_not_as_a_duration():
    text = details_markdown(opened({"timings": {"total_s": 3, "baseline_cached": True,
                                                "baseline_cached_at": 1.8e9}}))
    assert "baseline_cached_at" not in text and "(baseline from cache, measured " in text and "total 3.0 s" in text


def test_a_list_recipe_is_labelled_by_its_stages_not_its_python_repr():
    stages = [{"method": "rtn", "bits": 4, "group_size": 128}, {"method": "kivi", "bits": 2}]
    # the recipe as it ran: kivi's default group size included
    assert stored_recipe_label(stages) == "rtn w4 g128 + kivi 2-bit g32"


# -- Pareto front --------------------------------------------------------------------------------


def _front(points, lower_x=True, lower_y=True):
    return sorted((x, y) for x, y, *_ in pareto_front(points, lower_x, lower_y))


def _dominated(p, q, lower_x, lower_y) -> bool:
    """True when q is at least as good as p on both axes and better on one."""
    sx, sy = (1 if lower_x else -1), (1 if lower_y else -1)
    return sx * q[0] <= sx * p[0] and sy * q[1] <= sy * p[1] and (q[0], q[1]) != (p[0], p[1])


def test_pareto_front_drops_a_point_tied_in_x_but_worse_in_y():
    pts = [(1.0, 0.5, "a", ""), (1.0, 0.1, "b", ""), (2.0, 0.05, "c", "")]
    assert _front(pts) == [(1.0, 0.1), (2.0, 0.05)]


def test_pareto_front_ignores_nan_instead_of_stopping_at_it():
    pts = [(1.0, NAN, "n", ""), (1.5, 0.2, "b", ""), (2.0, 0.05, "c", "")]
    assert _front(pts) == [(1.5, 0.2), (2.0, 0.05)]


@pytest.mark.parametrize("lower_x", [True, False])
@pytest.mark.parametrize("lower_y", [True, False])
def test_pareto_front_is_exactly_the_non_dominated_set(lower_x, lower_y):
    import random

    rng = random.Random(lower_x * 2 + lower_y)
    pts = [(float(rng.randint(0, 6)), float(rng.randint(0, 6)), str(i), "") for i in range(40)]
    expect = sorted({(p[0], p[1]) for p in pts
                     if not any(_dominated(p, q, lower_x, lower_y) for q in pts)})
    assert sorted(set(_front(pts, lower_x, lower_y))) == expect


def test_pareto_plot_draws_the_front_for_the_chosen_axes():
    runs = [(run_of(id=str(i)), opened({"compressed": {"weight_bytes": w * 2**20, "perplexity": 10.0,
                                                       "top1_agreement": t}}))
            for i, (w, t) in enumerate([(1, 0.5), (1, 0.9), (2, 0.95), (3, 0.93)])]
    fig = pareto_plot(runs, "Top-1 agreement (higher better)", "Weight memory")
    assert list(zip(fig.data[1].x, fig.data[1].y, strict=True)) == [(1.0, 0.9), (2.0, 0.95)]


# -- export -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ['=HYPERLINK("http://x")', "+1+2", "-2+3", "@SUM(A1)", "\t=1", "\r=1"])
def test_csv_export_neutralises_spreadsheet_formulas(text):
    runs = [run_of(status="failed", model_spec=text, error=text)]
    row = list(csv.reader(io.StringIO(runs_csv(runs))))[1]
    assert row[HISTORY_COLUMNS.index("error")] == "'" + text
    name = row[HISTORY_COLUMNS.index("run")]  # the model's name comes first in the run's name
    assert not name.startswith(FORMULA_START) or name.startswith("'")


def test_csv_export_keeps_numbers_numeric():
    runs = [run_of({"model": "demo", "recipe": "int8", "compressed": {"perplexity": -1.5, "weight_bytes": 2**20}})]
    row = list(csv.reader(io.StringIO(runs_csv(runs))))[1]
    assert row[HISTORY_COLUMNS.index("perplexity")] == "-1.5"


# -- ZeroGPU ----------------------------------------------------------------------------------------


def test_zero_gpu_wraps_the_job_with_a_fake_spaces_module(monkeypatch):
    calls = []
    fake = types.ModuleType("spaces")

    def gpu(duration=None):
        def wrap(fn):
            calls.append((fn.__name__, duration))
            return fn
        return wrap

    fake.GPU = gpu
    monkeypatch.setitem(sys.modules, "spaces", fake)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setenv("LAB_ZERO_GPU_DURATION_S", "60")
    try:
        mod = importlib.reload(backend)
        assert mod.ZERO_GPU and ("_run_job_on_gpu", 60) in calls
    finally:
        monkeypatch.delitem(sys.modules, "spaces")
        monkeypatch.delenv("SPACES_ZERO_GPU")
        mod = importlib.reload(backend)
    assert mod.spaces is None and not mod.ZERO_GPU


def test_inline_gpu_runs_keep_only_the_last_artifacts(tmp_path, monkeypatch):
    from compressor.runs.artifacts import ArtifactPolicy
    from compressor.runs.manager import JobManager

    def fake_job(payload, data_dir, artifact_dir):
        from pathlib import Path

        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (Path(artifact_dir) / "config.json").write_text("{}")
        return {"compressed": {}}

    monkeypatch.setattr(backend, "_run_job_on_gpu", fake_job)
    with JobManager(tmp_path, target="tests.jobtargets:echo", artifacts=ArtifactPolicy(keep_last=1)) as m:
        ids = [backend.run_inline_on_gpu(m, {"model": "demo"}, "alice") for _ in range(3)]
        kept = [r.id for r in m.list_runs() if r.artifact_path]
        assert kept == [ids[-1]]
        assert sorted(p.name for p in m.artifact_root.iterdir()) == [ids[-1]]


def test_inline_gpu_failure_leaves_no_artifact_folder(tmp_path, monkeypatch):
    from compressor.runs.manager import JobManager

    def failing_job(payload, data_dir, artifact_dir):
        from pathlib import Path

        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(backend, "_run_job_on_gpu", failing_job)
    with JobManager(tmp_path, target="tests.jobtargets:echo") as m:
        run_id = backend.run_inline_on_gpu(m, {"model": "demo"}, "alice")
        run = m.get_run(run_id)
        assert run.status == "failed" and "out of memory" in run.error
        assert not (m.artifact_root / run_id).exists()


# -- prompt box (compressor.runs.ask) -----------------------------------------------------------------------


def test_prompt_box_refuses_a_prompt_beyond_the_model_positions():
    from compressor.runs.ask import answer

    # 1,960 characters: under the character cap, but ~1,960 tokens for a 512-position model
    with pytest.raises(LabError, match=r"max_position_embeddings=512"):
        answer({"model": "demo", "recipe": "w4-g128", "prompt": "27+58= " * 280, "max_new_tokens": 32})


def test_prompt_box_rebuilds_a_run_whose_saved_model_was_pruned(tmp_path):
    from compressor.runs.ask import answer

    gone = tmp_path / "artifacts" / "run1"  # removed by the keep-last policy: the folder is empty or absent
    out = answer({"model": "demo", "recipe": "w4-g128", "artifact": str(gone), "prompt": "27+58=",
                  "max_new_tokens": 4})
    assert out["source"] == "recompressed" and isinstance(out["compressed"], str)


# -- progress -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("event, position, text", [
    (None, 2, "Queued: position 2"),
    (None, None, "Starting the worker"),
    ({"stage": "gptq", "fraction": 0.5, "stage_index": 1, "n_stages": 3, "layer": 2, "n_layers": 4, "eta_s": 30.2,
      "message": "layer 2", "time": 0.0}, 0, "50 % · gptq (2/3) · layer 2/4 · about 30 s left · layer 2"),
    ({"stage": "load", "fraction": 0.0, "message": "", "stage_index": 0, "n_stages": 1, "layer": None,
      "n_layers": None, "eta_s": None, "time": 0.0}, 0, "0 % · load"),
])
def test_progress_reads_the_managers_latest_event(event, position, text):
    from ui.run import describe_progress

    fraction, shown = describe_progress(event, position, started=0.0)
    assert shown.startswith(text) and fraction == (event["fraction"] if event else 0.0)
