"""The page's parts as plain functions, no served app: messages without paths or tracebacks, visitor ids,
number inputs, run names, re-projection of a stored report, the speed note and right/wrong marks, and
the side-by-side comparison."""

from __future__ import annotations

import dataclasses
import inspect
import time
from types import SimpleNamespace

import gradio as gr
import pytest

from compressor.errors import LabError
from compressor.paths import REPO
from compressor.runs import format as f
from compressor.runs.contract import Report, Sample, Stat
from tests.ui.reports import run_of
from ui.cards import answer_mark, metric_cards_html, samples_html, speed_note
from ui.compare import compare_plot, compare_samples_html, compare_table_html
from ui.inputs import check_number
from ui.messages import guarded, public
from ui.names import model_name, run_name
from ui.views import reprojected
from ui.visitors import Sessions, is_visitor_id, new_visitor_id, owner_of

# -- messages --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, hidden, shown", [
    (f"cannot read {REPO}/assets/models/x/config.json", str(REPO), "(lab folder)/assets/models/x/config.json"),
    ("no file /usr/lib/python3.11/site-packages/torch/x.py", "/usr/lib", ".../x.py"),
    ("see https://huggingface.co/a/b/c", None, "https://huggingface.co/a/b/c"),
    ("C:\\Users\\me\\model\\w.bin is missing", "Users", ".../w.bin"),
])
def test_messages_shown_to_visitors_hold_no_server_paths(text, hidden, shown):
    out = public(text)
    assert shown in out and (hidden is None or hidden not in out)


def test_a_message_is_a_message_not_an_echo_of_the_input():
    assert len(public("x" * 100_000)) <= 600


def test_a_guarded_handler_answers_every_failure_with_a_sentence():
    @guarded
    def lab_error(request: gr.Request = None):
        raise LabError(f"bad value in {REPO}/x.yaml: use 4")

    @guarded
    def crash():
        return {}["missing"]

    @guarded
    def stream():
        yield 1
        raise ValueError("boom")

    with pytest.raises(gr.Error) as e:
        lab_error()
    assert e.value.message == "bad value in (lab folder)/x.yaml: use 4"
    with pytest.raises(gr.Error, match=r"could not do this \(KeyError") as e:
        crash()
    assert "Traceback" not in e.value.message
    gen = stream()
    assert next(gen) == 1
    with pytest.raises(gr.Error, match="ValueError: boom"):
        next(gen)
    # Gradio fills gr.Request by the signature: the wrapper keeps it
    assert "request" in inspect.signature(lab_error).parameters and inspect.isgeneratorfunction(stream)


# -- visitors --------------------------------------------------------------------------------------


def test_a_visitor_is_their_browser_id_else_their_session():
    vid = new_visitor_id()
    assert is_visitor_id(vid) and vid != new_visitor_id()
    session = SimpleNamespace(session_hash="abc123")
    assert owner_of(vid, session) == vid
    assert owner_of(None, session) == "s-abc123"
    for forged in ("v-short", "v-" + "a" * 200, vid + "\n", 12, {"id": vid}):
        assert owner_of(forged, session) == "s-abc123"  # not an id the page gave out: the session owns it
    with pytest.raises(LabError, match="no session"):
        owner_of(None, None)


def test_sessions_know_when_a_visitors_last_tab_closed():
    s, vid = Sessions(), new_visitor_id()
    one, two = SimpleNamespace(session_hash="one"), SimpleNamespace(session_hash="two")
    s.opened(one, vid)
    s.opened(two, vid)
    assert s.closed(one) == vid and s.is_open(vid)
    assert s.closed(two) == vid and not s.is_open(vid)
    assert s.closed(SimpleNamespace(session_hash="never")) is None


# -- inputs and names ------------------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [
    (None, "is empty"), ("abc", "is not a number"), (float("nan"), "is not a number"), (True, "is not a number"),
    (0, "out of range: use 16 to 2,048"), (4096, "out of range"),
])
def test_a_number_input_names_itself_and_its_range(value, expected):
    with pytest.raises(gr.Error, match=expected) as e:
        check_number("Context length", value, 16, 2048)
    assert e.value.message.startswith("Context length")


