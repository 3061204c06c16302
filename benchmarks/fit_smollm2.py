"""Fit to hardware on SmolLM2-135M: does the sensitivity map rank real recipes, and does the fitted recipe
beat uniform RTN and a llama.cpp-style fixed heuristic at the same weight bytes?

Run:  python -m benchmarks.fit_smollm2 [--tokens 2048] [--json out.json] [--resume] [--timing] [--variants]
                                      [--embedding] [--only NAME,...]

1. The sensitivity map (compressor.fit, 16 x 256 calibration tokens of the lab's built-in text; read from
   the cache when measured before: its seconds are those of the pass that made it).
2. Recipes, all RTN through the lab's compress() (packed weights, the CPU kernels): uniform formats, two
   llama.cpp-style heuristics (Q4_K_M / Q3_K_M: more bits for v_proj and half of down_proj, chosen by
   llama.cpp's use_more_bits rule), role-wise mixes, and the fitted recipe at the bytes of each
   reference. Each is measured against the baseline on the lab's held-out text for this model (tz NEWS
   2025-26, KL over the baseline's top-k + tail, as every run) and stored bytes (state dict).
3. Printed: the rank correlation (Spearman) of each score with the measured KL over all recipes, and the
   must-show table: fitted vs reference at the same bytes, KL ratio, arithmetic exact match with Wilson
   intervals and the paired interval of the difference (Newcombe).
`--embedding` adds SmolLM2's tied embedding/head alone in w8pc and w4g64, fake-quantized (no stage stores
it packed yet), against the map's prediction for it.
`--timing` adds the cost of the statistics pass against layers and sequences, and of scoring against
the number of formats. Timings move with the machine's load: the load average is printed with each.

The fitted recipes are allocated as `python -m compressor fit` does, without the formats of
compressor.fit.formats.NOT_OFFERED (per-channel 4-bit). `--variants` adds, at each pair's bytes, the fit
with every scored format allowed ("(per-channel 4-bit allowed)": why it is excluded, docs/fit.md) and, at
w4g64's, the same from a map whose calibration is half two-digit chat arithmetic ("(mixed calibration,
...)", disjoint from the single-digit problems measured). With
`--only NAME,...` only those recipes are measured; `--resume` keeps the rows (and the baseline)
already in --json, so a targeted run costs only its new recipes.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on shared cores
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

MODEL = "smollm2-135m"
MORE_BITS = "more bits"  # llama.cpp's use_more_bits(i, n): the first and last eighth and every third layer between


def load_average() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def use_more_bits(i: int, n: int) -> bool:
    """llama.cpp src/llama-quant.cpp: i < n/8 || i >= 7n/8 || (i - n/8) % 3 == 2 (integer division)."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def heuristic(smap, base: str, rules: dict[str, str | tuple[str, str]]) -> dict[str, str]:
    """Formats by role: `rules[role]` is a format, or (format, MORE_BITS) for the use_more_bits layers only."""
    from compressor.fit.fitting import uniform_formats

    out = uniform_formats(smap, base)
    for m in smap.modules:
        rule = rules.get(m.role)
        if isinstance(rule, tuple) and use_more_bits(m.layer, smap.n_layers):
            out[m.name] = rule[0]
        elif isinstance(rule, str):
            out[m.name] = rule
    return out


