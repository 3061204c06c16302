"""The comparison at a glance, as HTML from a `Report`: metric cards, the per-stage table of a stacked
recipe, notes on KV stages and on speed, and both models' generations side by side.

Pure functions of the report: every figure is an attribute the run measured or projected
(compressor.runs.contract), formatted by compressor.runs.format, and speed is read through
compressor.runs.speedfacts; nothing here computes a figure. A card claims a change (a colour) only when
the run's own uncertainty allows it: accuracy when its paired 95 % interval leaves out 0, speed when
the repeats' ranges do not overlap.

A report streamed while its run goes on names what is still to come (`Report.pending`: "speed",
"samples", "projection"): those cards say "measuring..." and fill in as the figures arrive.
"""

from __future__ import annotations

import html
import time

from compressor.engine.stage import stage_from_dict
from compressor.measure.arithmetic import parse_answer
from compressor.runs import format as f
from compressor.runs.contract import Measurement, Report, Stat
from compressor.runs.speedfacts import speed_comparison
from ui.names import hardware_name, model_name
from ui.recipes import recipe_label

PENDING = '<span class="lab-pending">measuring...</span>'
# (label, Measurement attribute, figure kind, True when higher is better)
CARDS = [
    ("Weight memory", "weight_bytes", "bytes", False),
    ("KV cache per token", "kv_bytes_per_token", "bytes", False),
    ("Decode tokens/s", "decode_tokens_per_s", "rate", True),
    ("Prefill tokens/s", "prefill_tokens_per_s", "rate", True),
    ("Perplexity", "perplexity", "num", False),
    ("Arithmetic accuracy", "arithmetic_accuracy", "pct", True),
]
SPEEDS = {"decode_tokens_per_s", "prefill_tokens_per_s"}


def _card(label: str, value: str, base: str, delta: str, tone: str, extra: str = "", tag: str = "") -> str:
    tag_html = f' <span class="lab-proj-tag">{tag}</span>' if tag else ""
    return (f'<div class="lab-card"><div class="lab-card-label">{label}{tag_html}</div>'
            f'<div class="lab-card-value">{value}</div><div class="lab-card-base">{base}</div>'
            f'<div class="lab-delta {tone}">{delta or "&nbsp;"}</div>{extra}</div>')


def _pending_card(label: str, tag: str = "") -> str:
    return _card(label, PENDING, "&nbsp;", "", "neutral", tag=tag)


def _stat(m: Measurement, attr: str) -> Stat | None:
    batch1 = m.speed.batch1 if m.speed is not None else None
    return getattr(batch1, attr, None) if batch1 is not None else None


def _spread(stat: Stat | None) -> str:
    if stat is None or not (f.is_number(stat.min) and f.is_number(stat.max)):
        return ""
    if stat.n < 2:
        return "timed once (no spread)"
    return f"range {f.fmt_rate(stat.min)}-{f.fmt_rate(stat.max)}, median of {stat.n}"


def _prefill_separated(base: Stat | None, comp: Stat | None) -> bool:
    """Prefill's ranges apart, by the rule compressor.runs.speedfacts applies to decode."""
    ok = base is not None and comp is not None and min(base.n, comp.n) >= 2
    return ok and (comp.max < base.min or comp.min > base.max)


def kernel_path_text(m: Measurement) -> str:
    """"cpu-int4pack (28 modules)" etc.: the kernel paths the compressed model's last forward ran."""
    paths = m.kernel_paths or {}
    return ", ".join(f"{html.escape(str(p))} ({n} module{'s' * (n != 1)})" for p, n in paths.items())


def _speed_card(label: str, attr: str, report: Report) -> str:
    base, comp = report.baseline, report.compressed
    if "speed" in report.pending:
        return _pending_card(label, tag="this machine")
    b, c = getattr(base, attr), getattr(comp, attr)
    sb, sc = _stat(base, attr), _stat(comp, attr)
    if attr == "decode_tokens_per_s":
        cmp = speed_comparison(report)
        apart = cmp is not None and cmp.separated
    else:
        apart = _prefill_separated(sb, sc)
    tone = f.delta_tone(b, c, True) if apart else "neutral"
    delta = f.fmt_delta(b, c, "rate")
    if delta and not apart and sb is not None and sc is not None:
        delta += " (within the spread)" if min(sb.n, sc.n) >= 2 else " (timed once)"
    if sb is not None and sc is not None and max(sb.n, sc.n) < 2:
        extra = '<div class="lab-card-ci">timed once per side: no spread (the thorough preset times 5)</div>'
    else:
        extra = "".join(f'<div class="lab-card-ci">{who} {text}</div>' for who, text in
                        (("compressed:", _spread(sc)), ("baseline:", _spread(sb))) if text)
    if attr == "decode_tokens_per_s" and comp.kernel_paths:
        extra += f'<div class="lab-card-ci lab-kernel">kernel: {kernel_path_text(comp)}</div>'
    threads = comp.speed.decode_threads if comp.speed is not None else None
    if attr == "decode_tokens_per_s" and threads:
        extra += (f'<div class="lab-card-ci">decode timed on {threads} thread{"s" * (threads != 1)}, '
                  "both models</div>")
    return _card(label, f.fmt_rate(c), f"baseline {f.fmt_rate(b)}", delta, tone, extra, tag="this machine")