def test_run_names_say_model_recipe_hardware_and_time_never_a_server_path():
    run = run_of(model_spec="/srv/secret/folder/my-model", recipe="w4-g128", hardware="t4", created_at=0.0)
    name = run_name(run)
    assert name.startswith("my-model · rtn w4 g128 · NVIDIA T4") and "/srv" not in name
    assert model_name("HuggingFaceTB/SmolLM2-135M") == "SmolLM2-135M" and model_name("demo") == "demo"


# -- re-projection ---------------------------------------------------------------------------------


def test_a_stored_report_is_projected_again_for_another_profile_at_once(demo_run):
    report = demo_run.report
    assert reprojected(report, None) is report and reprojected(report, "t4", 2048, 1) is report
    t0 = time.perf_counter()
    h100 = reprojected(report, "h100", 4096, 8)
    took = time.perf_counter() - t0
    assert h100.projection.hardware.id == "h100" and h100.projection.batch == 8
    assert h100.projection.compressed.decode_tokens_per_s != report.projection.compressed.decode_tokens_per_s
    assert report.projection.hardware.id == "t4"  # the stored report is untouched
    assert h100.compressed is report.compressed  # measurements are shared, not measured again
    print(f"re-projected in {1000 * took:.1f} ms")
    with pytest.raises(LabError, match="whole number"):
        reprojected(report, "h100", "lots", 1)


def test_this_machine_is_projected_only_with_a_profile_a_worker_measured(demo_run):
    from ui import views

    saved, views._this_machine = views._this_machine, None
    try:
        with pytest.raises(LabError, match="has not been measured yet"):
            reprojected(demo_run.report, "this-machine")
    finally:
        views._this_machine = saved


# -- cards -----------------------------------------------------------------------------------------


def _with_decode(report: Report, base: tuple, comp: tuple, paths: dict) -> Report:
    """A copy of `report` whose batch-1 decode speeds are (median, min, max) as given."""
    rep = Report.from_dict(report.to_dict())
    for side, (med, lo, hi) in (("baseline", base), ("compressed", comp)):
        getattr(rep, side).speed.batch1.decode_tokens_per_s = Stat(med, lo, hi, 3)
    rep.compressed.speed.kernel_paths = paths
    return rep


def test_a_slower_compressed_model_is_said_so_with_its_kernel_path_and_why(demo_run):
    slow = _with_decode(demo_run.report, (15.0, 14.0, 16.0), (5.0, 4.5, 5.5), {"reference": 28})
    note = speed_note(slow)  # compressor.runs.speedfacts' sentence, and the projection's view
    assert "slower here" in note and "x0.33" in note and "'reference'" in note
    assert "NVIDIA T4" in note  # where the projection expects it to be faster
    cards = metric_cards_html(slow)
    assert 'id="lab-speed-note"' in cards and "kernel: reference (28 modules)" in cards
    overlapping = _with_decode(demo_run.report, (15.0, 6.0, 25.0), (5.0, 4.0, 7.0), {"cpu-int4pack": 28})
    assert speed_note(overlapping) == ""  # within the spread of the repeats: no claim
    assert "(within the spread)" in metric_cards_html(overlapping)


@pytest.mark.parametrize("said, mark", [("85", "right"), (" 85.", "right"), ("86", "wrong (answered 86"),
                                        ("85 or 86", "wrong (no clear answer")])
def test_arithmetic_samples_are_marked_by_the_rule_that_scores_them(said, mark):
    assert mark in answer_mark(said, "85")
    assert answer_mark(said, None) == ""


def test_a_streamed_report_says_measuring_where_figures_are_still_to_come(demo_run):
    quality_only = dataclasses.replace(demo_run.report, samples=[], projection=None,
                                       pending=["speed", "samples", "projection"])
    cards = metric_cards_html(quality_only)
    assert cards.count("measuring...") == 3  # decode, prefill and the projected decode
    assert "still measuring: speed, samples, projection" in cards
    assert f.fmt_kl(demo_run.report.compressed.kld) in cards  # quality came first and is shown
    assert "measuring" in samples_html(quality_only)
    assert "measuring" not in metric_cards_html(demo_run.report) + samples_html(demo_run.report)


# -- comparison ------------------------------------------------------------------------------------