def reference_recipes(smap) -> dict[str, dict[str, str]]:
    """Name -> formats of the hand-made recipes (the fitted ones are added at their bytes)."""
    from compressor.fit.fitting import uniform_formats

    refs = {f"uniform {f}": uniform_formats(smap, f) for f in
            ("w8pc", "w4g32", "w4g64", "w4g128", "w4pc", "w3g32", "w3g64", "w3g128")}
    # Q4_K_M: Q6_K for half of attn_v / ffn_down, Q4_K elsewhere; 8-bit per channel is our nearest to Q6_K
    refs["Q4_K_M-style"] = heuristic(smap, "w4g64", {"self_attn.v_proj": ("w8pc", MORE_BITS),
                                                     "mlp.down_proj": ("w8pc", MORE_BITS)})
    # Q3_K_M: attn_v and attn_output a step up, ffn_down a step up in the use_more_bits layers
    refs["Q3_K_M-style"] = heuristic(smap, "w3g64", {"self_attn.v_proj": "w4g64", "self_attn.o_proj": "w4g64",
                                                     "mlp.down_proj": ("w4g64", MORE_BITS)})
    refs["w3g64 attention, w4g64 MLP"] = heuristic(smap, "w4g64", {r: "w3g64" for r in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")})
    refs["w4g64 attention, w3g64 MLP"] = heuristic(smap, "w3g64", {r: "w4g64" for r in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")})
    return refs


# The must-show pairs: (reference, its fitted counterpart at the same bytes, what the issue asks)
PAIRS = [("uniform w4g64", "fitted @ uniform w4g64", 0.8), ("Q4_K_M-style", "fitted @ Q4_K_M-style", 1.0),
         ("uniform w3g64", "fitted @ uniform w3g64", 1.0)]
# (reference, variant of its fitted recipe): the palette without per-channel 4-bit at every pair's bytes,
# and a map with chat arithmetic in its calibration at w4g64's
ALL_FORMATS, MIXED = " (per-channel 4-bit allowed)", " (mixed calibration, per-channel 4-bit allowed)"
VARIANTS = [*((ref, fitted + ALL_FORMATS) for ref, fitted, _ in PAIRS), (PAIRS[0][0], PAIRS[0][1] + MIXED)]


def chat_arithmetic_text(tokenizer, n: int = 600, seed: int = 0) -> str:
    """Two-digit chat arithmetic with its answers ("Calculate 23 + 45." -> "23 + 45 = 68"), through the
    model's chat template: the kind of prompt the arithmetic score asks, but none of its single-digit
    problems."""
    import random

    from compressor.measure.generation import chat_prompt

    rng, out = random.Random(seed), []
    for _ in range(n):
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        a, b = (b, a) if op == "-" and b > a else (a, b)
        ans = a + b if op == "+" else a - b
        out.append(chat_prompt(tokenizer, f"Calculate {a} {op} {b}.", f"{a} {op} {b} = {ans}")
                   + (tokenizer.eos_token or "") + "\n")
    return "".join(out)


def mixed_map(model, tokenizer, n_samples: int):
    """The map on half built-in text, half chat arithmetic (cached like any map)."""
    import torch

    from compressor.engine.calibration import calibration_batches
    from compressor.fit.sensitivity import sensitivity_map
    from compressor.paths import default_data_dir

    half = n_samples // 2
    tokens = torch.cat([calibration_batches(tokenizer, "builtin", half, 256),
                        calibration_batches(tokenizer, chat_arithmetic_text(tokenizer), n_samples - half, 256)])
    return sensitivity_map(model, tokens, name=MODEL, cache_dir=default_data_dir() / "fit",
                           calibration={"source": "builtin + two-digit chat arithmetic"})


def scores(smap, formats: dict[str, str], float_bytes: int) -> dict:
    from compressor.fit.allocator import predict

    kl, total = predict(smap, formats, float_bytes)
    alt = {e: sum(m.alt[e][formats[m.name]] for m in smap.modules) for e in ("act", "mse")}
    return {"predicted_kl": kl, "predicted_bytes": total, **alt}


def measure(name, formats, smap, model, tokenizer, data, settings, reference, arithmetic: bool) -> dict:
    from compressor.engine.compress import compress
    from compressor.engine.report import state_dict_bytes
    from compressor.engine.text import leading_bos
    from compressor.fit.recipe import recipe_from_formats
    from compressor.measure.arithmetic import evaluate_arithmetic
    from compressor.measure.quality import evaluate_quality

    t0 = time.perf_counter()
    recipe = recipe_from_formats(smap, formats)
    compressed, _ = compress(copy.deepcopy(model), recipe)
    compress_s = time.perf_counter() - t0
    q, _ = evaluate_quality(compressed, data.tokens, settings.context, settings.stride, settings.top_k, reference,
                            bos_id=leading_bos(tokenizer))
    row = {"recipe": name, "stages": recipe["stages"], "bytes": state_dict_bytes(compressed), "kld": q.kld,
           "kld_p99": q.kld_p99, "top1": q.top1_agreement, "perplexity": q.perplexity, "compress_s": compress_s,
           "load": load_average()}
    if arithmetic:
        a = evaluate_arithmetic(compressed, tokenizer, data.problems)
        row |= {"arithmetic": a["accuracy"], "arithmetic_ci95": a["ci95"], "correct": a["correct"]}
    row["seconds"] = time.perf_counter() - t0
    return row


def spearman(x, y) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def rank_table(rows: list[dict]) -> str:
    kl = [r["kld"] for r in rows]
    lines = ["| score | Spearman rank correlation with measured KL | recipes |", "| --- | --- | --- |"]
    for key, what in (("predicted_kl", "Fisher-weighted (the estimator)"), ("act", "input-weighted output error"),
                      ("mse", "weight MSE")):
        lines.append(f"| {what} | {spearman([r[key] for r in rows], kl):.3f} | {len(rows)} |")
    return "\n".join(lines)


def _ci(ci) -> str:
    return "-" if not ci else (f"[{100 * ci[0]:+.0f}, {100 * ci[1]:+.0f}]" if ci[0] < 0 else
                               f"[{100 * ci[0]:.0f}, {100 * ci[1]:.0f}]")


def must_show(rows: dict[str, dict], baseline: dict) -> str:
    from compressor.measure.arithmetic import paired_diff_ci

    lines = [f"Baseline: perplexity {baseline['perplexity']:.2f}, arithmetic {100 * baseline['arithmetic']:.1f}% "
             f"{_ci(baseline['arithmetic_ci95'])} (n={len(baseline['correct'])})", "",
             "| recipe | MiB stored | bytes vs ref | KL | KL vs ref | top-1 % | perplexity | arithmetic % [95%] | "
             "fitted - ref [paired 95%] | KL asked | arithmetic >= ref |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    shown = set()
    targets = {ref: target for ref, _, target in PAIRS}
    for ref, fitted, target in [*PAIRS, *((ref, v, targets[ref]) for ref, v in VARIANTS)]:
        if ref not in rows or fitted not in rows:
            continue
        r, f = rows[ref], rows[fitted]
        for row, is_ref in ((r, True), (f, False)):
            if is_ref and ref in shown:
                continue
            shown.add(row["recipe"])
            diff = "" if is_ref or "correct" not in row else _ci(paired_diff_ci(r["correct"], row["correct"]))
            ratio = "" if is_ref else f"{row['kld'] / r['kld']:.2f}x"
            ok = "" if is_ref else ("yes" if row["kld"] <= target * r["kld"] else "NO") + f" (<= {target}x)"
            if not is_ref and "correct" in row:  # the point estimate; the paired interval says how sure
                ok += " | " + ("yes" if row["arithmetic"] >= r["arithmetic"] else "NO")
            elif not is_ref:
                ok += " | -"
            else:
                ok += " | "
            arith = f"{100 * row['arithmetic']:.1f} {_ci(row['arithmetic_ci95'])}" if "arithmetic" in row else "-"
            size = "" if is_ref else f"{row['bytes'] / r['bytes']:.4f}"
            lines.append(f"| {row['recipe']} | {row['bytes'] / 2**20:.2f} | {size} | {row['kld']:.4f} | {ratio} | "
                         f"{100 * row['top1']:.1f} | {row['perplexity']:.2f} | {arith} | {diff} | {ok} |")
    return "\n".join(lines)


def tied_embedding(model, tokenizer, smap, data, settings, reference, baseline: dict) -> list[str]:
    """The tied embedding/head alone in w8pc and w4g64, *fake-quantized* (RTN, then dequantized back into
    the float tensor: no stage stores it packed yet, so no bytes are saved), against the map's prediction:
    what the allocator would trade if it could give the shared tensor a format."""
    import torch

    from compressor.engine.quant import fake_quant
    from compressor.engine.text import leading_bos
    from compressor.fit.formats import Format
    from compressor.measure.arithmetic import evaluate_arithmetic, paired_diff_ci
    from compressor.measure.quality import evaluate_quality

    emb = model.get_input_embeddings().weight
    head = next(m for m in smap.modules if m.role == "lm_head")
    out = ["| tied embedding/head only | measured KL | predicted KL | top-1 % | perplexity | arithmetic % [95%] | "
           "vs baseline [paired 95%] | load average |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    original = emb.detach().clone()
    try:
        for fmt in ("w8pc", "w4g64"):
            f = Format.parse(fmt)
            with torch.no_grad():
                emb.copy_(fake_quant(original, f.bits, f.group_for(original.shape[1])))
            q, _ = evaluate_quality(model, data.tokens, settings.context, settings.stride, settings.top_k, reference,
                                    bos_id=leading_bos(tokenizer))
            a = evaluate_arithmetic(model, tokenizer, data.problems)
            out.append(f"| {fmt} (fake-quantized) | {q.kld:.4f} | {head.costs[fmt]:.4f} | {100 * q.top1_agreement:.1f} "
                       f"| {q.perplexity:.2f} | {100 * a['accuracy']:.1f} {_ci(a['ci95'])} | "
                       f"{_ci(paired_diff_ci(baseline['correct'], a['correct']))} | {load_average()} |")
    finally:
        with torch.no_grad():
            emb.copy_(original)
    return out


def timing(model, tokenizer, smap) -> list[str]:
    """Seconds of the statistics pass against layers and sequences, and of scoring against formats."""
    import torch

    from compressor.engine.calibration import calibration_batches
    from compressor.fit.formats import palette
    from compressor.fit.sensitivity import candidate_modules, score_formats
    from compressor.fit.stats import collect_fisher

    out = ["| what | size | seconds | per unit | load average |", "| --- | --- | --- | --- | --- |"]
    tokens = calibration_batches(tokenizer, "builtin", 2, 256)
    layers = model.model.layers
    for n in (10, 20, len(layers)):
        small = copy.deepcopy(model)
        small.model.layers = torch.nn.ModuleList(list(small.model.layers)[:n])
        small.config.num_hidden_layers = n
        stats = collect_fisher(small, candidate_modules(small), tokens)
        out.append(f"| statistics pass (2 x 256 tokens) | {n} layers | {stats.seconds:.1f} | "
                   f"{stats.seconds / 2:.1f} s per sequence | {load_average()} |")
        del small
    mods = candidate_modules(model)
    full = palette()
    for k in (3, 6, len(full)):
        fmts = full[:: max(1, len(full) // k)][:k]
        t0 = time.perf_counter()
        for mod in mods.values():
            fits = [f for f in fmts if f.fits(mod.in_features)]
            score_formats(mod.weight, torch.ones_like(mod.weight), torch.ones(mod.in_features), fits, 256)
        dt = time.perf_counter() - t0
        out.append(f"| scoring | {len(mods)} modules x {len(fmts)} formats | {dt:.1f} | "
                   f"{dt / len(fmts):.1f} s per format | {load_average()} |")
    out.append(f"| the map used here | {smap.calibration['n_samples']} sequences, {len(smap.modules)} modules x "
               f"{len(smap.formats) - 1} formats | {sum(smap.seconds.values()):.0f} | statistics "
               f"{smap.seconds['statistics']:.0f} s + scoring {smap.seconds['scoring']:.0f} s | (when measured) |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=2048, help="held-out tokens for KL (the standard preset's 2048)")
    ap.add_argument("--samples", type=int, default=16, help="calibration sequences of the map")
    ap.add_argument("--json", type=Path, default=Path("fit_smollm2.json"), help="every figure, per recipe")
    ap.add_argument("--resume", action="store_true", help="keep the recipes already in --json")
    ap.add_argument("--timing", action="store_true", help="also time the pass against layers and formats")
    ap.add_argument("--variants", action="store_true", help="also the fitted recipe at w4g64's bytes without "
                    "per-channel 4-bit, and from a map with chat arithmetic in its calibration")
    ap.add_argument("--embedding", action="store_true", help="also the tied embedding alone in w8pc and w4g64, "
                    "fake-quantized, against its predicted KL")
    ap.add_argument("--only", default="", help="measure only these recipes (comma-separated names)")
    args = ap.parse_args()
    only = {n.strip() for n in args.only.split(",") if n.strip()}

    import torch

    from compressor.engine.text import leading_bos
    from compressor.fit.allocator import allocate
    from compressor.fit.fitting import measure_map
    from compressor.fit.formats import NOT_OFFERED
    from compressor.fit.recipe import recipe_from_formats
    from compressor.fit.sensitivity import tied_head as head_tied
    from compressor.measure.arithmetic import evaluate_arithmetic
    from compressor.measure.evaldata import load_eval_data
    from compressor.measure.quality import evaluate_quality
    from compressor.measure.settings import EvalSettings
    from compressor.models.loading import load_model

    torch.set_num_threads(2)
    print(f"load average at start: {load_average()}", flush=True)
    model, tokenizer = load_model(MODEL)
    smap = measure_map(model, tokenizer, name=MODEL, n_samples=args.samples)
    print(f"map: {len(smap.modules)} modules, seconds {smap.seconds}", flush=True)
    fb = smap.model_float_bytes
    settings = EvalSettings(ppl_tokens=args.tokens, arithmetic_samples=800)
    data = load_eval_data(tokenizer, settings)
    done = json.loads(args.json.read_text()) if args.resume and args.json.is_file() else {}
    if "baseline" not in done:
        q, ref = evaluate_quality(model, data.tokens, settings.context, settings.stride, settings.top_k,
                                  bos_id=leading_bos(tokenizer))
        a = evaluate_arithmetic(model, tokenizer, data.problems)
        done = {"baseline": {"perplexity": q.perplexity, "arithmetic": a["accuracy"], "arithmetic_ci95": a["ci95"],
                             "correct": a["correct"], "reference": ref.to_dict()}, "rows": {}}
    from compressor.measure.quality import Reference

    reference = Reference.from_dict(done["baseline"]["reference"])
    refs = reference_recipes(smap)
    todo = dict(refs)
    for ref_name, fitted_name, _ in PAIRS:  # as `python -m compressor fit` allocates: NOT_OFFERED excluded
        todo[fitted_name] = allocate(smap, scores(smap, refs[ref_name], fb)["predicted_bytes"], fb,
                                     curve=False, exclude=NOT_OFFERED).formats
    for ref, name in VARIANTS if args.variants else []:
        budget = scores(smap, refs[ref], fb)["predicted_bytes"]
        vmap = mixed_map(model, tokenizer, args.samples) if name.endswith(MIXED) else smap
        todo[name] = allocate(vmap, budget, fb, curve=False).formats  # every scored format allowed
    in_pairs = {n for p in PAIRS for n in p[:2]} | {v for _, v in VARIANTS}
    for name, formats in todo.items():
        kept = done["rows"].get(name)  # a row is kept only when it measured the recipe this run would make
        if (kept and kept["stages"] == recipe_from_formats(smap, formats)["stages"]) or (only and name not in only):
            continue
        print(f"{name}: measuring (load {load_average()})", flush=True)
        row = measure(name, formats, smap, model, tokenizer, data, settings, reference, name in in_pairs)
        done["rows"][name] = row | scores(smap, formats, fb)
        print(f"  KL {row['kld']:.4f} predicted {done['rows'][name]['predicted_kl']:.4f}, "
              f"{row['bytes'] / 2**20:.2f} MiB, {row['seconds']:.0f} s", flush=True)
        args.json.write_text(json.dumps(done))
    rows = list(done["rows"].values())
    print("\n## Rank correlation\n\n" + rank_table(rows))
    print("\n| recipe | MiB | measured KL | predicted KL |\n| --- | --- | --- | --- |")
    for r in sorted(rows, key=lambda r: r["kld"]):
        print(f"| {r['recipe']} | {r['bytes'] / 2**20:.2f} | {r['kld']:.4f} | {r['predicted_kl']:.4f} |")
    print("\n## Fitted vs fixed recipes at the same bytes\n\n" + must_show(done["rows"], done["baseline"]))
    if args.embedding and head_tied(model):
        print("\n## The tied embedding alone\n\n" + "\n".join(
            tied_embedding(model, tokenizer, smap, data, settings, reference, done["baseline"])))
    if args.timing:
        print("\n## Sensitivity pass cost\n\n" + "\n".join(timing(model, tokenizer, smap)))
    print(f"\nload average at the end: {load_average()}")


if __name__ == "__main__":
    main()