def _accuracy_card(base: Measurement, comp: Measurement) -> str:
    b, c = base.arithmetic_accuracy, comp.arithmetic_accuracy
    ci_b = base.arithmetic.ci95 if base.arithmetic else None
    ci_c = comp.arithmetic.ci95 if comp.arithmetic else None
    diff = comp.arithmetic_diff_ci95
    excludes_zero = (isinstance(diff, list | tuple) and len(diff) == 2 and all(f.is_number(v) for v in diff)
                     and (diff[0] > 0 or diff[1] < 0))
    tone = f.delta_tone(b, c, True) if excludes_zero else "neutral"
    delta = f.fmt_delta(b, c, "pct")
    if delta and not excludes_zero and diff is not None:
        delta += " (within noise)"
    value = f.fmt_pct(c) + (f' <span class="lab-ci">{f.fmt_interval(ci_c)}</span>' if ci_c else "")
    base_text = f"baseline {f.fmt_pct(b)}" + (f" {f.fmt_interval(ci_b)}" if ci_b else "")
    extra = ""
    if diff is not None and comp.arithmetic is not None:
        extra = (f'<div class="lab-card-ci">change, paired 95 % CI {f.fmt_interval(diff, "pts")} '
                 f"(n={comp.arithmetic.n}); Wilson 95 % intervals beside each accuracy</div>")
    return _card("Arithmetic accuracy", value, base_text, delta, tone, extra)


def _plain_card(label: str, attr: str, kind: str, higher: bool, base: Measurement, comp: Measurement) -> str:
    b, c = getattr(base, attr), getattr(comp, attr)
    extra = _stored_note(comp) if attr == "weight_bytes" else ""
    return _card(label, f.fmt(c, kind), f"baseline {f.fmt(b, kind)}", f.fmt_delta(b, c, kind),
                 f.delta_tone(b, c, higher), extra)


def _stored_note(m: Measurement) -> str:
    """What the format stores (a saved model's bytes) when the kernels hold more while running (a 2/3-bit
    weight unpacked into the int4 layout, FP8's fp16 copy): both figures, so neither is mistaken for the other."""
    held, stored = m.weight_bytes, m.stored_bytes
    if not (f.is_number(held) and f.is_number(stored)) or abs(held - stored) <= 0.01 * max(stored, 1):
        return ""
    return (f'<div class="lab-card-ci">held while running here; the format stores {f.fmt_bytes(stored)} '
            "(a saved model's size)</div>")


def _projected_card(report: Report) -> str:
    if "projection" in report.pending:
        return _pending_card("Decode on the chosen profile", tag="projection")
    p = report.projection
    if p is None:
        return ""
    b, c = p.baseline.decode_tokens_per_s, p.compressed.decode_tokens_per_s
    ratio = f"x{c / b:.2f} the baseline" if f.is_number(b) and f.is_number(c) and b > 0 else ""
    tone = f.delta_tone(b, c, True)
    fits = "" if p.compressed.fits else '<div class="lab-card-ci">the compressed model does not fit</div>'
    return _card(f"Decode on {html.escape(p.hardware.name)}", f.fmt_rate(c), f"baseline {f.fmt_rate(b)}", ratio,
                 tone, fits, tag="projection")


def title_html(report: Report) -> str:
    """model · recipe · hardware, how long compression took, where the baseline came from, what is to come."""
    hw_id = report.projection.hardware.id if report.projection is not None else report.request.hardware
    title = " · ".join([model_name(report.model.spec), recipe_label(report.request.recipe), hardware_name(hw_id)])
    t = report.timings
    notes = [f"evaluation: {report.request.eval.preset}"]
    if f.is_number(t.compress_s):
        notes.append(f"compressed in {f.fmt_duration(t.compress_s)}")
    if t.baseline_cached:
        when = time.strftime(" %d %b %H:%M", time.localtime(t.baseline_cached_at)) if t.baseline_cached_at else ""
        notes.append(f"baseline quality from the cache (measured{when} with the same model, data and settings); "
                     "its speed measured again now")
    if report.pending:
        notes.append(f"still measuring: {', '.join(report.pending)}; the cards fill in as figures arrive")
    sub = f'<div class="lab-note lab-run-notes">{html.escape("; ".join(notes))}</div>'
    return f'<div class="lab-run-title">{html.escape(title)}</div>{sub}'