def test_two_runs_side_by_side_share_their_prompts_and_letters(demo_run):
    a = demo_run.report
    b = Report.from_dict(a.to_dict())
    b.samples = [dataclasses.replace(s, compressed=s.compressed + " (b)") for s in b.samples]
    b.samples.append(Sample("only in b", "x", "y"))
    pairs = [(run_of(id="ra", created_at=1.0), a), (run_of(id="rb", created_at=2.0), b)]
    table = compare_table_html(pairs)
    assert table.count("lab-letter") == 2 and "KL to baseline" in table and "paired 95 % CI" in table
    fig = compare_plot(pairs)
    assert len(fig.data) == 4 and all(len(bar.y) == 2 for bar in fig.data)
    base_mib = a.baseline.weight_bytes / 2**20  # the dashed baseline sits on the memory panel's axis
    assert fig.layout.xaxis2.range[1] > base_mib > max(fig.data[1].x)
    samples = compare_samples_html(pairs)
    assert samples.count('class="lab-sample"') == len(a.samples) and "only in b" not in samples
    assert "Pick two or more" in compare_table_html(pairs[:1])


# -- streaming -------------------------------------------------------------------------------------


class _StreamingManager:
    """Plays a run back as the job manager reports it: running with a partial report after quality, then
    after speed, then succeeded with the whole report (the manager's polling API, nothing else)."""

    def __init__(self, report: Report):
        full = report.to_dict()
        quality = dataclasses.replace(report, samples=[], projection=None, pending=["speed", "samples", "projection"])
        speed = dataclasses.replace(report, samples=[], projection=None, pending=["samples", "projection"])
        self.partials = [quality.to_dict(), speed.to_dict()]
        self.polls = 0
        self.run = run_of(full, id="r1", status="succeeded", started_at=1.0, finished_at=2.0)

    def events(self, rid, since=0, timeout=0.0):
        self.polls += 1
        return []

    def status(self, rid):
        return "running" if self.polls <= 2 * len(self.partials) else "succeeded"

    def latest_progress(self, rid):
        return None

    def position(self, rid):
        return 0

    def partial_report(self, rid):
        i = (self.polls - 1) // 2
        return self.partials[i] if i < len(self.partials) else None

    def get_run(self, rid, viewer=None):
        return self.run


def test_the_cards_fill_as_the_run_streams_its_figures(demo_run):
    from ui.run import Follow
    from ui.views import ReportViews

    views = ReportViews(*[SimpleNamespace(outputs=[None] * n, render=None) for n in (2, 4, 2)], raw=None)
    views.results.render = lambda r: [metric_cards_html(r), samples_html(r)]
    views.plots.render = lambda r, projected: [None] * 4
    views.hardware.render = lambda r: ["", ""]
    follow = Follow(None, None, None, None, None, views)
    outs = list(follow.follow(_StreamingManager(demo_run.report), "r1", projected=False))
    cards = [o[5] for o in outs if isinstance(o[5], str)]  # after run id, progress, status, log, link
    assert len(cards) == 3  # quality, then speed, then the whole report: each drawn once
    assert cards[0].count("measuring...") == 3  # decode, prefill, projected decode still to come
    assert cards[1].count("measuring...") == 1 and "kernel:" in cards[1]  # speed arrived
    assert "measuring" not in cards[2] and "finished" in outs[-1][2]


def test_the_weight_card_says_what_the_format_stores_when_the_kernels_hold_more(demo_run):
    """A 3-bit model's kernels hold an int4 copy beside the packed bytes: the card shows what is held here
    and, apart, what a saved model stores (the state dict), so 3-bit never reads as larger than 4-bit."""
    r = demo_run.report
    assert 0 < r.compressed.stored_bytes <= r.compressed.weight_bytes and 0 < r.baseline.stored_bytes
    copy = Report.from_dict(r.to_dict())
    copy.compressed.stored_bytes = copy.compressed.weight_bytes  # nothing held beyond what is stored
    assert "the format stores" not in metric_cards_html(copy)
    copy.compressed.stored_bytes = copy.compressed.weight_bytes // 2
    assert f"the format stores {f.fmt_bytes(copy.compressed.stored_bytes)}" in metric_cards_html(copy)
