"""Command line: `python -m compressor run|presets|hardware`.

    python -m compressor run --model demo --recipe gptq-w4-g128 [--hardware t4] [--json out.json]
    python -m compressor presets
    python -m compressor hardware

Exit status: 0 on success, 2 on bad input (the message says what to change), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from compressor.errors import LabError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 on usage errors too; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m compressor", description="Compression Lab: compress, measure, project.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="compress a model with a recipe and measure baseline vs compressed")
    r.add_argument("--model", default="demo", help="'demo', a local folder or a hub id")
    r.add_argument("--recipe", required=True, help="preset name, .yaml/.json file, or YAML/JSON text")
    r.add_argument("--hardware", default="this-machine", help="profile id for the projection (see `hardware`)")
    r.add_argument("--json", type=Path, help="write the full report here")
    r.add_argument("--samples", type=int, help="arithmetic problems to score (default 100)")
    r.add_argument("--context", type=int, help="perplexity window in tokens (stride = context / 2)")
    r.add_argument("--max-new-tokens", type=int, help="tokens generated per side-by-side sample")
    r.add_argument("--ppl-tokens", type=int, help="held-out tokens scored for perplexity and KL")
    r.add_argument("--device", default="cpu")
    r.add_argument("--projection-context", type=int, default=2048)
    r.add_argument("--projection-batch", type=int, default=1)
    r.add_argument("--no-cache", action="store_true", help="measure the baseline again instead of using the cache")
    r.add_argument("--allow-pickle", action="store_true", help="allow pickle weights (only for sources you trust)")
    r.add_argument("--trust-remote-code", action="store_true", help="run model code from the repository")
    r.add_argument("--quiet", action="store_true", help="no progress lines")
    sub.add_parser("presets", help="list recipe presets")
    sub.add_parser("hardware", help="list hardware profiles")
    return p


def _fmt(x, kind: str = "") -> str:
    if x is None:
        return "-"
    if kind == "bytes":
        from compressor.measure.hardware import human_bytes

        return human_bytes(x)
    if kind == "pct":
        return f"{100 * x:.1f}%"
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 1e4 else f"{x:,.0f}"
    return str(x)


ROWS = (("weight bytes", "weight_bytes", "bytes"), ("perplexity", "perplexity", ""),
        ("arithmetic exact match", "arithmetic_accuracy", "pct"), ("KL to baseline (nats)", "kld", ""),
        ("top-1 agreement", "top1_agreement", "pct"), ("prefill tokens/s", "prefill_tokens_per_s", ""),
        ("decode tokens/s (batch 1)", "decode_tokens_per_s", ""),
        ("time to first token (s)", "time_to_first_token_s", ""), ("peak memory (RSS)", "peak_memory_bytes", "bytes"),
        ("KV bytes per token", "kv_bytes_per_token", ""))


def attribution_table(rows: list[dict], baseline: dict) -> str:
    """Per-stage quality of a stacked recipe: value after each stage and the change it caused."""
    def cell(r, key, kind):
        v, dv = r.get(key), r.get(f"delta_{key}")
        if v is None:
            return "n/a"
        if kind == "pct":
            return f"{100 * v:.1f}%" + (f" ({100 * dv:+.1f})" if dv is not None else "")
        return f"{v:.{kind}f}" + (f" ({dv:+.{kind}f})" if dv is not None else "")

    lines = ["quality after each stage (change caused by the stage):",
             f"  {'stage':<22}{'perplexity':>20}{'KL to baseline':>22}{'arithmetic':>18}",
             f"  {'baseline':<22}{baseline.get('perplexity') or float('nan'):>20.3f}{0.0:>22.4f}"
             f"{_fmt(baseline.get('arithmetic_accuracy'), 'pct'):>18}"]
    for r in rows:
        name = f"{r['index']} {r['method']}"
        lines.append(f"  {name:<22}{cell(r, 'perplexity', 3):>20}{cell(r, 'kld', 4):>22}"
                     f"{cell(r, 'arithmetic_accuracy', 'pct'):>18}")
        if r.get("note"):
            lines.append(f"    note: {r['note']}")
    return "\n".join(lines)


def format_report(d: dict) -> str:
    """The readable table printed after a run."""
    b, c = d["baseline"], d["compressed"]
    lines = [f"model {d['model']['spec']} ({d['model']['n_params']:,} parameters), "
             f"recipe {', '.join(s['method'] for s in d['recipe']['stages'])}, "
             f"compressed in {d['compress_seconds']:.1f} s", ""]
    w = max(len(r[0]) for r in ROWS) + 2
    lines.append(f"{'':<{w}}{'baseline':>14}{'compressed':>14}")
    for label, key, kind in ROWS:
        lines.append(f"{label:<{w}}{_fmt(b.get(key), kind):>14}{_fmt(c.get(key), kind):>14}")
    ci_b, ci_c = b.get("arithmetic_ci95"), c.get("arithmetic_ci95")
    if ci_b and ci_c and None not in ci_b + ci_c:
        lines.append(f"arithmetic 95% CI: baseline [{ci_b[0]:.2f}, {ci_b[1]:.2f}], compressed "
                     f"[{ci_c[0]:.2f}, {ci_c[1]:.2f}] (n={c.get('arithmetic_n')})")
    q = c.get("quality", {})
    lines.append(f"perplexity over {q.get('n_tokens')} tokens, window {q.get('context')}, stride {q.get('stride')}; "
                 f"kernel paths: {c.get('kernel_paths') or 'dense torch'}")
    if d.get("attribution"):
        lines += ["", attribution_table(d["attribution"], b)]
    p = d["projection"]
    lines += ["", f"[{p['label']}] hardware {d['hardware']}"] + [f"  {t}" for t in p["text"]]
    for warning in p["compressed"]["warnings"]:
        lines.append(f"  warning: {warning}")
    chk = p.get("check_against_measured")
    if chk:
        for name in ("baseline", "compressed"):
            r = chk[name]
            lines.append(f"  {name}: projected decode {r['projected_decode_tokens_per_s']:.0f} tok/s vs measured "
                         f"{r['measured_decode_tokens_per_s']:.0f} tok/s (x{r['ratio_projected_over_measured']:.2f})")
    lines += ["", "samples (greedy):"]
    for s in d["samples"][:3]:
        lines.append(f"  {s['prompt']!r}\n    baseline:   {s['baseline']!r}\n    compressed: {s['compressed']!r}")
    for extra, res in (d.get("online", {}).get("baseline") or {}).items():
        lines.append(f"online {extra}: {res.get('status')}")
    return "\n".join(lines)


def cmd_run(args) -> int:
    from compressor.runs.experiment import run_experiment
    from compressor.runs.jobs import JobContext

    def progress(p):
        if not args.quiet:
            layer = f" layer {p.layer}/{p.n_layers}" if p.layer else ""
            print(f"[{100 * p.fraction:5.1f}%] {p.stage}{layer} {p.message}", file=sys.stderr)

    settings = {k: v for k, v in {"arithmetic_samples": args.samples, "context": args.context,
                                  "max_new_tokens": args.max_new_tokens, "ppl_tokens": args.ppl_tokens}.items()
                if v is not None}
    if args.context is not None:
        settings["stride"] = max(8, args.context // 2)
    cache = None if args.no_cache else JobContext.local(on_log=None).cache
    report = run_experiment(args.model, args.recipe, args.hardware, settings, cache=cache, progress=progress,
                            log=(lambda m: None) if args.quiet else (lambda m: print(m, file=sys.stderr)),
                            device=args.device, allow_pickle=args.allow_pickle,
                            trust_remote_code=args.trust_remote_code, projection_context=args.projection_context,
                            projection_batch=args.projection_batch)
    d = report.to_dict()
    print(format_report(d))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(d, indent=2))
        print(f"\nreport written to {args.json}")
    return EXIT_OK


def cmd_presets(_args) -> int:
    from compressor.engine.presets import get_preset, list_presets

    shown = ("bits", "group_size", "sparsity", "pattern", "steps", "heads_fraction", "mlp_fraction")
    for name, about in list_presets().items():
        stages = get_preset(name).to_dict()["stages"]
        desc = " + ".join(", ".join([s["method"]] + [f"{k}={s[k]}" for k in shown if k in s
                                                     and not (k == "pattern" and s[k] == "unstructured")])
                          for s in stages)
        print(f"{name:<26} {desc}\n{'':<26} {about}")
    return EXIT_OK


def cmd_hardware(_args) -> int:
    from compressor.measure.hardware import THIS_MACHINE, human_bytes, list_profiles

    print(f"{'id':<14} {'memory':>10} {'GB/s':>7}  {'TFLOPS (dtype)':<22} features  name")
    for p in list_profiles():
        dt = p.default_compute_dtype
        feats = ",".join(k for k, v in p.features.items() if v) or "-"
        print(f"{p.id:<14} {human_bytes(p.memory_bytes):>10} {p.memory_bandwidth_gb_s:>7g}  "
              f"{p.peak_tflops.get(dt, 0):>8g} ({dt}){'':<8} {feats}  {p.name}")
    print(f"{THIS_MACHINE:<14} measured by a short probe when a run uses it")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return {"run": cmd_run, "presets": cmd_presets, "hardware": cmd_hardware}[args.command](args)
    except LabError as e:  # RecipeError, ModelLoadError, UnsupportedOnDevice, bad settings
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:
        traceback.print_exc()
        print("error: the run failed (traceback above); this is a bug or a resource limit, not bad input.",
              file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
