"""Compression Lab in the browser: pick a model, a recipe and a hardware profile; compare side by side.

Gradio only: widgets, events and plots. Every number on the page comes from a run's report (made by
`compressor.runs.experiment.run_job` in a background worker); this file formats and plots it and never
computes on tensors. Stage forms are generated from the method config dataclasses in
`compressor.engine.registry.METHODS`, so a new method shows up here without a change to this file.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT respected)
    LAB_DATA_DIR=/some/folder python app.py
"""

from __future__ import annotations

import os

# Before gradio is imported: no analytics look-ups at launch, no hub telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import csv  # noqa: E402
import dataclasses  # noqa: E402
import html  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402

import gradio as gr  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import yaml  # noqa: E402

from compressor.errors import LabError  # noqa: E402
from compressor.runs.jobs import JobManager  # noqa: E402
from compressor.runs.store import FINAL_STATUSES, SUCCEEDED, default_data_dir  # noqa: E402

try:  # Hugging Face ZeroGPU: present on Spaces, absent elsewhere; the CPU path never needs it
    import spaces
except ImportError:
    spaces = None

log = logging.getLogger("compression-lab.app")

ROOT = Path(__file__).resolve().parent
STATIC = ROOT / "assets" / "static"
ON_SPACE = bool(os.environ.get("SPACE_ID"))
# On a ZeroGPU Space a GPU is attached only inside a @spaces.GPU call in the app's own process, so
# jobs run there (no live progress); everywhere else they run in the job manager's worker process.
ZERO_GPU = spaces is not None and bool(os.environ.get("SPACES_ZERO_GPU"))
ZERO_GPU_DURATION_S = int(os.environ.get("LAB_ZERO_GPU_DURATION_S", "240"))
TIME_LIMIT_S = float(os.environ.get("LAB_TIME_LIMIT_S", "900"))
POLL_S = 0.5  # how often a running job's progress reaches the page
ASK_TIMEOUT_S = 180

DEMO_CHOICE = ("Bundled demo model: lab-llama-7m (offline)", "demo")
# Small hub models for people online; the page says they need internet. Any other hub id or local
# folder can be typed into the same box.
CURATED_HUB = [
    "HuggingFaceTB/SmolLM2-135M",
    "HuggingFaceTB/SmolLM2-360M",
    "Qwen/Qwen2.5-0.5B",
    "EleutherAI/pythia-160m",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
]
DEFAULT_PRESET = "w4-g128"  # RTN: calibration-free, the one-click demo

# Evaluation settings shown on the page: name -> (label, UI min, UI max). Defaults come from
# compressor.evaluate.EvalSettings; the UI maxima are tighter than the engine's, for a shared machine.
EVAL_FIELDS = {
    "ppl_tokens": ("Text tokens scored (perplexity, KL)", 128, 16384),
    "context": ("Context length (tokens)", 16, 2048),
    "arithmetic_samples": ("Arithmetic problems", 0, 400),
    "max_new_tokens": ("New tokens per sample answer", 1, 128),
}

HOW_TO_READ = """
**How to read this**

- *Weight memory* is the bytes of the model's parameters and buffers, measured after real packing
  (4-bit weights really take ~4 bits plus scales). *KV per token* is the cache each generated token
  adds. Lower is better for both.
- *Prefill / decode tokens/s* are measured on **this** machine (median of repeats). On a CPU, low-bit
  kernels may be slower than fp32: speed-ups appear where memory bandwidth is the limit (GPUs).
- *Perplexity* (lower is better) and *arithmetic accuracy* (exact match) are measured on bundled
  held-out data. *KL* is the mean KL divergence of the compressed model's next-token distribution
  from the original's on the same tokens, and *top-1 agreement* how often both pick the same next
  token: these see differences that perplexity hides. KL near 0 and agreement near 100 % mean the
  compressed model behaves like the original.
- The **hardware panel is a projection** from a roofline model of the chosen profile (memory
  bandwidth and peak compute), not a measurement, unless the profile is *this machine*.
- Deltas are compressed minus baseline; green means better, red worse.
- A recipe of several stages (e.g. prune -> distil -> quantize) also gets a **per-stage table**: the
  quality after each stage and the change that stage caused, on the same tokens and problems.
- **Pruning** zeros stored densely save no memory or time by themselves (the report says so per
  module); compact 2:4 storage saves bytes, structured pruning saves bytes and time. Watch the
  arithmetic card: pruning can cost it far more than perplexity suggests.
"""


# -- ZeroGPU ----------------------------------------------------------------------------------------


def _gpu(fn):
    return spaces.GPU(duration=ZERO_GPU_DURATION_S)(fn) if spaces is not None else fn


@_gpu
def _run_job_on_gpu(payload: dict, data_dir: str, artifact_dir: str) -> dict:
    from compressor.runs.experiment import run_job
    from compressor.runs.jobs import JobContext

    ctx = JobContext.local(data_dir, artifact_dir=artifact_dir, on_log=None)
    return run_job({**payload, "device": "cuda"}, ctx)


def run_inline_on_gpu(manager: JobManager, payload: dict, owner: str) -> str:
    """Runs one job in this process under ZeroGPU and records it in the manager's run store."""
    from compressor.runs.store import FAILED, RUNNING

    store = manager.store
    run_id = store.create_run(owner, payload)
    store.update_run(run_id, status=RUNNING, started_at=time.time())
    art = manager.artifact_root / run_id
    try:
        report = _run_job_on_gpu(payload, str(manager.data_dir), str(art))
    except Exception as e:  # the page shows the message; the app goes on
        shutil.rmtree(art, ignore_errors=True)  # as the job manager does: only succeeded runs keep files
        store.update_run(run_id, status=FAILED, error=f"{type(e).__name__}: {e}", finished_at=time.time())
    else:
        store.update_run(run_id, status=SUCCEEDED, report=report, finished_at=time.time(),
                         artifact_path=str(art) if art.exists() else None)
        manager.prune_artifacts()  # keep-last applies to these runs too, or a Space's disk fills up
    return run_id


# -- engine access (imported lazily so the page still opens when one part is broken) ---------------


def _engine(name: str) -> types.ModuleType | None:
    import importlib

    try:
        return importlib.import_module(f"compressor.{name}")
    except ImportError as e:
        log.warning("compressor.%s is not available: %s", name, e)
        return None


def preset_choices() -> list[tuple[str, str]]:
    """(label with description, name) of the named recipes."""
    presets = _engine("engine.presets")
    if presets is None:
        return []
    try:
        found = presets.list_presets()
    except Exception as e:  # a broken preset must not stop the page from opening
        log.warning("list_presets failed: %s", e)
        return []
    if isinstance(found, dict):
        return [(f"{name}: {desc}" if desc else name, name) for name, desc in found.items()]
    return [(str(n), str(n)) for n in found]


def recipe_yaml(source: object) -> str:
    """YAML text of a preset name or a parsed recipe, in the engine's own format."""
    recipe_mod = _engine("engine.recipe")
    if recipe_mod is None:
        raise LabError("the recipe module is not available in this installation")
    return recipe_mod.load_recipe(source).to_yaml()


def check_recipe(parsed: object):
    """The engine's Recipe (None without the recipe module); raises the engine's RecipeError (field,
    value and fix) for a recipe that cannot work."""
    recipe_mod = _engine("engine.recipe")
    return recipe_mod.load_recipe(parsed) if recipe_mod is not None else None


def method_specs() -> dict:
    registry = _engine("engine.registry")
    if registry is None:
        return {}
    try:
        return dict(registry.load_methods())
    except Exception as e:
        log.warning("loading compression methods failed: %s", e)
        return {}


def hardware_choices() -> list[tuple[str, str]]:
    """(label, value) pairs of the hardware profiles; "this machine" (measured) first."""
    hw = _engine("measure.hardware")
    this = getattr(hw, "THIS_MACHINE", "this-machine")
    out = [("This machine (measured here)", this)]
    if hw is not None:
        try:
            out += [(f"{p.name} (projection)", p.id) for p in hw.list_profiles() if p.id != this]
        except Exception as e:  # a broken profile file must not stop the page from opening
            log.warning("listing hardware profiles failed: %s", e)
    return out


