"""SmolLM2-135M-Instruct: every preset, and the activation-aware methods against their plain counterparts.

Run:  python -m benchmarks.smollm2_presets [--eval default|quick] [--only p1,p2] [--json out.json] [--md out.md]

Each recipe goes through the lab's own run (`compressor.runs.runner.run`, what `python -m compressor run
--model smollm2-135m --recipe P` does): load the catalog model, measure the baseline (once; the others
take it from a cache in this process), compress, measure again on the same tokens. Printed: the
baseline, one row per recipe (perplexity on the held-out tz NEWS text, KL to the baseline and top-1
agreement, arithmetic exact match with its Wilson interval and the paired interval of its change,
weight bytes, compress and total time, warnings), and the pairs the model card compares, ranked by KL
with the paired interval on arithmetic between the two methods (Newcombe's, compressor.measure.arithmetic).

`--eval default` is the evaluation a user's run gets (EvalSettings(), today the "quick" preset: 512
tokens, 40 problems); `--eval quick` also skips the speed repeats' larger batch. Figures move with the
machine's load: the load average is recorded before and after each recipe; compare timings only within
one run. Recipes run in ORDER (the pairs first, the 20-minute distill stack last); after each one the
rows so far are written to --json and --md, so an interrupted run still leaves every finished row. A
recipe that fails is recorded with its error and the others go on.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on shared cores
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

MODEL = "smollm2-135m"
# Recipes beyond the presets: the plain counterparts of the activation-aware methods.
EXTRA = {
    "plain-w8a8": [{"method": "smoothquant", "smooth": False}],
    "magnitude-50": [{"method": "magnitude", "sparsity": 0.5}],
    "wanda-50": [{"method": "wanda", "sparsity": 0.5}],
}
# (method, its plain counterpart, what the comparison shows)
PAIRS = [
    ("awq-w4-g128", "w4-g128", "AWQ vs RTN, 4-bit, same groups"),
    ("smoothquant-w8a8", "plain-w8a8", "SmoothQuant vs plain W8A8"),
    ("wanda-50", "magnitude-50", "Wanda vs magnitude pruning, 50%"),
    ("gptq-w4-g128", "w3-g128", "GPTQ 4-bit vs RTN 3-bit"),
]
# The pairs' recipes first (cheapest first), then the other presets, the slow distill stack last.
ORDER = ["w3-g128", "w4-g128", "plain-w8a8", "smoothquant-w8a8", "magnitude-50", "wanda-50", "gptq-w4-g128",
         "awq-w4-g128"]
LAST = ["sparsegpt-50-distill-int8"]
EVALS = {"default": {}, "quick": {"ppl_tokens": 512, "arithmetic_samples": 40, "max_new_tokens": 16, "repeats": 1,
                                  "speed_batch": 1}}


class MemoryCache:
    """The runner's baseline cache (get/put by key), kept in this process."""

    def __init__(self):
        self.entries: dict[str, dict] = {}

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, value: dict) -> None:
        self.entries[key] = value


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def recipes(only: list[str] | None) -> dict[str, object]:
    from compressor.engine.presets import list_presets

    everything = {name: name for name in list_presets()} | EXTRA
    unknown = sorted(set(only or []) - set(everything))
    if unknown:
        raise SystemExit(f"unknown recipe(s) {unknown}: choose from {', '.join(everything)}")
    chosen = [k for k in everything if not only or k in only]
    rank = {k: i for i, k in enumerate(ORDER)} | {k: len(everything) + i for i, k in enumerate(LAST)}
    chosen.sort(key=lambda k: rank.get(k, len(ORDER)))  # stable: the other presets keep their catalog order
    return {k: everything[k] for k in chosen}


def row(name: str, report) -> dict:
    b, c = report.baseline, report.compressed
    return {"recipe": name, "label": report.request.recipe.label(), "perplexity": c.perplexity, "kld": c.kld,
            "top1": c.top1_agreement, "arithmetic": c.arithmetic_accuracy,
            "arithmetic_ci95": c.arithmetic.ci95 if c.arithmetic else None,
            "arithmetic_diff_ci95": c.arithmetic_diff_ci95, "correct": c.arithmetic.correct if c.arithmetic else [],
            "weight_bytes": c.weight_bytes, "baseline_weight_bytes": b.weight_bytes,
            "compress_s": report.timings.compress_s, "total_s": report.timings.total_s,
            "baseline_cached": report.timings.baseline_cached, "warnings": list(report.warnings)}


def baseline_row(report) -> dict:
    b = report.baseline
    return {"perplexity": b.perplexity, "arithmetic": b.arithmetic_accuracy,
            "arithmetic_ci95": b.arithmetic.ci95 if b.arithmetic else None, "n_problems": b.arithmetic.n,
            "by_kind": {k: v.accuracy for k, v in b.arithmetic.by_kind.items()}, "weight_bytes": b.weight_bytes,
            "ppl_tokens": b.quality.n_tokens, "decode_tokens_per_s": b.decode_tokens_per_s,
            "load_s": report.timings.load_s, "baseline_eval_s": report.timings.baseline_eval_s,
            "samples": [s.to_dict() for s in report.samples], "source": report.model.source}


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _ci(ci) -> str:
    return "-" if not ci else f"[{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]" if ci[0] < 0 else \
        f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]"


