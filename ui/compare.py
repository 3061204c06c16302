"""Two or more runs side by side: a table of their headline figures (one column per run), one figure of
the differences that matter, and their sample generations next to each other.

Runs are measured minutes or days apart on a shared machine, so speed is compared as each run's ratio to
its own baseline (measured in the same process, minutes apart), never as raw tokens/s across runs.
Accuracy changes carry each run's paired 95 % interval.
"""

from __future__ import annotations

import html

import gradio as gr
import plotly.graph_objects as go

from compressor.errors import LabError
from compressor.runs import format as f
from compressor.runs.contract import Report
from compressor.runs.speedfacts import speed_comparison
from compressor.runs.store import SUCCEEDED, RunRecord
from ui.cards import answer_mark
from ui.messages import guarded
from ui.names import hardware_name, model_name, run_choice, when
from ui.plots import BASE_COLOR, MiB, empty, hbars, layout, panels
from ui.recipes import recipe_label
from ui.records import report_of, visible_run
from ui.visitors import owner_of

LETTERS = "ABCDEFGH"
MAX_COMPARED = len(LETTERS)
PALETTE = ["#4f46e5", "#0891b2", "#d97706", "#db2777", "#16a34a", "#7c3aed", "#dc2626", "#475569"]


def short_label(report: Report, i: int) -> str:
    """The run's letter (the table's column): an axis label that fits at phone width; the recipe is in the
    table and in each bar's hover text."""
    return LETTERS[i]


def _speed_ratio(report: Report) -> tuple[float | None, str]:
    """Compressed decode tokens/s over the baseline's from the same run (compressor.runs.speedfacts), and
    what the repeats say of it: "" (beyond the spread), "within spread" or "timed once"."""
    cmp = speed_comparison(report)
    if cmp is None:
        return None, ""
    return cmp.ratio, "" if cmp.separated else ("timed once" if cmp.repeats < 2 else "within spread")


def _accuracy_change(report: Report) -> str:
    b, c = report.baseline.arithmetic_accuracy, report.compressed.arithmetic_accuracy
    delta = f.fmt_delta(b, c, "pct")
    ci = report.compressed.arithmetic_diff_ci95
    if not delta:
        return f.NA
    if ci is None:
        return delta
    inside = not (f.is_number(ci[0]) and f.is_number(ci[1]) and (ci[0] > 0 or ci[1] < 0))
    return f"{delta} {f.fmt_interval(ci, 'pts')}" + (" (within noise)" if inside else "")


# (row label, function of a report -> text)
ROWS = [
    ("model", lambda r: model_name(r.model.spec)),
    ("recipe", lambda r: recipe_label(r.request.recipe)),
    ("hardware (projection)", lambda r: hardware_name(r.projection.hardware.id if r.projection
                                                      else r.request.hardware)),
    ("weight memory", lambda r: f"{f.fmt_bytes(r.compressed.weight_bytes)} "
                                f"(baseline {f.fmt_bytes(r.baseline.weight_bytes)})"),
    ("KL to baseline", lambda r: f.fmt_kl(r.compressed.kld)),
    ("top-1 agreement", lambda r: f.fmt_pct(r.compressed.top1_agreement)),
    ("perplexity", lambda r: f"{f.fmt_num(r.compressed.perplexity)} (baseline {f.fmt_num(r.baseline.perplexity)})"),
    ("arithmetic accuracy", lambda r: f"{f.fmt_pct(r.compressed.arithmetic_accuracy)} "
                                      f"(baseline {f.fmt_pct(r.baseline.arithmetic_accuracy)})"),
    ("accuracy change, paired 95 % CI", _accuracy_change),
    ("decode vs own baseline, this machine", lambda r: (lambda x: f"x{x[0]:.2f}" + (f" ({x[1]})" if x[1] else "")
                                                        if x[0] is not None else f.NA)(_speed_ratio(r))),
    ("decode on profile (projection)", lambda r: f"{f.fmt_rate(r.projection.compressed.decode_tokens_per_s)} tok/s"
                                                  if r.projection else f.NA),
]


