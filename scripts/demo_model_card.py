"""Measure the figures in the demo model's card, and print them as Markdown tables.

Run:  python -m scripts.demo_model_card [--json assets/models/lab-llama-7m/card_metrics.json]

Measures on this machine: size on disk, load time, held-out perplexity, arithmetic exact match (all
800 held-out problems, 95% Wilson intervals), greedy samples, and the sensitivity sweep the card
promises: RTN at 8/4/3/2 bits, per channel and group 128, on the decoder layers only and with the
embeddings and lm_head included. The sweep quantizes weights in place (quantize, then dequantize to
fp32: the same numbers the packed kernels compute with, up to fp16 scale rounding), because the
question here is the model's sensitivity, not the kernels' speed.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from compressor.engine.quant import fake_quant
from compressor.measure.evaldata import held_out_text, load_arithmetic, load_prompts
from compressor.measure.evaluate import (
    eval_tokens,
    evaluate_arithmetic,
    evaluate_quality,
    greedy_generate,
    leading_bos,
)
from compressor.models.loading import DEMO_DIR, load_model

PPL_TOKENS, CONTEXT, STRIDE = 16384, 256, 128


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != "README.md")


def load_seconds(repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        load_model("demo")
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def quantize_in_place(model, bits: int, group: int, include_embeddings: bool) -> None:
    """Fake-quantize (RTN, asymmetric) every decoder linear, and optionally embeddings + lm_head."""
    with torch.no_grad():
        for name, mod in model.named_modules():
            is_decoder_linear = isinstance(mod, torch.nn.Linear) and ".layers." in name
            is_edge = name.endswith("embed_tokens") or name == "lm_head"
            if is_decoder_linear or (include_embeddings and is_edge):
                w = mod.weight.data
                g = w.shape[1] if group <= 0 else group
                mod.weight.data = fake_quant(w.float(), bits, g).to(w.dtype)


def measure(model, tok, tokens, problems, reference=None) -> dict:
    q, own = evaluate_quality(model, tokens, CONTEXT, STRIDE, reference=reference, bos_id=leading_bos(tok))
    arith = evaluate_arithmetic(model, tok, problems)
    add2 = [c for c, p in zip(arith["correct"], problems, strict=True) if p["kind"] == "add2" and p["style"] == "plain"]
    out = {"perplexity": q.perplexity, "kld": q.kld, "top1_agreement": q.top1_agreement,
           "arithmetic_accuracy": arith["accuracy"], "arithmetic_ci95": arith["ci95"],
           "add2_accuracy": sum(add2) / len(add2), "by_kind": arith["by_kind"]}
    return out, own


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=str(DEMO_DIR / "card_metrics.json"))
    p.add_argument("--skip-sweep", action="store_true")
    args = p.parse_args()
    torch.manual_seed(0)

    model, tok = load_model("demo")
    tokens = eval_tokens(tok, held_out_text(), PPL_TOKENS)
    problems = load_arithmetic()
    t0 = time.perf_counter()
    base, ref = measure(model, tok, tokens, problems)
    base_seconds = time.perf_counter() - t0
    samples = dict(zip(load_prompts(), greedy_generate(model, tok, load_prompts(), 32), strict=True))
    result = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "disk_bytes": folder_bytes(DEMO_DIR),
        "load_seconds_median_of_3": load_seconds(),
        "eval": {"ppl_tokens": int(tokens.numel() - 1), "context": CONTEXT, "stride": STRIDE,
                 "arithmetic_problems": len(problems)},
        "baseline": base,
        "baseline_eval_seconds": base_seconds,
        "samples": samples,
        "sweep": [],
        "torch": torch.__version__,
    }
    print(f"parameters {result['parameters']:,}  disk {result['disk_bytes'] / 1e6:.1f} MB  "
          f"load {result['load_seconds_median_of_3']:.2f} s")
    print(f"baseline: ppl {base['perplexity']:.2f}  arithmetic {base['arithmetic_accuracy']:.3f}  "
          f"add2 {base['add2_accuracy']:.3f}")
    if not args.skip_sweep:
        state = {k: v.clone() for k, v in model.state_dict().items()}
        for include in (False, True):
            for bits in (8, 4, 3, 2):
                for group in (-1, 128):
                    model.load_state_dict(state)
                    quantize_in_place(model, bits, group, include)
                    m, _ = measure(model, tok, tokens, problems, reference=ref)
                    row = {"bits": bits, "group": "channel" if group < 0 else group,
                           "scope": "decoder+embeddings+lm_head" if include else "decoder", **m}
                    result["sweep"].append(row)
                    print(f"{row['scope']:>26} w{bits} {row['group']!s:>7}: ppl {m['perplexity']:.2f} "
                          f"({100 * (m['perplexity'] / base['perplexity'] - 1):+.1f}%)  "
                          f"add2 {m['add2_accuracy']:.3f}  arith {m['arithmetic_accuracy']:.3f}  "
                          f"KL {m['kld']:.4f}  top1 {m['top1_agreement']:.3f}", flush=True)
        model.load_state_dict(state)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(markdown(result))


def markdown(r: dict) -> str:
    b = r["baseline"]
    lines = ["| scope | bits | group | perplexity | change | 2-digit add | all arithmetic | KL | top-1 |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| fp16 weights (baseline) | 16 | - | {b['perplexity']:.2f} | - | {b['add2_accuracy']:.1%} | "
             f"{b['arithmetic_accuracy']:.1%} | 0 | 100% |"]
    for s in r["sweep"]:
        lines.append(f"| {s['scope']} | {s['bits']} | {s['group']} | {s['perplexity']:.2f} | "
                     f"{100 * (s['perplexity'] / b['perplexity'] - 1):+.1f}% | {s['add2_accuracy']:.1%} | "
                     f"{s['arithmetic_accuracy']:.1%} | {s['kld']:.4f} | {s['top1_agreement']:.1%} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
