"""`python -m compressor run`: compress a model with a recipe, measure baseline and compressed, project.

The flags become a RunRequest through `request_from_args`, the same request the page and a job
payload make for the same settings (`RunRequest.from_dict`); the Report is printed by its attributes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from compressor.cli.export import add_run_flags, check_run_export, export_after_run, model_folder
from compressor.engine.bounds import read_recipe_file
from compressor.errors import LabError
from compressor.measure.settings import DEFAULT_PRESET, PRESETS
from compressor.runs.contract import PROJECTION_CONTEXT, Report, RunRequest
from compressor.runs.format import fmt, fmt_change, fmt_interval, fmt_kl, fmt_num, fmt_pct, fmt_rate
from compressor.runs.speedfacts import speed_comparison

# flag -> eval setting; flags left out keep EvalSettings' defaults (the stride: half the context)
EVAL_FLAGS = {"samples": "arithmetic_samples", "context": "context", "max_new_tokens": "max_new_tokens",
              "ppl_tokens": "ppl_tokens"}


def add_parser(sub) -> None:
    r = sub.add_parser("run", help="compress a model with a recipe and measure baseline vs compressed")
    r.add_argument("--model", default="demo", help="'demo', a local folder or a hub id")
    r.add_argument("--recipe", required=True, help="preset name, .yaml/.json file, or YAML/JSON text")
    r.add_argument("--hardware", default="this-machine", help="profile id for the projection (see `hardware`)")
    r.add_argument("--json", type=Path, help="write the full report here (checked before the run starts)")
    r.add_argument("--eval", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="evaluation preset: quick (seconds on a small model), standard, thorough (for reports); "
                        "the flags below change single settings of it")
    r.add_argument("--samples", type=int, help="arithmetic problems to score")
    r.add_argument("--context", type=int, help="perplexity window in tokens (stride = context / 2)")
    r.add_argument("--max-new-tokens", type=int, help="tokens generated per side-by-side sample")
    r.add_argument("--ppl-tokens", type=int, help="held-out tokens scored for perplexity and KL")
    r.add_argument("--device", default="cpu")
    r.add_argument("--projection-context", type=int, default=PROJECTION_CONTEXT)
    r.add_argument("--projection-batch", type=int, default=1)
    r.add_argument("--no-cache", action="store_true", help="measure the baseline again instead of using the cache")
    r.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (only for sources you trust)")
    r.add_argument("--trust-remote-code", action="store_true", help="run model code from the repository")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    add_run_flags(r)
    r.set_defaults(func=cmd_run)


def recipe_arg(value: str) -> str:
    """--recipe as the text a request takes: a .yaml/.yml/.json file's contents (read as bounded UTF-8
    text), else the value itself (a preset name, YAML or JSON)."""
    if "\n" not in value and value.strip().endswith((".yaml", ".yml", ".json")):
        return read_recipe_file(value.strip())  # YAML reads JSON too
    return value


def request_from_args(args: argparse.Namespace) -> RunRequest:
    """The RunRequest of `run`'s flags: the job payload the page sends for the same settings."""
    evald = {name: getattr(args, flag) for flag, name in EVAL_FLAGS.items() if getattr(args, flag) is not None}
    payload = {"model": args.model, "recipe": recipe_arg(args.recipe), "hardware": args.hardware,
               "eval": {"preset": getattr(args, "eval", DEFAULT_PRESET), **evald},
               "device": args.device, "projection_context": args.projection_context,
               "projection_batch": args.projection_batch, "allow_pickle": args.allow_pickle,
               "trust_remote_code": args.trust_remote_code}
    return RunRequest.from_dict(payload)


def check_output_file(path: Path) -> None:
    """LabError unless a file can be written at `path`: checked before the run, so a long run does not
    end in a failed write. Creates nothing that stays (a probe file in the folder is removed at once)."""
    if path.is_dir():
        raise LabError(f"--json {path} is a folder: give a file name, e.g. {path / 'report.json'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the folders --json would create
        folder = folder.parent
    if not folder.is_dir():
        raise LabError(f"--json {path}: {folder} is a file, not a folder: choose another path")
    if path.exists() and not os.access(path, os.W_OK):
        raise LabError(f"--json {path} exists and is not writable: choose another path or change its permissions")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lab-write-check-"):
            pass
    except OSError as e:
        raise LabError(f"--json {path}: cannot write in {folder} ({e.strerror or e}): choose a writable "
                       "folder") from None


def cmd_run(args) -> int:
    from compressor.runs.context import BaselineCache
    from compressor.runs.runner import run

    def progress(p):
        if not args.quiet:
            layer = f" layer {p.layer}/{p.n_layers}" if p.layer else ""
            print(f"[{100 * p.fraction:5.1f}%] {p.stage}{layer} {p.message}", file=sys.stderr)

    request = request_from_args(args)  # bad flags fail here, before the model loads
    if args.json:
        check_output_file(args.json)
    export_fmt = check_run_export(args, request)  # --export/--out: format, folder, recipe, config
    cache = None if args.no_cache else BaselineCache.local()
    with model_folder(export_fmt) as save_dir:  # a temporary folder for --export's model, else None
        report = run(request, cache=cache, progress=progress, save_dir=save_dir,
                     log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)))
        print(format_report(report))
        status = export_after_run(save_dir, export_fmt, args.out, report) if save_dir else 0
    if args.json:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report.to_dict(), indent=2))
        except OSError as e:  # the disk filled up during the run, the folder went away
            print(f"error: the report could not be written to {args.json} ({e.strerror or e}); the table above "
                  "is the run's result", file=sys.stderr)
            return 1
        print(f"\nreport written to {args.json}")
    return status