def compare_table_html(pairs: list[tuple[RunRecord, Report]]) -> str:
    """One column per run (lettered), one row per figure."""
    if len(pairs) < 2:
        return '<div class="lab-empty">Pick two or more finished runs to compare them side by side.</div>'
    head = "".join(f'<th><span class="lab-letter" style="background:{PALETTE[i]}">{LETTERS[i]}</span> '
                   f"{html.escape(when(run.created_at))}</th>" for i, (run, _) in enumerate(pairs))
    body = "".join(f"<tr><th>{html.escape(label)}</th>"
                   + "".join(f"<td>{html.escape(fn(rep))}</td>" for _, rep in pairs) + "</tr>"
                   for label, fn in ROWS)
    return (f'<div class="lab-scroll" id="lab-compare-table"><table class="lab-compare"><thead><tr><th></th>{head}'
            f"</tr></thead><tbody>{body}</tbody></table></div>")


def compare_plot(pairs: list[tuple[RunRecord, Report]]) -> go.Figure:
    """Four panels, one bar per run (lettered as in the table), each on its own scale: KL to the baseline,
    weight memory (the baseline's as a dashed line), decode speed as a ratio to each run's own baseline
    (1 = as fast), and the accuracy change with its paired 95 % interval."""
    fig = go.Figure()
    if len(pairs) < 2:
        empty(fig, "Pick two or more finished runs")
        return layout(fig, "Runs side by side", height=240)
    reps = [rep for _, rep in pairs]
    labels = [short_label(rep, i) for i, rep in enumerate(reps)]
    colors = PALETTE[: len(reps)]
    fig = panels(["KL to baseline (lower = closer)", "Weight memory (MiB; dashed: baseline)",
                  "Decode vs its own baseline, here (x)", "Accuracy change (pts), paired 95 % CI"])

    def bars(values, row, col, text, error=None):
        hbars(fig, row, labels, values, text, colors, error=error, lo=0.0 if row != 4 else None)

    kl = [rep.compressed.kld if f.is_number(rep.compressed.kld) else None for rep in reps]
    bars(kl, 1, 1, [f.fmt_kl(v) for v in kl])
    mem = [rep.compressed.weight_bytes / MiB if f.is_number(rep.compressed.weight_bytes) else None for rep in reps]
    bars(mem, 2, 1, [f"{v:.2f}" if v is not None else "n/a" for v in mem])
    base_mem = reps[0].baseline.weight_bytes
    if f.is_number(base_mem):  # the axis reaches the baseline's line (a 4-bit model is a quarter of it)
        fig.add_vline(x=base_mem / MiB, line_dash="dash", line_color=BASE_COLOR, row=2, col=1,
                      annotation_text=f"baseline {base_mem / MiB:.2f}", annotation_position="top left",
                      annotation_font_size=11)
        reach = max([base_mem / MiB] + [m for m in mem if m is not None])
        fig.update_xaxes(range=[0, reach * 1.25], row=2, col=1)
    ratios = [_speed_ratio(rep)[0] for rep in reps]
    bars(ratios, 3, 1, [f"x{v:.2f}" if v is not None else "n/a" for v in ratios])
    fig.add_vline(x=1.0, line_dash="dash", line_color=BASE_COLOR, row=3, col=1)
    deltas, plus, minus = [], [], []
    for rep in reps:
        b, c, ci = rep.baseline.arithmetic_accuracy, rep.compressed.arithmetic_accuracy, \
            rep.compressed.arithmetic_diff_ci95
        d = 100 * (c - b) if f.is_number(b) and f.is_number(c) else None
        deltas.append(d)
        ok = d is not None and ci is not None and all(f.is_number(v) for v in ci)
        plus.append(100 * ci[1] - d if ok else 0.0)
        minus.append(d - 100 * ci[0] if ok else 0.0)
    bars(deltas, 4, 1, [f"{v:+.1f}" if v is not None else "n/a" for v in deltas],
         error=dict(type="data", symmetric=False, array=plus, arrayminus=minus, color="#111827"))
    span = max([abs(d or 0) + max(p, m) for d, p, m in zip(deltas, plus, minus, strict=True)] + [5.0])
    fig.update_xaxes(range=[-span * 1.3, span * 1.3], zeroline=True, zerolinecolor="#111827", row=4, col=1)
    fig.update_yaxes(autorange="reversed")
    return layout(fig, f"{len(reps)} runs side by side (letters as in the table)",
                  height=100 + 4 * (50 + 30 * len(reps)))


