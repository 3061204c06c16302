"""The comparison at a glance, as HTML from a `Report`: metric cards, the per-stage table of a stacked
recipe, notes on KV stages, and both models' generations side by side.

Pure functions of the report: every figure is an attribute the run measured (compressor.runs.contract),
formatted by compressor.runs.format; nothing here computes one.
"""

from __future__ import annotations

import html

from compressor.engine.stage import stage_from_dict
from compressor.runs import format as f
from compressor.runs.contract import Measurement, Report
from ui.recipes import recipe_label

# (label, Measurement attribute, figure kind, True when higher is better)
CARDS = [
    ("Weight memory", "weight_bytes", "bytes", False),
    ("KV cache per token", "kv_bytes_per_token", "bytes", False),
    ("Decode tokens/s", "decode_tokens_per_s", "rate", True),
    ("Prefill tokens/s", "prefill_tokens_per_s", "rate", True),
    ("Perplexity", "perplexity", "num", False),
    ("Arithmetic accuracy", "arithmetic_accuracy", "pct", True),
]


def _card(label: str, value: str, base: str, delta: str, tone: str, extra: str = "") -> str:
    return (f'<div class="lab-card"><div class="lab-card-label">{label}</div>'
            f'<div class="lab-card-value">{value}</div><div class="lab-card-base">{base}</div>'
            f'<div class="lab-delta {tone}">{delta or "&nbsp;"}</div>{extra}</div>')


def _arithmetic_interval(comp: Measurement) -> str:
    """The paired 95 % interval of the accuracy change: a difference is only claimed with it."""
    if comp.arithmetic is None or comp.arithmetic_diff_ci95 is None:
        return ""
    return (f'<div class="lab-card-ci">change, paired 95 % CI {f.fmt_interval(comp.arithmetic_diff_ci95, "pts")} '
            f"(n={comp.arithmetic.n})</div>")


def metric_cards_html(report: Report) -> str:
    """The headline figures of both models with the change, coloured by the metric's direction; the
    KL card; then the per-stage table and the KV notes."""
    base, comp = report.baseline, report.compressed
    cards = []
    for label, attr, kind, higher in CARDS:
        b, c = getattr(base, attr), getattr(comp, attr)
        extra = _arithmetic_interval(comp) if attr == "arithmetic_accuracy" else ""
        cards.append(_card(label, f.fmt(c, kind), f"baseline {f.fmt(b, kind)}", f.fmt_delta(b, c, kind),
                           f.delta_tone(b, c, higher), extra))
    cards.append(_card("KL to baseline", f.fmt_kl(comp.kld), f"top-1 agreement {f.fmt_pct(comp.top1_agreement)}",
                       "0 = identical", "neutral"))
    secs = report.timings.compress_s
    title = html.escape(f"{report.model.spec} · {recipe_label(report.request.recipe)}")
    took = f" · compressed in {f.fmt_duration(secs)}" if f.is_number(secs) else ""
    return (f'<div class="lab-run-title">{title}{took}</div><div class="lab-cards">{"".join(cards)}</div>'
            + attribution_html(report) + kv_notes_html(report))


def attribution_html(report: Report) -> str:
    """A stacked recipe's quality after each stage and the change each stage caused ("" for one stage)."""
    rows = report.attribution
    if not rows:
        return ""

    def cell(value: object, delta: object, kind: str, higher: bool) -> str:
        shown = f.fmt(value, kind)
        if f.is_number(value) and f.is_number(delta) and delta != 0:
            tone = "good" if (delta > 0) == higher else "bad"
            shown += f' <span class="lab-delta {tone}">{f.fmt_change(delta, kind)}</span>'
        return f"<td>{shown}</td>"

    body = [f"<tr><td>baseline</td><td>{f.fmt_num(report.baseline.perplexity)}</td><td>0</td>"
            f"<td>{f.fmt_pct(report.baseline.arithmetic_accuracy)}</td></tr>"]
    for r in rows:
        note = f'<div class="lab-note">{html.escape(r.note)}</div>' if r.note else ""
        body.append(f"<tr><td>{r.index}: {html.escape(r.method)}{note}</td>"
                    + cell(r.after["perplexity"], r.delta["perplexity"], "num", False)
                    + cell(r.after["kld"], r.delta["kld"], "kl", False)
                    + cell(r.after["arithmetic_accuracy"], r.delta["arithmetic_accuracy"], "pct", True) + "</tr>")
    return ('<div class="lab-attribution" id="lab-attribution"><div class="lab-card-label">Quality after each stage '
            "(change caused by the stage; measured on the same tokens and problems)</div><table><thead><tr>"
            "<th>stage</th><th>perplexity</th><th>KL to baseline</th><th>arithmetic</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


def kv_notes_html(report: Report) -> str:
    """Notes on KV stages that kept every arithmetic token uncompressed, so arithmetic could not change."""
    return "".join(f'<div class="lab-note lab-kv-note">{n}</div>' for n in kv_notes(report))


def kv_notes(report: Report) -> list[str]:
    """For each KV stage whose exact window (its config's `exact_window()`) holds the longest arithmetic
    problem the run scored (prompt and new tokens, as the run's tokenizer counted them): why the arithmetic
    accuracy cannot change, and what to set to test the compressed cache. None without the figure."""
    arithmetic = report.compressed.arithmetic
    longest = arithmetic.max_tokens if arithmetic is not None else None
    if not f.is_number(longest):
        return []
    notes = []
    for stage in report.compression.stages:  # the configs that ran, as the report stored them
        if stage.kind != "kv" or not stage.config:
            continue
        cfg = stage_from_dict(stage.config)
        kept, how = cfg.exact_window()
        if kept >= longest:
            notes.append(f"{html.escape(cfg.method)} keeps {how}, and an arithmetic problem (prompt and answer "
                         f"tokens) fills at most {longest} tokens of cache, so the cache never compresses or evicts "
                         f"during arithmetic: that accuracy is unchanged by construction. {cfg.stress_fix(longest)}")
    return notes


def samples_html(report: Report) -> str:
    """Each sample prompt with both models' greedy continuations side by side."""
    if not report.samples:
        return '<div class="lab-empty">No sample generations in this report.</div>'
    rows = []
    for s in report.samples:
        p, b, c = html.escape(s.prompt), html.escape(s.baseline), html.escape(s.compressed)
        same = ' <span class="lab-same">identical</span>' if b == c else ""
        rows.append(
            f'<div class="lab-sample"><div class="lab-prompt">{p}{same}</div><div class="lab-pair">'
            f'<div class="lab-gen"><div class="lab-gen-h">Baseline</div><b>{p}</b>{b}</div>'
            f'<div class="lab-gen"><div class="lab-gen-h">Compressed</div><b>{p}</b>{c}</div>'
            "</div></div>"
        )
    return '<div class="lab-samples" id="lab-samples">' + "".join(rows) + "</div>"