def metric_cards_html(report: Report) -> str:
    """The headline figures of both models with the change, coloured only where the run's uncertainty
    allows; the KL card and the projected decode card; then the speed note, the per-stage table and the
    KV notes."""
    base, comp = report.baseline, report.compressed
    cards = []
    for label, attr, kind, higher in CARDS:
        if attr in SPEEDS:
            cards.append(_speed_card(label, attr, report))
        elif attr == "arithmetic_accuracy":
            cards.append(_accuracy_card(base, comp))
        else:
            cards.append(_plain_card(label, attr, kind, higher, base, comp))
    cards.append(_card("KL to baseline", f.fmt_kl(comp.kld), f"top-1 agreement {f.fmt_pct(comp.top1_agreement)}",
                       "0 = identical", "neutral"))
    cards.append(_projected_card(report))
    note = speed_note(report)
    note_html = f'<div class="lab-note lab-speed-note" id="lab-speed-note">{html.escape(note)}</div>' if note else ""
    return (title_html(report) + f'<div class="lab-cards">{"".join(cards)}</div>' + note_html
            + attribution_html(report) + kv_notes_html(report))


def speed_note(report: Report) -> str:
    """compressor.runs.speedfacts' plain sentences when the compressed model decodes slower on this machine
    (how much, against what spread, which kernel path and why), and what the projection expects where
    memory bandwidth is the limit. "" otherwise."""
    cmp = speed_comparison(report)
    if cmp is None or not cmp.slower:
        return ""
    text = cmp.sentence()
    p = report.projection
    if p is not None and p.hardware.id != "this-machine":
        b, c = p.baseline.decode_tokens_per_s, p.compressed.decode_tokens_per_s
        if f.is_number(b) and f.is_number(c) and b > 0:
            text += (f" Where reading weights is the limit, as on {p.hardware.name}, the projection expects "
                     f"x{c / b:.2f} (Hardware tab).")
    return text


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
            "(change caused by the stage; measured on the same tokens and problems)</div><div class=\"lab-scroll\">"
            "<table><thead><tr><th>stage</th><th>perplexity</th><th>KL to baseline</th><th>arithmetic</th></tr>"
            "</thead><tbody>" + "".join(body) + "</tbody></table></div></div>")


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


def answer_mark(continuation: str, expected: str | None) -> str:
    """A right/wrong mark for an answer whose expected value is known, read by the same rule that scores
    arithmetic (compressor.measure.arithmetic.parse_answer); "" when nothing is expected."""
    if expected is None:
        return ""
    got = parse_answer(continuation)
    if got is not None and got == str(expected).strip():
        return '<span class="lab-mark right" title="right">&#10003; right</span>'
    said = f"answered {html.escape(got)}, " if got is not None else "no clear answer, "
    want = html.escape(str(expected))
    return f'<span class="lab-mark wrong" title="wrong">&#10007; wrong ({said}expected {want})</span>'


def samples_html(report: Report) -> str:
    """Each sample prompt with both models' greedy continuations side by side, marked right or wrong
    where the answer is known."""
    if not report.samples:
        text = ("Sample generations come last; measuring..." if "samples" in report.pending
                else "No sample generations in this report.")
        return f'<div class="lab-empty">{text}</div>'
    rows = []
    for s in report.samples:
        p, b, c = html.escape(s.prompt), html.escape(s.baseline), html.escape(s.compressed)
        same = ' <span class="lab-same">same text</span>' if s.baseline == s.compressed else ""
        expected = f' <span class="lab-expected">expected {html.escape(s.expected)}</span>' if s.expected else ""
        rows.append(
            f'<div class="lab-sample"><div class="lab-prompt">{p}{expected}{same}</div><div class="lab-pair">'
            f'<div class="lab-gen"><div class="lab-gen-h">Baseline {answer_mark(s.baseline, s.expected)}</div>'
            f'<b>{p}</b>{b}</div>'
            f'<div class="lab-gen"><div class="lab-gen-h">Compressed {answer_mark(s.compressed, s.expected)}</div>'
            f'<b>{p}</b>{c}</div>'
            "</div></div>"
        )
    return '<div class="lab-samples" id="lab-samples">' + "".join(rows) + "</div>"