def compare_samples_html(pairs: list[tuple[RunRecord, Report]]) -> str:
    """Each sample prompt once, with the baseline's answer and each run's, marked right or wrong when the
    answer is known. Runs of different models or evaluation data share only the prompts they both have."""
    if len(pairs) < 2:
        return ""
    reps = [rep for _, rep in pairs]
    prompts = [s.prompt for s in reps[0].samples if all(any(t.prompt == s.prompt for t in r.samples) for r in reps)]
    if not prompts:
        return '<div class="lab-empty">These runs share no sample prompts (different models or data).</div>'
    rows = []
    for prompt in prompts:
        by_run = [next(s for s in r.samples if s.prompt == prompt) for r in reps]
        first = by_run[0]
        cells = [f'<div class="lab-gen"><div class="lab-gen-h">Baseline {answer_mark(first.baseline, first.expected)}'
                 f"</div>{html.escape(first.baseline)}</div>"]
        for i, s in enumerate(by_run):
            cells.append(f'<div class="lab-gen"><div class="lab-gen-h"><span class="lab-letter" '
                         f'style="background:{PALETTE[i]}">{LETTERS[i]}</span> {answer_mark(s.compressed, s.expected)}'
                         f"</div>{html.escape(s.compressed)}</div>")
        rows.append(f'<div class="lab-sample"><div class="lab-prompt">{html.escape(prompt)}</div>'
                    f'<div class="lab-multi">{"".join(cells)}</div></div>')
    return '<div class="lab-samples" id="lab-compare-samples">' + "".join(rows) + "</div>"



# -- the panel -------------------------------------------------------------------------------------


def compare_panel(manager, visitor: gr.State) -> gr.Dropdown:
    """The "Compare" tab's contents; call inside it. Returns the run picker (a page load fills its choices
    and, from a `?compare=a,b` link, its value)."""
    pick = gr.Dropdown([], multiselect=True, max_choices=MAX_COMPARED, label="Runs to compare (two or more)",
                       elem_id="lab-compare-pick", allow_custom_value=True)  # a script names runs by id
    table = gr.HTML(compare_table_html([]), elem_id="lab-compare")
    plot = gr.Plot(show_label=False, elem_classes="lab-plot", elem_id="lab-compare-plot")
    samples = gr.HTML(elem_id="lab-compare-samples-box")

    @guarded
    def on_pick(ids: list[str] | None, vid: str | None, request: gr.Request = None):
        owner = owner_of(vid, request)
        ids = list(dict.fromkeys(i for i in (ids or []) if isinstance(i, str)))
        if len(ids) > MAX_COMPARED:
            raise LabError(f"{len(ids)} runs picked; at most {MAX_COMPARED} compare side by side: pick fewer")
        pairs = []
        for rid in ids:
            run = visible_run(manager, rid, owner)
            report = report_of(run)
            if report is None:
                raise LabError(f"run {rid} has no report ({run.status}): pick finished runs")
            pairs.append((run, report))
        return compare_table_html(pairs), compare_plot(pairs), compare_samples_html(pairs)

    pick.change(on_pick, [pick, visitor], [table, plot, samples], api_name="compare")
    return pick


def compare_choices(manager):
    """A handler giving the picker the visitor's finished runs (newest first), keeping what is picked."""

    @guarded
    def choices(vid: str | None, picked: list[str] | None, request: gr.Request = None):
        owner = owner_of(vid, request)
        runs = manager.list_runs(owner=owner, status=SUCCEEDED, limit=100, include_report=False)
        ids = {r.id for r in runs}
        for rid in picked or []:  # a shared run a link picked stays pickable
            if rid not in ids:
                try:
                    runs.append(visible_run(manager, rid, owner))
                except LabError:
                    continue
        return gr.update(choices=[run_choice(r) for r in runs])

    return choices
