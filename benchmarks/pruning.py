"""Pruning, low-rank and recovery-distillation benchmark on the bundled demo model.

    python -m benchmarks.pruning                 # full table (a few minutes on 2 cores)
    python -m benchmarks.pruning --quick         # fewer tokens, for a smoke run

Every row is one fresh copy of the demo model compressed by `compressor.compress` and evaluated on
the same held-out tokens (`compressor.evaldata.held_out_text`): perplexity, KL to the uncompressed
model and top-1 agreement (`compressor.evaluate.evaluate_quality`), measured weight bytes, and the
median time of a [1, 256] prefill forward (fp32, this machine), timed alternately with the dense
model so that the ratio survives other load on the machine.

The stacked recipe is prune -> distil -> quantize, evaluated after each stage so the report can
attribute the quality change to each. The engine does not hand stages the original model yet, so
the distillation step runs as `compressor.methods.distill.distill(student, teacher, tokens, cfg)`
between two `compress` calls (same code the "distill" stage runs).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from compressor.calibration import calibration_batches  # noqa: E402
from compressor.engine import compress  # noqa: E402
from compressor.evaldata import held_out_text  # noqa: E402
from compressor.evaluate import eval_tokens, evaluate_quality  # noqa: E402
from compressor.loading import load_model  # noqa: E402
from compressor.methods.distill import DistillConfig, distill  # noqa: E402
from compressor.report import weight_bytes  # noqa: E402

CONTEXT, STRIDE = 256, 128

# (label, recipe): single-stage rows of the table.
CASES = [
    ("magnitude 50%", [{"method": "magnitude", "sparsity": 0.5}]),
    ("wanda 50%", [{"method": "wanda", "sparsity": 0.5}]),
    ("wanda 50% (per-layer comparison)", [{"method": "wanda", "sparsity": 0.5, "comparison": "layer"}]),
    ("sparsegpt 50%", [{"method": "sparsegpt", "sparsity": 0.5}]),
    ("magnitude 2:4", [{"method": "magnitude", "pattern": "2:4"}]),
    ("wanda 2:4", [{"method": "wanda", "pattern": "2:4"}]),
    ("sparsegpt 2:4", [{"method": "sparsegpt", "pattern": "2:4"}]),
    ("sparsegpt 2:4 compact", [{"method": "sparsegpt", "pattern": "2:4", "storage": "compact"}]),
    ("magnitude 4:8", [{"method": "magnitude", "pattern": "4:8"}]),
    ("wanda 4:8", [{"method": "wanda", "pattern": "4:8"}]),
    ("sparsegpt 4:8", [{"method": "sparsegpt", "pattern": "4:8"}]),
    ("structured heads 25% + MLP 25%", [{"method": "structured", "heads_fraction": 0.25, "mlp_fraction": 0.25}]),
    ("svd rank 128", [{"method": "svd", "rank": 128}]),
    ("svd_llm whiten rank 128", [{"method": "svd_llm", "rank": 128}]),
    ("svd_llm asvd rank 128", [{"method": "svd_llm", "rank": 128, "scaling": "asvd"}]),
]


@torch.no_grad()
def prefill_ratio(model, base, vocab: int, length: int = 256, repeats: int = 7) -> tuple[float, float]:
    """(median ms of a [1, length] forward, ratio to the dense model timed interleaved with it).

    Timing the two models alternately makes the ratio robust to other load on the machine.
    """
    ids = torch.randint(1, vocab, (1, length), generator=torch.Generator().manual_seed(0))
    times: dict[int, list[float]] = {0: [], 1: []}
    for m in (base, model):  # warm-up
        m(input_ids=ids, use_cache=False)
    for _ in range(repeats):
        for k, m in enumerate((base, model)):
            t0 = time.perf_counter()
            m(input_ids=ids, use_cache=False)
            times[k].append(time.perf_counter() - t0)
    ms, base_ms = 1000 * statistics.median(times[1]), 1000 * statistics.median(times[0])
    return ms, ms / base_ms


def linear_zeros(model) -> float | None:
    """Fraction of exact zeros over the float nn.Linear weights of the decoder layers (None if none left)."""
    ws = [m.weight for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear)]
    n = sum(w.numel() for w in ws)
    return sum(int((w == 0).sum()) for w in ws) / n if n else None


def measure(model, base, tokens, reference, vocab) -> dict:
    q, _ = evaluate_quality(model, tokens, CONTEXT, STRIDE, reference=reference)
    ms, ratio = prefill_ratio(model, base, vocab)
    return {"ppl": q.perplexity, "kl": q.kld, "top1": q.top1_agreement, "weight_bytes": weight_bytes(model),
            "prefill_ms": ms, "prefill_ratio": ratio, "sparsity": linear_zeros(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--eval-tokens", type=int, default=8192)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--distill-steps", type=int, default=200)
    ap.add_argument("--distill-lr", type=float, default=1e-4)
    ap.add_argument("--quick", action="store_true", help="1024 eval tokens, 8 calibration samples, 20 steps")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--cases", default="", help="only the single-stage cases whose label contains this")
    args = ap.parse_args()
    if args.quick:
        args.eval_tokens, args.calib_samples, args.distill_steps = 1024, 8, 20
    torch.set_num_threads(min(2, torch.get_num_threads()))

    base, tok = load_model(args.model)
    vocab = base.config.vocab_size
    tokens = eval_tokens(tok, held_out_text(), args.eval_tokens)
    calib = calibration_batches(tok, "builtin", args.calib_samples, CONTEXT)
    q0, reference = evaluate_quality(base, tokens, CONTEXT, STRIDE)
    rows = [{"case": "dense fp32 (baseline)", "ppl": q0.perplexity, "kl": 0.0, "top1": 1.0,
             "weight_bytes": weight_bytes(base), "prefill_ms": prefill_ratio(base, base, vocab)[0],
             "prefill_ratio": 1.0, "sparsity": linear_zeros(base), "seconds": 0.0}]
    print(f"baseline ppl {q0.perplexity:.2f} on {q0.n_tokens} tokens", flush=True)

    for label, recipe in [c for c in CASES if args.cases in c[0]]:
        model = copy.deepcopy(base)
        t0 = time.perf_counter()
        model, report = compress(model, recipe, calibration=calib)
        row = {"case": label, **measure(model, base, tokens, reference, vocab), "seconds": time.perf_counter() - t0}
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Stacked: prune -> distil -> quantize, measured after every stage.
    stages = [("stack 1/3: sparsegpt 50%", [{"method": "sparsegpt", "sparsity": 0.5}]),
              ("stack 2/3: + distill", None),
              ("stack 3/3: + rtn int8 (per channel)", [{"method": "rtn", "bits": 8, "group_size": -1}])]
    model = copy.deepcopy(base)
    teacher = base
    for label, recipe in stages:
        t0 = time.perf_counter()
        extra = {}
        if recipe is None:
            cfg = DistillConfig(steps=args.distill_steps, lr=args.distill_lr, temperature=2.0, batch_size=4,
                                seq_len=CONTEXT)
            out = distill(model, teacher, calib, cfg)
            extra = {"distill_kl_calib": [round(out["kl_before"], 4), round(out["kl_after"], 4)]}
        else:
            model, _ = compress(model, recipe, calibration=calib)
        row = {"case": label, **measure(model, base, tokens, reference, vocab), "seconds": time.perf_counter() - t0,
               **extra}
        rows.append(row)
        print(json.dumps(row), flush=True)

    print()
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "eval_tokens": q0.n_tokens, "calibration": list(calib.shape),
                       "torch": torch.__version__}, f, indent=2)


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| case | perplexity | KL to dense | top-1 agree | zeros in linears | weight bytes | "
             "prefill [1x256] vs dense | compress time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        zeros = "" if r.get("sparsity") is None else f"{100 * r['sparsity']:.1f}%"
        lines.append(f"| {r['case']} | {r['ppl']:.2f} | {r['kl']:.4f} | {100 * r['top1']:.1f}% | {zeros} | "
                     f"{r['weight_bytes'] / 1e6:.2f} MB ({r['weight_bytes'] / base['weight_bytes']:.2f}x) | "
                     f"{r['prefill_ms']:.0f} ms ({r['prefill_ratio']:.2f}x) | "
                     f"{r['seconds']:.1f} s |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