# -- stage forms from config dataclasses -------------------------------------------------------------


def parse_args_doc(doc: str | None) -> dict[str, str]:
    """`Args:` section of a Google-style docstring -> {name: help text} (continuation lines joined)."""
    out: dict[str, str] = {}
    if not doc:
        return out
    lines = doc.expandtabs().splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Args:")
    except StopIteration:
        return out
    indent, current = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        if indent is None:
            indent = width
        if width < indent:
            break
        m = re.match(r"\s*(\w+)\s*(\([^)]*\))?:\s*(.*)", line)
        if width == indent and m:
            current = m.group(1)
            out[current] = m.group(3).strip()
        elif current:
            out[current] += " " + line.strip()
    return out


SELECTION_FIELDS = ("targets", "ignore", "overrides")


@dataclasses.dataclass
class FieldForm:
    """One config field and the widget that edits it."""

    name: str
    kind: str  # "bool", "int", "float", "choice", "str", "yaml"
    optional: bool
    component: gr.components.Component


def _unwrap_optional(tp) -> tuple[object, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else object), True
    return tp, False


def _field_default(f: dataclasses.Field) -> object:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def form_fields(config_cls: type) -> list[FieldForm]:
    """Builds one widget per init field of a config dataclass: type -> widget, default -> value,
    the `Args:` docstring line -> help text. Call inside a Blocks context."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an unresolvable annotation: fall back to the raw ones
        hints = {f.name: f.type for f in dataclasses.fields(config_cls)}
    docs = parse_args_doc(config_cls.__doc__)
    out = []
    # The method's own fields first; the module-selection fields every stage shares come last.
    ordered = sorted(dataclasses.fields(config_cls), key=lambda f: f.name in SELECTION_FIELDS)
    for f in ordered:
        if not f.init or f.name.startswith("_") or f.name == "method":
            continue
        tp, optional = _unwrap_optional(hints.get(f.name, str))
        default = _field_default(f)
        info = docs.get(f.name, "")
        if optional:
            info = (info + " Leave empty for none.").strip()
        label = f.name
        if typing.get_origin(tp) is typing.Literal:
            choices = list(typing.get_args(tp))
            comp, kind = gr.Dropdown(choices=choices, value=default, label=label, info=info), "choice"
        elif tp is bool:
            comp, kind = gr.Checkbox(value=bool(default), label=label, info=info), "bool"
        elif tp is int:
            comp, kind = gr.Number(value=default, precision=0, label=label, info=info), "int"
        elif tp is float:
            comp, kind = gr.Number(value=default, label=label, info=info), "float"
        elif tp is str:
            comp, kind = gr.Textbox(value=default or "", label=label, info=info, max_lines=1), "str"
        else:  # lists, dicts, unions: edited as YAML text
            text = "" if default is None else yaml.safe_dump(default, default_flow_style=True).strip()
            comp, kind = gr.Textbox(value=text, label=f"{label} (YAML)", info=info, max_lines=3), "yaml"
        out.append(FieldForm(f.name, kind, optional, comp))
    return out


def stage_from_form(method: str, forms: list[FieldForm], values: list) -> dict:
    """A recipe stage dict from the widgets' values; bad text raises LabError naming the field."""
    stage: dict = {"method": method}
    for form, value in zip(forms, values, strict=True):
        if value is None or (isinstance(value, str) and not value.strip() and form.kind in ("yaml", "str")):
            if form.optional or form.kind != "str":
                stage[form.name] = None
                continue
        if form.kind == "int":
            if float(value) != int(value):
                raise LabError(f"{method}.{form.name}={value!r} is not valid: use a whole number")
            value = int(value)
        elif form.kind == "float":
            value = float(value)
        elif form.kind == "yaml":
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise LabError(f"{method}.{form.name}: {value!r} is not valid YAML ({e})") from e
        stage[form.name] = value
    return {k: v for k, v in stage.items() if v is not None or k == "method"}


# -- recipe text ------------------------------------------------------------------------------------