# label, Measurement attribute, figure kind (compressor/runs/format.py)
ROWS = (("weight bytes", "weight_bytes", "bytes"), ("perplexity", "perplexity", "num"),
        ("arithmetic exact match", "arithmetic_accuracy", "pct"), ("KL to baseline (nats)", "kld", "kl"),
        ("top-1 agreement", "top1_agreement", "pct"), ("prefill tokens/s", "prefill_tokens_per_s", "rate"),
        ("decode tokens/s (batch 1)", "decode_tokens_per_s", "rate"),
        ("time to first token", "time_to_first_token_s", "latency"),
        ("peak memory (RSS)", "peak_memory_bytes", "bytes"), ("KV bytes per token", "kv_bytes_per_token", "bytes"))


def attribution_table(report: Report) -> str:
    """Per-stage quality of a stacked recipe: value after each stage and the change it caused."""
    def cell(row, key, kind):
        v = row.after.get(key)
        return "n/a" if v is None else f"{fmt(v, kind)} ({fmt_change(row.delta.get(key), kind) or 'n/a'})"

    b = report.baseline
    lines = ["quality after each stage (change caused by the stage):",
             f"  {'stage':<22}{'perplexity':>20}{'KL to baseline':>22}{'arithmetic':>20}",
             f"  {'baseline':<22}{fmt_num(b.perplexity, 3):>20}{fmt_kl(0.0):>22}{fmt_pct(b.arithmetic_accuracy):>20}"]
    for row in report.attribution:
        lines.append(f"  {f'{row.index} {row.method}':<22}{cell(row, 'perplexity', 'num'):>20}"
                     f"{cell(row, 'kld', 'kl'):>22}{cell(row, 'arithmetic_accuracy', 'pct'):>20}")
        if row.note:
            lines.append(f"    note: {row.note}")
    return "\n".join(lines)


def format_report(report: Report) -> str:
    """The readable table printed after a run."""
    from compressor.runs.projection import projection_lines

    b, c = report.baseline, report.compressed
    cached = " (baseline quality from the cache)" if report.timings.baseline_cached else ""
    lines = [f"model {report.model.spec} ({report.model.n_params:,} parameters), "
             f"recipe {', '.join(s.method for s in report.request.recipe.stages)}, "
             f"compressed in {fmt(report.timings.compress_s, 'duration')}, "
             f"evaluation preset {report.request.eval.preset}{cached}", ""]
    w = max(len(r[0]) for r in ROWS) + 2
    lines.append(f"{'':<{w}}{'baseline':>14}{'compressed':>14}")
    for label, attr, kind in ROWS:
        lines.append(f"{label:<{w}}{fmt(getattr(b, attr), kind):>14}{fmt(getattr(c, attr), kind):>14}")
    if b.arithmetic and c.arithmetic and c.arithmetic.n:
        lines.append(f"arithmetic 95% CI: baseline {fmt_interval(b.arithmetic.ci95)}, compressed "
                     f"{fmt_interval(c.arithmetic.ci95)}, paired difference {fmt_interval(c.arithmetic_diff_ci95, 'pts')}"
                     f" (n={c.arithmetic.n})")
    speed = speed_comparison(report)
    if speed is not None:
        lines.append(speed.sentence())
    q = c.quality
    if q:
        lines.append(f"perplexity over {q.n_tokens} tokens, window {q.context}, stride {q.stride}; "
                     f"kernel paths: {c.kernel_paths or 'dense torch'}")
    if report.attribution:
        lines += ["", attribution_table(report)]
    p = report.projection
    if p is not None:
        lines += ["", f"[{p.label}] hardware {p.hardware.id}"] + [f"  {t}" for t in projection_lines(report)]
        lines += [f"  warning: {warning}" for warning in p.compressed.warnings]
        for name, chk in (p.check_against_measured or {}).items():
            ratio = f"x{chk.ratio:.2f}" if chk.ratio is not None else "n/a"
            lines.append(f"  {name}: projected decode {fmt_rate(chk.projected_decode_tokens_per_s)} tok/s vs measured "
                         f"{fmt_rate(chk.measured_decode_tokens_per_s)} tok/s ({ratio})")
    lines += ["", "samples (greedy):"]
    for s in report.samples[:3]:
        lines.append(f"  {s.prompt!r}\n    baseline:   {s.baseline!r}\n    compressed: {s.compressed!r}")
    for extra, res in (b.online or {}).items():
        lines.append(f"online {extra}: {res.get('status') if isinstance(res, dict) else res}")
    return "\n".join(lines)