def markdown(baseline: dict, rows: list[dict]) -> str:
    lines = [f"Baseline: perplexity {baseline['perplexity']:.2f} on {baseline['ppl_tokens']} tokens, arithmetic "
             f"{_pct(baseline['arithmetic'])}% {_ci(baseline['arithmetic_ci95'])} of {baseline['n_problems']}, "
             f"{baseline['weight_bytes'] / 2**20:.0f} MiB of weights", "",
             "| recipe | perplexity | KL | top-1 % | arithmetic % [95%] | change [paired 95%] | MiB | compress s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r.get("kld") is None, r.get("kld") or 0)):
        if r.get("error"):
            lines.append(f"| {r['recipe']} | failed: {r['error']} | | | | | | {r['compress_s'] or 0:.0f} |")
            continue
        lines.append(f"| {r['recipe']} | {r['perplexity']:.2f} | {r['kld']:.4f} | {_pct(r['top1'])} | "
                     f"{_pct(r['arithmetic'])} {_ci(r['arithmetic_ci95'])} | {_ci(r['arithmetic_diff_ci95'])} | "
                     f"{r['weight_bytes'] / 2**20:.0f} | {r['compress_s']:.0f} (load {r['load_before']} -> "
                     f"{r['load_after']}) |")
    return "\n".join(lines)


def pairs(rows: dict[str, dict]) -> list[dict]:
    from compressor.measure.arithmetic import paired_diff_ci

    out = []
    for method, plain, what in PAIRS:
        if method in rows and plain in rows and not (rows[method].get("error") or rows[plain].get("error")):
            m, p = rows[method], rows[plain]
            out.append({"what": what, "method": method, "plain": plain, "kld": [m["kld"], p["kld"]],
                        "lower_kl": method if m["kld"] < p["kld"] else plain,
                        "arithmetic": [m["arithmetic"], p["arithmetic"]],
                        "arithmetic_diff_ci95": paired_diff_ci(p["correct"], m["correct"])})  # method - plain
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval", choices=list(EVALS), default="default")
    ap.add_argument("--only", help="comma-separated recipes (presets or " + ", ".join(EXTRA) + ")")
    ap.add_argument("--json", type=Path, help="write every figure here (rewritten after each recipe)")
    ap.add_argument("--md", type=Path, help="write the table and pairs here (rewritten after each recipe)")
    args = ap.parse_args()

    from compressor.runs.contract import RunRequest
    from compressor.runs.runner import run

    todo = recipes(args.only.split(",") if args.only else None)
    cache, rows, baseline = MemoryCache(), {}, None
    print(f"load average before: {load_average()}", flush=True)
    t0 = time.perf_counter()
    for name, recipe in todo.items():
        request = RunRequest(model=MODEL, recipe=recipe, eval=EVALS[args.eval])
        before, t1 = load_average(), time.perf_counter()
        try:
            report = run(request, cache=cache, log=lambda line: print(f"  {line}", flush=True))
        except Exception as e:  # noqa: BLE001 - recorded in the row; the other recipes still run
            rows[name] = {"recipe": name, "error": f"{type(e).__name__}: {e}", "compress_s": None,
                          "total_s": time.perf_counter() - t1, "load_before": before, "load_after": load_average()}
            print(f"{name}: FAILED {rows[name]['error']}", flush=True)
            write(args, baseline, rows)
            continue
        baseline = baseline or baseline_row(report)
        rows[name] = row(name, report) | {"load_before": before, "load_after": load_average()}
        r = rows[name]
        print(f"{name}: ppl {r['perplexity']:.2f} KL {r['kld']:.4f} top-1 {_pct(r['top1'])}% arithmetic "
              f"{_pct(r['arithmetic'])}% compress {r['compress_s']:.0f} s total {r['total_s']:.0f} s "
              f"(load {before} -> {r['load_after']})", flush=True)
        write(args, baseline, rows)
    print(f"\nload average after: {load_average()}; {time.perf_counter() - t0:.0f} s in all\n")
    print(summary(baseline, rows))


def summary(baseline: dict | None, rows: dict[str, dict]) -> str:
    if baseline is None:
        return "no recipe finished"
    lines = [markdown(baseline, list(rows.values()))]
    for c in pairs(rows):
        lines.append(f"\n{c['what']}: KL {c['kld'][0]:.4f} vs {c['kld'][1]:.4f} (lower: {c['lower_kl']}); arithmetic "
                     f"{_pct(c['arithmetic'][0])}% vs {_pct(c['arithmetic'][1])}%, difference "
                     f"{_ci(c['arithmetic_diff_ci95'])}")
    return "\n".join(lines)


def write(args, baseline: dict | None, rows: dict[str, dict]) -> None:
    """The rows so far, to --json and --md (each rewritten whole, so the files are always complete)."""
    if args.json:
        args.json.write_text(json.dumps({"eval": args.eval, "settings": EVALS[args.eval], "baseline": baseline,
                                         "rows": rows, "pairs": pairs(rows) if baseline else [],
                                         "load_average_now": load_average()}, indent=1))
    if args.md:
        args.md.write_text(f"`python -m benchmarks.smollm2_presets --eval {args.eval}`; {len(rows)} recipe(s) "
                           f"so far\n\n{summary(baseline, rows)}\n")


if __name__ == "__main__":
    main()