def parse_recipe_text(text: str) -> object:
    """YAML/JSON text -> the parsed recipe (dict or list), or a preset name. LabError on bad YAML."""
    if not text or not text.strip():
        raise LabError("the recipe is empty: pick a preset, add a stage, or paste a YAML recipe")
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise LabError(f"the recipe is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if isinstance(parsed, str) and parsed.strip() in {v for _, v in preset_choices()}:
        return parsed.strip()  # a preset name
    if not isinstance(parsed, dict | list):
        names = ", ".join(v for _, v in preset_choices())
        raise LabError(f"the recipe must be a preset name ({names}) or a YAML mapping of stages, "
                       f"got {type(parsed).__name__} {str(parsed)[:40]!r}")
    return parsed


def stages_of(parsed: object) -> list:
    if isinstance(parsed, list):
        return list(parsed)
    return list(parsed.get("stages") or [])


def with_stage(text: str, stage: dict) -> str:
    """The recipe text with one stage appended (an empty editor starts a new recipe)."""
    parsed = parse_recipe_text(text) if text and text.strip() else {"stages": []}
    if isinstance(parsed, str):  # a preset name: append to its stages
        parsed = yaml.safe_load(recipe_yaml(parsed))
    if isinstance(parsed, list) or "stages" not in parsed:
        parsed = {"stages": parsed if isinstance(parsed, list) else [parsed]}
    parsed = dict(parsed)
    parsed["stages"] = stages_of(parsed) + [stage]
    return yaml.safe_dump(parsed, sort_keys=False)


# -- formatting of a report (pure functions of the report dict) --------------------------------------


def _get(d: dict | None, *path, default=None):
    for key in path:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d if d is not None else default


def _finite(v) -> bool:
    """A number a card can show and compare: int or float, not bool, not NaN or infinite."""
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def fmt_bytes(n: float | None) -> str:
    # binary units, labelled as such (the engine's formatter, so the page and the CLI agree)
    from compressor.measure.hardware import human_bytes

    return human_bytes(n) if _finite(n) else _fmt(n, "bytes")


def _fmt(value, kind: str) -> str:
    # a diverged model's perplexity is inf (shown as such); NaN, None or a stray string is no number
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if not _finite(value):
        return "n/a"
    if kind == "bytes":
        return fmt_bytes(value)
    if kind == "pct":
        return f"{100 * value:.1f} %"
    if kind == "rate":
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    if kind == "kl":
        return f"{value:.4f}"
    return f"{value:.2f}"


# (label, report key, kind, True when higher is better)
CARDS = [
    ("Weight memory", "weight_bytes", "bytes", False),
    ("KV cache per token", "kv_bytes_per_token", "bytes", False),
    ("Decode tokens/s", "decode_tokens_per_s", "rate", True),
    ("Prefill tokens/s", "prefill_tokens_per_s", "rate", True),
    ("Perplexity", "perplexity", "num", False),
    ("Arithmetic accuracy", "arithmetic_accuracy", "pct", True),
]


def metric_cards_html(report: dict) -> str:
    base, comp = report.get("baseline") or {}, report.get("compressed") or {}
    cards = []
    for label, key, kind, higher in CARDS:
        b, c = base.get(key), comp.get(key)
        delta, cls = "", "neutral"
        if _finite(b) and _finite(c):
            if kind == "pct":  # points: defined from a 0 % baseline too
                delta = f"{100 * (c - b):+.1f} pts"
            elif b:
                delta = f"{(c - b) / abs(b):+.1%}"
            better = (c > b) if higher else (c < b)
            cls = "neutral" if abs(c - b) <= 1e-12 else ("good" if better else "bad")
        cards.append(
            f'<div class="lab-card"><div class="lab-card-label">{label}</div>'
            f'<div class="lab-card-value">{_fmt(c, kind)}</div>'
            f'<div class="lab-card-base">baseline {_fmt(b, kind)}</div>'
            f'<div class="lab-delta {cls}">{delta or "&nbsp;"}</div></div>'
        )
    kld, top1 = comp.get("kld"), comp.get("top1_agreement", comp.get("top1"))
    cards.append(
        '<div class="lab-card"><div class="lab-card-label">KL to baseline</div>'
        f'<div class="lab-card-value">{_fmt(kld, "kl")}</div>'
        f'<div class="lab-card-base">top-1 agreement {_fmt(top1, "pct")}</div>'
        '<div class="lab-delta neutral">0 = identical</div></div>'
    )
    secs = report.get("compress_seconds")
    title = html.escape(f"{_model_label(report)} · {_recipe_label(report)}")
    took = f" · compressed in {secs:.1f} s" if isinstance(secs, int | float) else ""
    return (f'<div class="lab-run-title">{title}{took}</div><div class="lab-cards">{"".join(cards)}</div>'
            + attribution_html(report) + kv_window_note_html(report))


def attribution_html(report: dict) -> str:
    """A stacked recipe's quality after each stage and the change each stage caused ("" for one stage)."""
    rows = report.get("attribution") or []
    if not rows:
        return ""
    base = report.get("baseline") or {}

    def cell(value, delta, kind: str, higher: bool) -> str:
        shown = _fmt(value, kind)
        if _finite(value) and _finite(delta) and delta != 0:
            better = (delta > 0) if higher else (delta < 0)
            d = f"{100 * delta:+.1f} pts" if kind == "pct" else (f"{delta:+.4f}" if kind == "kl" else f"{delta:+.2f}")
            shown += f' <span class="lab-delta {"good" if better else "bad"}">{d}</span>'
        return f"<td>{shown}</td>"

    body = [f'<tr><td>baseline</td><td>{_fmt(base.get("perplexity"), "ppl")}</td><td>0</td>'
            f'<td>{_fmt(base.get("arithmetic_accuracy"), "pct")}</td></tr>']
    for r in rows:
        note = f'<div class="lab-note">{html.escape(r["note"])}</div>' if r.get("note") else ""
        body.append(f'<tr><td>{r.get("index")}: {html.escape(str(r.get("method")))}{note}</td>'
                    + cell(r.get("perplexity"), r.get("delta_perplexity"), "ppl", False)
                    + cell(r.get("kld"), r.get("delta_kld"), "kl", False)
                    + cell(r.get("arithmetic_accuracy"), r.get("delta_arithmetic_accuracy"), "pct", True) + "</tr>")
    return ('<div class="lab-attribution" id="lab-attribution"><div class="lab-card-label">Quality after each stage '
            "(change caused by the stage; measured on the same tokens and problems)</div><table><thead><tr>"
            "<th>stage</th><th>perplexity</th><th>KL to baseline</th><th>arithmetic</th></tr></thead><tbody>"
            + "".join(body) + "</tbody></table></div>")


# Tokens beyond the characters of an arithmetic prompt and its answer: BOS, a tokenizer's leading-space
# piece, the answer's space and the 2 spare new tokens of evaluate.arithmetic_max_new_tokens.
ARITH_EXTRA_TOKENS = 8


def kv_window_note_html(report: dict) -> str:
    """A note when a KV stage keeps every arithmetic token uncompressed, so arithmetic cannot change."""
    n = _get(report, "settings", "arithmetic_samples", default=0)
    evaldata = _engine("measure.evaldata")
    if not n or evaldata is None:
        return ""
    # ASCII problems: at most one token per character, so this bounds prompt + answer in tokens
    longest = max((len(p["prompt"]) + len(p["answer"]) for p in evaldata.load_arithmetic()[:n]), default=0)
    longest += ARITH_EXTRA_TOKENS
    notes = []
    for s in report.get("stages") or []:
        if not isinstance(s, dict) or s.get("kind") != "kv":
            continue
        cfg, method = s.get("config") or {}, html.escape(str(s.get("method")))
        if isinstance(cfg.get("residual"), int) and cfg["residual"] >= longest:
            notes.append(f"{method} keeps the last residual={cfg['residual']} tokens in fp16, and an "
                         f"arithmetic problem (prompt and answer) is at most {longest} tokens, so its cache is never "
                         "compressed during arithmetic: that accuracy is unchanged by construction. Set <code>residual: 0</code> "
                         "to stress-test the compressed cache.")
        elif isinstance(cfg.get("window"), int) and cfg["window"] + (cfg.get("sinks") or 0) >= longest:
            kept = cfg["window"] + (cfg.get("sinks") or 0)
            notes.append(f"{method} keeps sinks + window = {kept} tokens, and an arithmetic problem (prompt and "
                         f"answer) is at most {longest} tokens, so nothing is evicted during arithmetic. Make "
                         f"sinks + window smaller than {longest} to stress-test eviction.")
    return "".join(f'<div class="lab-note lab-kv-note">{n}</div>' for n in notes)


def _model_label(report: dict) -> str:
    m = report.get("model")
    return str(m.get("spec", "")) if isinstance(m, dict) else str(m or "")


def _recipe_label(report: dict) -> str:
    r = report.get("recipe")
    if isinstance(r, list):  # a bare list of stages
        return " + ".join(_stage_label(s) for s in r if isinstance(s, dict))
    if isinstance(r, dict):
        stages = r.get("stages") if isinstance(r.get("stages"), list) else [r]
        return str(r.get("name") or " + ".join(_stage_label(s) for s in stages if isinstance(s, dict)))
    return str(r or "")


def _stage_label(s: dict) -> str:
    bits = f" w{s['bits']}" if s.get("bits") else ""
    g = s.get("group_size")
    group = f" g{g}" if g else ""
    return f"{s.get('method')}{bits}{group}"


def samples_html(report: dict) -> str:
    samples = report.get("samples") or []
    if not samples:
        return '<div class="lab-empty">No sample generations in this report.</div>'
    rows = []
    for s in samples:
        p = html.escape(str(s.get("prompt", "")))
        b = html.escape(str(s.get("baseline", "")))
        c = html.escape(str(s.get("compressed", "")))
        same = ' <span class="lab-same">identical</span>' if b == c else ""
        rows.append(
            f'<div class="lab-sample"><div class="lab-prompt">{p}{same}</div><div class="lab-pair">'
            f'<div class="lab-gen"><div class="lab-gen-h">Baseline</div><b>{p}</b>{b}</div>'
            f'<div class="lab-gen"><div class="lab-gen-h">Compressed</div><b>{p}</b>{c}</div>'
            "</div></div>"
        )
    return '<div class="lab-samples" id="lab-samples">' + "".join(rows) + "</div>"


def hardware_html(report: dict) -> str:
    """Fit, capacity and speed on the chosen hardware profile, labelled as a projection."""
    proj = report.get("projection")
    if not proj:
        return '<div class="lab-empty">No projection in this report.</div>'
    prof = proj.get("hardware") if isinstance(proj.get("hardware"), dict) else {}
    name = html.escape(str(prof.get("name") or report.get("hardware") or ""))
    first = _get(proj, "compressed") or {}
    at = f"context {first.get('context', '?')} x batch {first.get('batch', '?')}"
    parts = [f'<div class="lab-hw-head"><span class="lab-proj-tag">projection</span> '
             f"<b>{name}</b> · roofline model at {html.escape(at)}, not a measurement</div>", '<div class="lab-hw">']
    for side in ("baseline", "compressed"):
        p = proj.get(side) if isinstance(proj.get(side), dict) else None
        if p is None:
            continue
        fits = p.get("fits")
        badge = ('<span class="lab-fit yes">fits</span>' if fits else '<span class="lab-fit no">does not fit</span>'
                 ) if fits is not None else ""
        need, usable = p.get("memory_needed_bytes"), p.get("memory_usable_bytes")
        rows = [
            ("Memory needed / usable", f"{fmt_bytes(need)} / {fmt_bytes(usable)}"),
            ("Max context at batch 1", _int(p.get("max_context_at_batch_1"))),
            (f"Max batch at context {p.get('context', '?')}", _int(p.get("max_batch_at_context"))),
            ("Decode tokens/s (batch 1)", _fmt(p.get("decode_tokens_per_s"), "rate")),
            ("Prefill tokens/s", _fmt(p.get("prefill_tokens_per_s"), "rate")),
            ("Time to first token", _secs(p.get("time_to_first_token_s"))),
            ("Decode bound by", str(p.get("decode_bound") or "n/a")),
        ]
        table = "".join(f"<tr><td>{k}</td><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
        parts.append(f'<div class="lab-hw-col"><div class="lab-gen-h">{side.title()} {badge}</div>'
                     f"<table>{table}</table></div>")
    parts.append("</div>")
    warnings = list(proj.get("warnings") or [])
    for side in ("baseline", "compressed"):
        warnings += list(_get(proj, side, "warnings", default=[]) or [])
    if warnings:
        items = "".join(f"<li>{html.escape(str(w))}</li>" for w in dict.fromkeys(warnings))
        parts.append(f'<div class="lab-warn"><b>Warnings</b><ul>{items}</ul></div>')
    check = proj.get("check_against_measured")
    if isinstance(check, dict) and isinstance(check.get("compressed"), dict):
        c = check["compressed"]
        parts.append('<div class="lab-note">Check on this machine (compressed, decode batch 1): projected '
                     f'{_fmt(c.get("projected_decode_tokens_per_s"), "rate")} vs measured '
                     f'{_fmt(c.get("measured_decode_tokens_per_s"), "rate")} tokens/s.</div>')
    return "".join(parts)


def _int(v) -> str:
    return f"{int(v):,}" if isinstance(v, int | float) else "n/a"


def _secs(v) -> str:
    if not isinstance(v, int | float):
        return "n/a"
    return f"{v * 1000:.1f} ms" if v < 1 else f"{v:.2f} s"


def details_markdown(report: dict) -> str:
    """The run's sanity report (stages, effective bits, kernel paths, timings, warnings) as text."""
    lines = []
    summary = _get(report, "compression", "summary") or {}
    comp = report.get("compression") or {}
    if comp:
        eb, sp = summary.get("effective_bits"), summary.get("sparsity")
        lines.append(f"**Compression:** weights {fmt_bytes(comp.get('weight_bytes_before'))} -> "
                     f"{fmt_bytes(comp.get('weight_bytes_after'))}"
                     + (f", effective bits {eb:.3f}" if isinstance(eb, int | float) else "")
                     + (f", sparsity {100 * sp:.1f} %" if isinstance(sp, int | float) else ""))
    for s in report.get("stages") or []:
        if isinstance(s, dict):
            secs = s.get("seconds")
            lines.append(f"- stage {s.get('index')}: **{s.get('method')}** ({s.get('kind')}), "
                         f"{s.get('n_modules')} modules" + (f", {secs:.1f} s" if _finite(secs) else ""))
    paths = (report.get("environment") or {}).get("kernel_paths")
    if paths:
        shown = ", ".join(f"{k}: {v}" for k, v in paths.items()) if isinstance(paths, dict) else str(paths)
        lines.append(f"**Kernel paths (compressed model):** {shown}")
    env = {k: v for k, v in (report.get("environment") or {}).items()
           if k != "kernel_paths" and isinstance(v, str | int | float | bool)}
    if env:
        lines.append("**Environment:** " + ", ".join(f"{k} {v}" for k, v in env.items()))
    t = report.get("timings") or {}
    if t:
        cached = " (baseline from cache)" if t.get("baseline_cached") else ""
        lines.append("**Timings:** " + ", ".join(f"{k.removesuffix('_s')} {v:.1f} s" for k, v in t.items()
                                                 if _finite(v)) + cached)
    for w in report.get("warnings") or []:
        lines.append(f"- warning: {w}")
    return "\n\n".join(lines) or "No details in this report."


# -- plots ------------------------------------------------------------------------------------------

BASE_COLOR, COMP_COLOR = "#7c8a9e", "#4f46e5"


def _layout(fig: go.Figure, title: str, **kw) -> go.Figure:
    fig.update_layout(title=title, template="plotly_white", height=330, margin=dict(l=50, r=20, t=50, b=40),
                      legend=dict(orientation="h", y=-0.2), **kw)
    fig.update_annotations(font_size=12)  # subplot titles
    return fig


def memory_plot(report: dict) -> go.Figure:
    """Left: weights and KV cache at the evaluation context (stacked). Right: peak process memory,
    which includes the Python runtime and libraries, so it is shown apart."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.6, 0.4],
                        subplot_titles=("Weights + KV cache", "Peak process memory"))
    ctx_len = _get(report, "settings", "context") or 0
    x = ["baseline", "compressed"]
    sections = [report.get(side) or {} for side in x]
    mib = [(s.get("weight_bytes") or 0) / 2**20 for s in sections]
    kv = [(s.get("kv_bytes_per_token") or 0) * ctx_len / 2**20 for s in sections]
    peak = [None if s.get("peak_memory_bytes") is None else s["peak_memory_bytes"] / 2**20 for s in sections]
    fig.add_bar(name="weights", x=x, y=mib, marker_color=COMP_COLOR, row=1, col=1)
    fig.add_bar(name=f"KV cache ({ctx_len} tokens)", x=x, y=kv, marker_color="#22c55e", row=1, col=1)
    fig.add_bar(name="peak RSS", x=x, y=peak, marker_color="#cbd5e1", row=1, col=2)
    fig.update_yaxes(title_text="MiB", row=1, col=1)
    fig.update_yaxes(title_text="MiB", row=1, col=2)
    return _layout(fig, "Memory (MiB)", barmode="stack")


def throughput_plot(report: dict, projected: bool = False) -> go.Figure:
    fig = go.Figure()
    cats = ["prefill", "decode"]
    for side, color in (("baseline", BASE_COLOR), ("compressed", COMP_COLOR)):
        s = report.get(side) or {}
        fig.add_bar(name=f"{side} (measured)", x=cats, marker_color=color,
                    y=[s.get("prefill_tokens_per_s"), s.get("decode_tokens_per_s")])
        if projected:
            p = _get(report, "projection", side) or {}
            fig.add_bar(name=f"{side} (projected)", x=cats, marker_color=color, opacity=0.45,
                        marker_pattern_shape="/",
                        y=[p.get("prefill_tokens_per_s"), p.get("decode_tokens_per_s")])
    return _layout(fig, "Throughput (tokens/s)", barmode="group", yaxis_title="tokens/s")


def quality_plot(report: dict) -> go.Figure:
    from plotly.subplots import make_subplots

    base, comp = report.get("baseline") or {}, report.get("compressed") or {}
    fig = make_subplots(rows=1, cols=3, subplot_titles=("Perplexity ↓", "Arithmetic %", "KL x100 · top-1 %"))
    x = ["baseline", "compressed"]
    fig.add_bar(x=x, y=[base.get("perplexity"), comp.get("perplexity")], marker_color=[BASE_COLOR, COMP_COLOR],
                row=1, col=1, showlegend=False)
    acc = [base.get("arithmetic_accuracy"), comp.get("arithmetic_accuracy")]
    fig.add_bar(x=x, y=[None if a is None else 100 * a for a in acc], marker_color=[BASE_COLOR, COMP_COLOR],
                row=1, col=2, showlegend=False)
    top1 = comp.get("top1_agreement", comp.get("top1"))
    fig.add_bar(x=["KL x100", "top-1 %"],
                y=[None if comp.get("kld") is None else 100 * comp["kld"], None if top1 is None else 100 * top1],
                marker_color=[COMP_COLOR, COMP_COLOR], row=1, col=3, showlegend=False)
    return _layout(fig, "Quality")


def layer_rows(report: dict) -> list[dict]:
    """Per-layer records of the report, wherever the engine put them."""
    for path in (("layers",), ("per_layer",), ("compression", "layers"), ("details", "layers")):
        rows = _get(report, *path)
        if isinstance(rows, list) and rows:
            return [r for r in rows if isinstance(r, dict)]
    rows = []
    for s in report.get("stages") or _get(report, "compression", "stages", default=[]) or []:
        if isinstance(s, dict):
            for r in s.get("layers") or []:
                if isinstance(r, dict):
                    rows.append({"stage": s.get("method") or s.get("name"), **r})
    return rows


ERROR_KEYS = ("sqnr_db", "rel_error", "relative_error", "mse", "output_error", "weight_error")


def _short_name(name: str) -> str:
    """model.layers.3.self_attn.q_proj -> L3.q_proj"""
    m = re.search(r"layers?\.(\d+)\..*?(\w+)$", name)
    return f"L{m.group(1)}.{m.group(2)}" if m else name.rsplit(".", 1)[-1]


def layer_error_plot(report: dict) -> go.Figure:
    rows = layer_rows(report)
    key = next((k for k in ERROR_KEYS if any(r.get(k) is not None for r in rows)), None)
    fig = go.Figure()
    if not rows or key is None:
        fig.add_annotation(text="No per-layer error in this report", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        return _layout(fig, "Per-layer error")
    by_stage: dict[str, list[dict]] = {}
    for r in rows:
        by_stage.setdefault(f"stage {r.get('stage', '')} {r.get('method', '')}".strip(), []).append(r)
    for label, rs in by_stage.items():
        fig.add_bar(x=[_short_name(str(r.get("name", ""))) for r in rs], y=[r.get(key) for r in rs], name=label)
    title = ("Per-layer SQNR (dB, higher is better)" if key == "sqnr_db"
             else f"Per-layer error ({key})")
    return _layout(fig, title, xaxis_tickangle=-45, xaxis_tickfont_size=9, barmode="group")


QUALITY_AXES = {
    "KL to baseline (lower better)": ("compressed", "kld"),
    "Perplexity (lower better)": ("compressed", "perplexity"),
    "Top-1 agreement (higher better)": ("compressed", "top1_agreement"),
    "Arithmetic accuracy (higher better)": ("compressed", "arithmetic_accuracy"),
}


def pareto_plot(runs: list[dict], quality: str, x_axis: str, selected: list[str] | None = None) -> go.Figure:
    """Memory (or projected speed) against quality over every finished run; the front is drawn."""
    section, key = QUALITY_AXES.get(quality, ("compressed", "kld"))
    pts = []
    for run in runs:
        rep = run.get("report") or {}
        y = _get(rep, section, key)
        if key == "top1_agreement" and y is None:
            y = _get(rep, section, "top1")
        if x_axis.startswith("Projected"):
            x = _get(rep, "projection", "compressed", "decode_tokens_per_s")
        else:
            x = _get(rep, "compressed", "weight_bytes")
            x = None if x is None else x / 2**20
        if not (_finite(x) and _finite(y)):  # NaN/inf cannot be placed, and NaN breaks every comparison
            continue
        pts.append((x, y, run["id"], f"{run.get('model_spec')} · {_recipe_label(rep)}"))
    fig = go.Figure()
    if not pts:
        fig.add_annotation(text="No finished runs with these numbers yet", showarrow=False, x=0.5, y=0.5,
                           xref="paper", yref="paper")
        return _layout(fig, "Pareto: memory vs quality")
    sel = set(selected or [])
    fig.add_scatter(
        x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name="runs",
        text=[f"{p[3]} ({p[2]})" for p in pts], hovertemplate="%{text}<br>x=%{x:.3g}<br>y=%{y:.4g}<extra></extra>",
        marker=dict(size=[14 if p[2] in sel else 9 for p in pts],
                    color=[COMP_COLOR if p[2] in sel else BASE_COLOR for p in pts]),
    )
    front = pareto_front(pts, lower_x=not x_axis.startswith("Projected"), lower_y="lower" in quality)
    fig.add_scatter(x=[p[0] for p in front], y=[p[1] for p in front], mode="lines", name="Pareto front",
                    line=dict(color="#22c55e", dash="dot"))
    xt = "Projected decode tokens/s (projection)" if x_axis.startswith("Projected") else "Weight memory (MiB)"
    return _layout(fig, "Pareto: memory vs quality over the history", xaxis_title=xt, yaxis_title=quality)


def pareto_front(points: list[tuple], lower_x: bool = True, lower_y: bool = True) -> list[tuple]:
    """The non-dominated points of (x, y, ...) tuples: those that no other point matches or beats on both
    axes while beating on one. Sorted best x first; points with a NaN coordinate are left out."""
    sx, sy = (1 if lower_x else -1), (1 if lower_y else -1)
    ok = [p for p in points if not (math.isnan(p[0]) or math.isnan(p[1]))]
    front, best = [], math.inf
    # best x first and, among equal x, best y first: a later point is on the front only if its y is
    # strictly better than every point before it (equal x with a worse y is dominated)
    for p in sorted(ok, key=lambda p: (sx * p[0], sy * p[1])):
        if sy * p[1] < best:
            front.append(p)
            best = sy * p[1]
    return front


# -- history ----------------------------------------------------------------------------------------

HISTORY_COLUMNS = ["run", "finished", "status", "model", "recipe", "hardware", "weights MiB", "weights x",
                   "perplexity", "KL", "top-1 %", "arith %", "decode tok/s", "error"]


def history_rows(runs: list[dict]) -> list[list]:
    rows = []
    for run in runs:
        rep = run.get("report") or {}
        base, comp = rep.get("baseline") or {}, rep.get("compressed") or {}
        w, bw = comp.get("weight_bytes"), base.get("weight_bytes")
        top1 = comp.get("top1_agreement", comp.get("top1"))
        t = run.get("finished_at") or run.get("created_at")
        recipe = run.get("recipe")
        rlabel = _recipe_label({"recipe": recipe}) if recipe is not None else ""
        rows.append([
            run["id"], time.strftime("%m-%d %H:%M", time.localtime(t)) if t else "", run.get("status"),
            run.get("model_spec"), rlabel, run.get("hardware"),
            None if w is None else round(w / 2**20, 3),
            None if not (w and bw) else round(bw / w, 2),
            _round(comp.get("perplexity"), 3), _round(comp.get("kld"), 5),
            None if top1 is None else round(100 * top1, 1),
            None if comp.get("arithmetic_accuracy") is None else round(100 * comp["arithmetic_accuracy"], 1),
            _round(comp.get("decode_tokens_per_s"), 1), (run.get("error") or "")[:160],
        ])
    return rows


def _round(v, n):
    return None if not isinstance(v, int | float) else round(v, n)


# A text cell starting with one of these runs as a formula when a spreadsheet opens the CSV (OWASP's
# "CSV injection"); model ids, recipe names and errors are typed by whoever used the page.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value):
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def runs_csv(runs: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(HISTORY_COLUMNS)
    writer.writerows([_csv_cell(v) for v in row] for row in history_rows(runs))
    return buf.getvalue()


# -- the page ---------------------------------------------------------------------------------------


def has_saved_model(run: dict) -> bool:
    """True when the run's artifact folder holds a loadable model (not just its report)."""
    folder = run.get("artifact_path")
    return bool(folder) and (Path(folder) / "config.json").is_file()


def _owner(request: gr.Request | None) -> str:
    return (getattr(request, "session_hash", None) or "anonymous") if request else "anonymous"


def progress_html(fraction: float | None, text: str, state: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction or 0.0)) * 100
    return (f'<div class="lab-progress {state}" role="progressbar" aria-valuenow="{pct:.0f}" '
            f'aria-valuemin="0" aria-valuemax="100"><div class="lab-bar" style="width:{pct:.1f}%"></div></div>'
            f'<div class="lab-progress-text">{html.escape(text)}</div>')


def describe_progress(p: dict | None, position: int | None, started: float) -> tuple[float, str]:
    if position:
        return 0.0, f"Queued: position {position} (another run is ahead)"
    if not p:
        return 0.0, f"Starting the worker... {time.time() - started:.0f} s"
    stage = p.get("stage", "")
    if p.get("n_stages", 1) > 1:
        stage += f" ({p.get('stage_index', 0) + 1}/{p['n_stages']})"
    if p.get("layer") and p.get("n_layers"):
        stage += f" · layer {p['layer']}/{p['n_layers']}"
    eta = p.get("eta_s")
    eta_text = f" · about {eta:.0f} s left" if isinstance(eta, int | float) else ""
    msg = f" · {p['message']}" if p.get("message") else ""
    return float(p.get("fraction") or 0.0), f"{100 * (p.get('fraction') or 0):.0f} % · {stage}{eta_text}{msg}"


def build_app(manager: JobManager, ask_manager: JobManager | None = None) -> gr.Blocks:
    """The whole page. `manager` runs compressions; `ask_manager` answers free prompts
    (target compressor.runs.ask:answer).

    The HTTP API (gradio_client, /gradio_api/info) is what a script needs: run, cancel, ask, show_run,
    check_recipe, history, export_csv, export_json, download_model. Every other listener only keeps
    the page in step (forms, notes, plots) and is api_visibility="private": hidden and refused to clients.
    """
    presets = preset_choices()
    names = [v for _, v in presets]
    default_preset = DEFAULT_PRESET if DEFAULT_PRESET in names else (names[0] if names else None)
    try:
        default_yaml = recipe_yaml(default_preset) if default_preset else ""
    except Exception as e:
        log.warning("preset %s cannot be shown: %s", default_preset, e)
        default_yaml = ""
    methods = method_specs()
    eval_mod = _engine("measure.evaluate")
    eval_defaults = eval_mod.EvalSettings().to_dict() if eval_mod else {}
    hw_choices = hardware_choices()
    model_choices = [DEMO_CHOICE] + [(f"{m} (needs internet)", m) for m in CURATED_HUB]

    with gr.Blocks(title="Compression Lab", analytics_enabled=False) as demo:
        run_id_state = gr.State(None)
        gr.HTML('<div class="lab-header"><h1>Compression Lab</h1><p>Compress a language model and compare it '
                "side by side with the original: generations, memory, speed and quality, for the hardware "
                "you choose.</p></div>")
        with gr.Row(equal_height=False, elem_classes="lab-main"):
            # ---------------- settings column ----------------
            with gr.Column(scale=2, min_width=300, elem_classes="lab-settings"):
                model = gr.Dropdown(model_choices, value="demo", allow_custom_value=True, label="Model",
                                    info="The demo model works offline. Type any hub id (org/name) or a local "
                                    "folder to use another model.", elem_id="lab-model")
                model_note = gr.Markdown(elem_classes="lab-note")
                with gr.Tabs():
                    with gr.Tab("Preset"):
                        preset = gr.Dropdown(presets, value=default_preset, label="Preset recipe",
                                             elem_id="lab-preset")
                    with gr.Tab("Stage builder"):
                        method = gr.Dropdown(sorted(methods), value=next(iter(sorted(methods)), None),
                                             label="Method", elem_id="lab-method")
                        method_help = gr.Markdown(elem_classes="lab-note")
                        groups, forms = {}, {}
                        for name in sorted(methods):
                            with gr.Group(visible=(name == next(iter(sorted(methods)), None))) as grp:
                                forms[name] = form_fields(methods[name].config_cls)
                            groups[name] = grp
                        with gr.Row():
                            add_stage = gr.Button("Add stage to recipe", variant="secondary", size="sm")
                            clear_stages = gr.Button("Start a new recipe", size="sm")
                    with gr.Tab("YAML"):
                        gr.Markdown("The recipe that runs. Edit it here, or upload a .yaml file.",
                                    elem_classes="lab-note")
                        with gr.Row():
                            upload = gr.UploadButton("Upload YAML", file_types=[".yaml", ".yml", ".json"],
                                                     size="sm")
                            download_yaml = gr.DownloadButton("Download YAML", size="sm")
                            check_btn = gr.Button("Check recipe", size="sm")
                recipe_box = gr.Code(default_yaml, language="yaml", label="Recipe (YAML)", lines=8,
                                     elem_id="lab-recipe")
                recipe_status = gr.Markdown(elem_classes="lab-note")
                hardware = gr.Dropdown(hw_choices, value=hw_choices[0][1], label="Hardware profile",
                                       info="Other profiles are projected from a roofline model.",
                                       elem_id="lab-hardware")
                with gr.Accordion("Evaluation settings", open=False):
                    eval_inputs = []
                    for key, (label, lo, hi) in EVAL_FIELDS.items():
                        default = int(min(max(eval_defaults.get(key, lo), lo), hi))
                        eval_inputs.append(gr.Slider(lo, hi, value=default, step=1, label=label))
                with gr.Row():
                    run_btn = gr.Button("Run comparison", variant="primary", elem_id="lab-run")
                    cancel_btn = gr.Button("Cancel", variant="stop", elem_id="lab-cancel")
                progress = gr.HTML(progress_html(0, "Ready. Pick a preset and press Run.", "idle"),
                                   elem_id="lab-progress")
                status = gr.Markdown(elem_id="lab-status")
            # ---------------- results column ----------------
            with gr.Column(scale=3, min_width=300, elem_classes="lab-results"):
                with gr.Tabs():
                    with gr.Tab("Comparison"):
                        cards = gr.HTML('<div class="lab-empty">Results appear here after a run.</div>',
                                        elem_id="lab-cards")
                        samples = gr.HTML(elem_id="lab-samples-box")
                        with gr.Group():
                            prompt = gr.Textbox(label="Your prompt: both models answer it",
                                                placeholder="27+58=", lines=2, max_lines=6, elem_id="lab-prompt")
                            ask_btn = gr.Button("Ask both models", size="sm")
                            with gr.Row():
                                ans_base = gr.Textbox(label="Baseline", interactive=False, lines=3)
                                ans_comp = gr.Textbox(label="Compressed", interactive=False, lines=3)
                    with gr.Tab("Plots"):
                        show_projected = gr.Checkbox(False, label="Show projected speed (hardware profile)")
                        with gr.Row():
                            mem_plot = gr.Plot(label="Memory", elem_classes="lab-plot")
                            thr_plot = gr.Plot(label="Throughput", elem_classes="lab-plot")
                        with gr.Row():
                            q_plot = gr.Plot(label="Quality", elem_classes="lab-plot")
                            layer_plot = gr.Plot(label="Per-layer error", elem_classes="lab-plot")
                    with gr.Tab("Hardware (projection)"):
                        hw_panel = gr.HTML('<div class="lab-empty">Run a comparison to see whether it fits.</div>')
                        details = gr.Markdown()
                    with gr.Tab("History"):
                        with gr.Row():
                            refresh = gr.Button("Refresh", size="sm")
                            export_csv = gr.DownloadButton("Export CSV", size="sm")
                            export_json = gr.DownloadButton("Export JSON", size="sm")
                        history = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True,
                                               label="Runs (newest first)", elem_id="lab-history")
                        compare_pick = gr.Dropdown([], multiselect=True, label="Pick runs to compare")
                        compare_table = gr.Dataframe(headers=HISTORY_COLUMNS, interactive=False, wrap=True,
                                                     label="Selected runs")
                        with gr.Row():
                            pareto_quality = gr.Dropdown(list(QUALITY_AXES), value=next(iter(QUALITY_AXES)),
                                                         label="Quality axis")
                            pareto_x = gr.Radio(["Weight memory", "Projected decode tokens/s"],
                                                value="Weight memory", label="x axis")
                        pareto = gr.Plot(label="Pareto")
                        with gr.Row():
                            show_run = gr.Dropdown([], label="Show a run's results above")
                            model_pick = gr.Dropdown([], label="Download a compressed model")
                        model_file = gr.File(label="Compressed model (.zip)", interactive=False)
                    with gr.Tab("How to read this"):
                        gr.Markdown(HOW_TO_READ)
                with gr.Accordion("Raw report (JSON)", open=False):
                    report_json = gr.JSON(label="Report")
                    run_log = gr.Textbox(label="Log", lines=6, max_lines=20, interactive=False)

        result_outputs = [cards, samples, mem_plot, thr_plot, q_plot, layer_plot, hw_panel, details, report_json]

        def results_for(report: dict, projected: bool) -> list:
            return [metric_cards_html(report), samples_html(report), memory_plot(report),
                    throughput_plot(report, projected), quality_plot(report), layer_error_plot(report),
                    hardware_html(report), details_markdown(report), report]

        # ---------------- model ----------------
        def on_model(spec: str):
            spec = (spec or "").strip()
            if spec == "demo":
                return "Bundled model, offline. A run on it takes about a minute on 2 CPU cores."
            if not spec:
                return "Pick a model."
            from compressor.models.loading import HUB_ID

            if spec.startswith(("/", ".", "~")):
                return f"Local folder `{spec}`: it must hold a model saved with save_pretrained (safetensors)."
            if HUB_ID.match(spec):
                from compressor.models.loading import hub_reachable

                if not hub_reachable(timeout=1.5):
                    return (f"`{spec}` needs internet, and the Hugging Face Hub is not reachable from this "
                            "machine. Use the demo model or a local folder.")
                return f"`{spec}` is downloaded from the Hugging Face Hub on the first run (needs internet)."
            return f"`{spec}` is neither 'demo', a hub id like org/name, nor a local folder path."

        model.change(on_model, model, model_note, show_progress="hidden", api_visibility="private")

        # ---------------- recipe ----------------
        def on_preset(name: str):
            if not name:
                return gr.update(), ""
            try:
                return recipe_yaml(name), f"Preset **{name}** loaded into the recipe editor."
            except Exception as e:
                return gr.update(), f"Preset {name!r} cannot be loaded: {e}"

        preset.input(on_preset, preset, [recipe_box, recipe_status], api_visibility="private")

        method_names = sorted(methods)
        all_form_inputs = [f.component for name in method_names for f in forms[name]]

        def on_method(name: str):
            spec = methods.get(name)
            doc = ((spec.config_cls.__doc__ or "").strip().split("\n\n")[0] if spec else "")
            cal = " Needs calibration data (runs layer by layer)." if spec and spec.needs_calibration else ""
            help_text = f"**{name}** ({spec.kind}).{cal} {doc}" if spec else ""
            return [help_text] + [gr.update(visible=(n == name)) for n in method_names]

        if method_names:
            method_outputs = [method_help] + [groups[n] for n in method_names]
            method.change(on_method, method, method_outputs, api_visibility="private")
            demo.load(on_method, method, method_outputs, api_visibility="private")

        def on_add_stage(name: str, text: str, *values):
            if name not in methods:
                raise gr.Error(f"Pick a method first (known: {', '.join(method_names)}).")
            offset = sum(len(forms[n]) for n in method_names[: method_names.index(name)])
            mine = list(values[offset : offset + len(forms[name])])
            try:
                stage = stage_from_form(name, forms[name], mine)
                new_text = with_stage(text, stage)
                check_recipe(parse_recipe_text(new_text))
            except LabError as e:
                raise gr.Error(str(e), print_exception=False) from None
            return new_text, f"Added a **{name}** stage. The recipe now has " \
                f"{len(stages_of(parse_recipe_text(new_text)))} stage(s)."

        add_stage.click(on_add_stage, [method, recipe_box] + all_form_inputs, [recipe_box, recipe_status],
                        api_visibility="private")
        clear_stages.click(lambda: ("stages: []\n", "Empty recipe: add stages with the builder."),
                           None, [recipe_box, recipe_status], api_visibility="private")

        def on_upload(file):
            if file is None:
                return gr.update(), ""
            path = Path(file if isinstance(file, str) else file.name)
            if path.stat().st_size > 200_000:
                raise gr.Error(f"{path.name} is {path.stat().st_size:,} bytes; a recipe is at most 200 kB.")
            try:
                text = path.read_text(encoding="utf-8")
                parsed = parse_recipe_text(text)
                check_recipe(parsed)
            except UnicodeDecodeError:
                raise gr.Error(f"{path.name} is not a UTF-8 text file.", print_exception=False) from None
            except LabError as e:
                return text if "text" in locals() else gr.update(), f"Uploaded, but: {e}"
            return text, f"Uploaded **{path.name}**: recipe is valid."

        upload.upload(on_upload, upload, [recipe_box, recipe_status], api_visibility="private")

        def on_download_yaml(text: str):
            name = "recipe"
            try:
                parsed = parse_recipe_text(text)
                if isinstance(parsed, dict) and parsed.get("name"):
                    name = re.sub(r"[^\w.+-]", "_", str(parsed["name"]))[:60]
            except LabError:
                pass
            path = Path(tempfile.mkdtemp(prefix="lab-recipe-")) / f"{name}.yaml"
            path.write_text(text or "", encoding="utf-8")
            return str(path)

        recipe_box.change(on_download_yaml, recipe_box, download_yaml, show_progress="hidden",
                          api_visibility="private")
        demo.load(on_download_yaml, recipe_box, download_yaml, api_visibility="private")

        def on_check(text: str):
            try:
                parsed = parse_recipe_text(text)
                recipe = check_recipe(parsed)
            except LabError as e:
                return f"**Recipe problem:** {e}"
            # a preset name has its stages in the engine's Recipe only
            n = len(recipe.stages) if recipe is not None else len(stages_of(parsed))
            return f"Recipe is valid: {n} stage(s)."

        check_btn.click(on_check, recipe_box, recipe_status, api_name="check_recipe")

        # ---------------- run ----------------
        def make_payload(spec, text, hw, *eval_values) -> dict:
            spec = (spec or "").strip()
            if not spec:
                raise LabError("no model given: pick 'demo' or type a hub id or a local folder")
            parsed = parse_recipe_text(text)
            check_recipe(parsed)
            settings = {}
            for (key, (label, lo, hi)), v in zip(EVAL_FIELDS.items(), eval_values, strict=True):
                if v is None or not lo <= float(v) <= hi:
                    raise LabError(f"{label} = {v!r} is out of range: use {lo} to {hi}")
                settings[key] = int(v)
            if eval_mod is not None:
                settings = {k: v for k, v in settings.items() if k in eval_defaults}
                if "stride" in eval_defaults:
                    settings["stride"] = max(8, min(eval_defaults["stride"], settings.get("context", 256) // 2))
                eval_mod.EvalSettings.from_dict(settings)  # raises a LabError naming the bad setting
            return {"model": spec, "recipe": parsed, "hardware": hw or "this-machine", "eval": settings}

        def run_clicked(spec, text, hw, projected, *eval_values, request: gr.Request = None):
            blank = [gr.update()] * len(result_outputs)
            try:
                payload = make_payload(spec, text, hw, *eval_values)
                if ZERO_GPU:
                    yield [None, progress_html(0.05, "Running on ZeroGPU (no live progress)..."), "", ""] + blank
                    run_id = run_inline_on_gpu(manager, payload, _owner(request))
                else:
                    run_id = manager.submit(payload, _owner(request))
            except LabError as e:
                gr.Warning(str(e))
                yield [None, progress_html(0, "Not started.", "failed"), f"**Cannot start:** {e}", ""] + blank
                return
            started = time.time()
            yield [run_id, progress_html(0, "Queued..."), f"Run `{run_id}` submitted.", ""] + blank
            since = 0
            while True:
                events = manager.events(run_id, since=since, timeout=POLL_S)
                if events:
                    since = events[-1]["index"] + 1
                state = manager.status(run_id)
                if state in FINAL_STATUSES or state is None:
                    break
                frac, text_ = describe_progress(manager.latest_progress(run_id), manager.position(run_id), started)
                yield [run_id, progress_html(frac, text_), f"Run `{run_id}` is {state}.", gr.update()] + blank
            run = manager.get_run(run_id) or {"status": "failed", "error": "the run disappeared from the store"}
            took = time.time() - started
            log_text = run.get("log") or ""
            if run["status"] == SUCCEEDED and run.get("report"):
                msg = f"Run `{run_id}` finished in {took:.0f} s."
                yield ([run_id, progress_html(1, f"Done in {took:.0f} s.", "done"), msg, log_text]
                       + results_for(run["report"], projected))
                return
            error = run.get("error") or run["status"]
            if run["status"] != "cancelled":
                gr.Warning(f"Run {run_id} {run['status']}: {error}")
            yield [run_id, progress_html(0, f"{run['status'].title()}.", "failed"),
                   f"**Run `{run_id}` {run['status']}:** {html.escape(error)}", log_text] + blank

        run_event = run_btn.click(
            run_clicked, [model, recipe_box, hardware, show_projected] + eval_inputs,
            [run_id_state, progress, status, run_log] + result_outputs,
            api_name="run", concurrency_limit=None, show_progress="hidden",
        )

        def cancel_clicked(run_id, request: gr.Request = None):
            if not run_id:
                return "Nothing is running."
            try:
                ok = manager.cancel(run_id, owner=_owner(request))
            except LabError as e:
                return f"Cannot cancel: {e}"
            return f"Cancelling run `{run_id}`..." if ok else f"Run `{run_id}` has already finished."

        cancel_btn.click(cancel_clicked, run_id_state, status, api_name="cancel")

        # ---------------- free prompt ----------------
        def ask_clicked(run_id, text):
            if ask_manager is None:
                raise gr.Error("Free prompts are off in this app instance.", print_exception=False)
            if not run_id:
                raise gr.Error("Run a comparison first (or pick a run in History): the prompt goes to its "
                               "compressed model.", print_exception=False)
            if not (text or "").strip():  # refused here too, so no worker starts for nothing
                raise gr.Error("The prompt is empty: type a few words (e.g. 27+58=) for both models to continue.",
                               print_exception=False)
            run = manager.get_run(run_id) or {}
            if run.get("status") != SUCCEEDED:
                raise gr.Error(f"Run {run_id} is {run.get('status')}: only a finished run can answer.",
                               print_exception=False)
            payload = {"model": run.get("model_spec") or "demo", "recipe": run.get("recipe"),
                       "artifact": run.get("artifact_path"), "prompt": text, "max_new_tokens": 32}
            try:
                ask_id = ask_manager.submit(payload, owner="prompt-box")
            except LabError as e:
                raise gr.Error(f"Cannot ask: {e}", print_exception=False) from None
            try:
                done = ask_manager.wait(ask_id, timeout=ASK_TIMEOUT_S)
            except TimeoutError:
                ask_manager.cancel(ask_id)
                raise gr.Error(f"No answer within {ASK_TIMEOUT_S} s; try a shorter prompt.") from None
            if done["status"] != SUCCEEDED:
                raise gr.Error(f"Could not answer: {done.get('error')}", print_exception=False)
            rep = done["report"]
            return rep.get("baseline", ""), rep.get("compressed", "")

        ask_btn.click(ask_clicked, [run_id_state, prompt], [ans_base, ans_comp], api_name="ask")
        prompt.submit(ask_clicked, [run_id_state, prompt], [ans_base, ans_comp], api_visibility="private")

        # ---------------- history ----------------
        def all_runs() -> list[dict]:
            return manager.list_runs(limit=200)

        def refresh_history(selected, quality, x_axis):
            runs = all_runs()
            ids = [r["id"] for r in runs]
            done = [r["id"] for r in runs if r["status"] == SUCCEEDED]
            with_model = [r["id"] for r in runs if has_saved_model(r)]
            selected = [s for s in (selected or []) if s in ids]
            picked = [r for r in runs if r["id"] in selected]
            return (history_rows(runs), gr.update(choices=ids, value=selected), history_rows(picked),
                    pareto_plot(runs, quality, x_axis, selected), gr.update(choices=done),
                    gr.update(choices=with_model))

        history_outputs = [history, compare_pick, compare_table, pareto, show_run, model_pick]
        history_inputs = [compare_pick, pareto_quality, pareto_x]
        refresh.click(refresh_history, history_inputs, history_outputs, api_name="history")
        demo.load(refresh_history, history_inputs, history_outputs, api_visibility="private")
        run_event.then(refresh_history, history_inputs, history_outputs, api_visibility="private")
        for comp in (compare_pick, pareto_quality, pareto_x):
            comp.input(refresh_history, history_inputs, history_outputs, api_visibility="private")

        def on_show_run(run_id, projected):
            run = manager.get_run(run_id) if run_id else None
            if not run or not run.get("report"):
                return [gr.update()] * (1 + len(result_outputs))
            return [run_id] + results_for(run["report"], projected)

        show_run.input(on_show_run, [show_run, show_projected], [run_id_state] + result_outputs, api_name="show_run")

        def on_projected(run_id, projected):
            run = manager.get_run(run_id) if run_id else None
            if not run or not run.get("report"):
                return gr.update()
            return throughput_plot(run["report"], projected)

        show_projected.change(on_projected, [run_id_state, show_projected], thr_plot, api_visibility="private")

        export_dir = Path(tempfile.mkdtemp(prefix="lab-export-"))

        def on_export(fmt: str):
            runs = all_runs()
            path = export_dir / f"compression-lab-runs.{fmt}"
            if fmt == "csv":
                path.write_text(runs_csv(runs), encoding="utf-8")
            else:
                keep = ("id", "status", "model_spec", "recipe", "hardware", "eval_settings", "created_at",
                        "finished_at", "report", "error")
                path.write_text(json.dumps([{k: r.get(k) for k in keep} for r in runs], indent=1), encoding="utf-8")
            return str(path)

        export_csv.click(lambda: on_export("csv"), None, export_csv, api_name="export_csv")
        export_json.click(lambda: on_export("json"), None, export_json, api_name="export_json")

        def on_model_pick(run_id):
            run = manager.get_run(run_id) if run_id else None
            if not run or not has_saved_model(run):
                raise gr.Error(f"Run {run_id} has no compressed model on disk (none was saved, or it was "
                               "removed to save space).", print_exception=False)
            folder = Path(run["artifact_path"])
            base = export_dir / f"compressed-{run_id}"
            return shutil.make_archive(str(base), "zip", root_dir=folder)

        model_pick.input(on_model_pick, model_pick, model_file, api_name="download_model")
    return demo


# -- launch -----------------------------------------------------------------------------------------


def launch_kwargs() -> dict:
    """Theme and CSS (Gradio 6 takes them at launch)."""
    return {"theme": gr.themes.Soft(primary_hue="indigo"), "css_paths": [STATIC / "lab.css"]}


def make_managers(data_dir: str | Path | None = None) -> tuple[JobManager, JobManager]:
    """The compression job manager and the free-prompt one (its own small store under the data folder)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    manager = JobManager(data_dir, concurrency=1, time_limit_s=TIME_LIMIT_S, max_queued_per_owner=3)
    ask_manager = JobManager(data_dir / "prompt-box", target="compressor.runs.ask:answer", concurrency=1,
                             time_limit_s=ASK_TIMEOUT_S)
    return manager, ask_manager


def serve(data_dir: str | Path | None = None, *, host: str = "127.0.0.1", port: int | None = None,
          block: bool = True, quiet: bool = False) -> tuple[gr.Blocks, str, tuple[JobManager, JobManager]]:
    """Builds and launches the app; returns (demo, local url, managers). With block=False (tests) the
    caller stops it with `stop(demo, managers)`."""
    managers = make_managers(data_dir)
    demo = build_app(*managers)
    demo.queue(default_concurrency_limit=4)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=not block, quiet=quiet,
                            **launch_kwargs())
    return demo, url, managers


def stop(demo: gr.Blocks, managers: tuple[JobManager, ...]) -> None:
    demo.close()
    for m in managers:
        m.shutdown()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if ON_SPACE else "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    demo, _, managers = serve(host=host, port=port, block=False)
    try:
        demo.block_thread()
    finally:
        stop(demo, managers)


if __name__ == "__main__":
    main()
