"""Pruning, low-rank and recovery-distillation benchmark on the bundled demo model.

    python -m benchmarks.pruning                 # both tables (about 10 minutes on 2 cores)
    python -m benchmarks.pruning --quick         # fewer tokens, no comparison-group study: a smoke run

Every row is one fresh copy of the demo model compressed by `compressor.compress` and evaluated on
the same held-out tokens (`compressor.measure.evaldata.held_out_text`): perplexity, KL to the uncompressed
model and top-1 agreement (`compressor.measure.evaluate.evaluate_quality`), measured weight bytes, and the
median time of a [1, 256] prefill forward (fp32, this machine), timed alternately with the dense
model so that the ratio survives other load on the machine. Pruned rows also give the change in
mean per-token NLL against magnitude pruning with the same pattern, with a 95% paired bootstrap
interval over 128-token blocks: a difference whose interval excludes 0 is not noise of the text.

The stacked recipe prune -> distil -> quantize runs as ONE recipe; `compress(after_stage=...)`
measures the model after each stage, which is how the lab attributes quality to stages.

The comparison-group study (skipped with --quick) prunes at 50/60/70% with magnitude and Wanda in
each comparison group, with 32 and 128 calibration samples, and prints the input-feature norm
spread that Wanda's metric relies on.
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

from compressor.engine.calibration import calibration_batches  # noqa: E402
from compressor.engine.compress import compress  # noqa: E402
from compressor.engine.report import weight_bytes  # noqa: E402
from compressor.engine.text import leading_bos  # noqa: E402
from compressor.measure.evaldata import held_out_text  # noqa: E402
from compressor.measure.evaluate import eval_tokens, evaluate_quality, window_logprobs  # noqa: E402
from compressor.models.loading import load_model  # noqa: E402

CONTEXT, STRIDE, BLOCK = 256, 128, 128

# (label, recipe, label of the magnitude row it is compared with): single-stage rows of the table.
CASES = [
    ("magnitude 50%", [{"method": "magnitude", "sparsity": 0.5}], None),
    ("magnitude 50% (per-output)", [{"method": "magnitude", "sparsity": 0.5, "comparison": "output"}], "magnitude 50%"),
    ("wanda 50% (default: auto)", [{"method": "wanda", "sparsity": 0.5}], "magnitude 50%"),
    ("wanda 50% (per-output)", [{"method": "wanda", "sparsity": 0.5, "comparison": "output"}], "magnitude 50%"),
    ("wanda 50% (per-layer)", [{"method": "wanda", "sparsity": 0.5, "comparison": "layer"}], "magnitude 50%"),
    ("sparsegpt 50%", [{"method": "sparsegpt", "sparsity": 0.5}], "magnitude 50%"),
    ("magnitude 2:4", [{"method": "magnitude", "pattern": "2:4"}], None),
    ("wanda 2:4", [{"method": "wanda", "pattern": "2:4"}], "magnitude 2:4"),
    ("sparsegpt 2:4", [{"method": "sparsegpt", "pattern": "2:4"}], "magnitude 2:4"),
    ("sparsegpt 2:4 compact", [{"method": "sparsegpt", "pattern": "2:4", "storage": "compact"}], "magnitude 2:4"),
    ("magnitude 4:8", [{"method": "magnitude", "pattern": "4:8"}], None),
    ("wanda 4:8", [{"method": "wanda", "pattern": "4:8"}], "magnitude 4:8"),
    ("sparsegpt 4:8", [{"method": "sparsegpt", "pattern": "4:8"}], "magnitude 4:8"),
    ("structured heads 25% + MLP 25%", [{"method": "structured", "heads_fraction": 0.25, "mlp_fraction": 0.25}],
     None),
    ("svd rank 128", [{"method": "svd", "rank": 128}], None),
    ("svd_llm whiten rank 128", [{"method": "svd_llm", "rank": 128}], None),
    ("svd_llm asvd rank 128", [{"method": "svd_llm", "rank": 128, "scaling": "asvd"}], None),
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


@torch.no_grad()
def token_nll(model, tokens: torch.Tensor, bos: int | None) -> torch.Tensor:
    """Per-token NLL [n] over the same windows the perplexity uses."""
    return torch.cat([-logp.gather(-1, t.view(-1, 1)).squeeze(1)
                      for logp, t in window_logprobs(model, tokens, CONTEXT, STRIDE, bos)])


def paired_ci(nll: torch.Tensor, ref: torch.Tensor, n_boot: int = 2000) -> tuple[float, float, float]:
    """Mean of nll - ref and its 95% bootstrap interval, resampling 128-token blocks (tokens are not independent)."""
    d = nll - ref
    blocks = d[: d.numel() // BLOCK * BLOCK].view(-1, BLOCK).mean(1)  # (n_blocks,)
    g = torch.Generator().manual_seed(0)
    means = blocks[torch.randint(0, blocks.numel(), (n_boot, blocks.numel()), generator=g)].mean(1).sort()[0]
    return d.mean().item(), means[int(0.025 * n_boot)].item(), means[int(0.975 * n_boot)].item()


class Bench:
    def __init__(self, model: str, eval_tokens_n: int, calib_samples: int):
        self.base, self.tok = load_model(model)
        self.vocab = self.base.config.vocab_size
        self.bos = leading_bos(self.tok)
        self.tokens = eval_tokens(self.tok, held_out_text(), eval_tokens_n)
        self.calib = calibration_batches(self.tok, "builtin", calib_samples, CONTEXT)
        self.q0, self.reference = evaluate_quality(self.base, self.tokens, CONTEXT, STRIDE, bos_id=self.bos)
        self.nll: dict[str, torch.Tensor] = {}

    def quality(self, model) -> dict:
        q, _ = evaluate_quality(model, self.tokens, CONTEXT, STRIDE, reference=self.reference, bos_id=self.bos)
        return {"ppl": q.perplexity, "kl": q.kld, "top1": q.top1_agreement}

    def measure(self, model, label: str, against: str | None) -> dict:
        row = {"case": label, **self.quality(model)}
        self.nll[label] = token_nll(model, self.tokens, self.bos)
        if against:
            row["dnll_vs"] = [against, *paired_ci(self.nll[label], self.nll[against])]
        ms, ratio = prefill_ratio(model, self.base, self.vocab)
        return row | {"weight_bytes": weight_bytes(model), "prefill_ms": ms, "prefill_ratio": ratio,
                      "sparsity": linear_zeros(model)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--eval-tokens", type=int, default=32768)
    ap.add_argument("--calib-samples", type=int, default=32)
    ap.add_argument("--distill-steps", type=int, default=60)
    ap.add_argument("--distill-lr", type=float, default=1e-4)
    ap.add_argument("--quick", action="store_true", help="2048 eval tokens, 8 calibration samples, 20 steps, no study")
    ap.add_argument("--no-study", action="store_true", help="skip the comparison-group study")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--cases", default="", help="only the single-stage cases whose label contains this")
    args = ap.parse_args()
    if args.quick:
        args.eval_tokens, args.calib_samples, args.distill_steps, args.no_study = 2048, 8, 20, True
    torch.set_num_threads(min(2, torch.get_num_threads()))

    b = Bench(args.model, args.eval_tokens, args.calib_samples)
    rows = [{"case": "dense fp32 (baseline)", "ppl": b.q0.perplexity, "kl": 0.0, "top1": 1.0,
             "weight_bytes": weight_bytes(b.base), "prefill_ms": prefill_ratio(b.base, b.base, b.vocab)[0],
             "prefill_ratio": 1.0, "sparsity": linear_zeros(b.base), "seconds": 0.0}]
    print(f"baseline ppl {b.q0.perplexity:.2f} on {b.q0.n_tokens} tokens", flush=True)

    for label, recipe, against in [c for c in CASES if args.cases in c[0]]:
        t0 = time.perf_counter()
        model, _ = compress(copy.deepcopy(b.base), recipe, calibration=b.calib)
        seconds = time.perf_counter() - t0
        row = b.measure(model, label, against if against in b.nll else None) | {"seconds": seconds}
        rows.append(row)
        print(json.dumps(row), flush=True)

    # Stacked: prune -> distil -> quantize as one recipe, measured after every stage.
    recipe = [{"method": "sparsegpt", "sparsity": 0.5},
              {"method": "distill", "steps": args.distill_steps, "lr": args.distill_lr, "temperature": 2.0,
               "batch_size": 4, "seq_len": CONTEXT},
              {"method": "rtn", "bits": 8, "group_size": -1}]
    labels = ["stack 1/3: sparsegpt 50%", "stack 2/3: + distill", "stack 3/3: + rtn int8 (per channel)"]
    after = {}

    def after_stage(index: int, model) -> dict:
        after[index] = b.measure(model, labels[index], "magnitude 50%" if "magnitude 50%" in b.nll else None)
        return {"perplexity": after[index]["ppl"], "kld": after[index]["kl"]}

    model, report = compress(copy.deepcopy(b.base), recipe, calibration=b.calib, after_stage=after_stage)
    for i, stage in enumerate(report.stages):
        rows.append(after[i] | {"seconds": stage.seconds})
        print(json.dumps(rows[-1]), flush=True)

    print()
    print(table(rows))
    study_rows = [] if args.no_study else study(b)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "study": study_rows, "eval_tokens": b.q0.n_tokens,
                       "calibration": list(b.calib.shape), "torch": torch.__version__}, f, indent=2)


def study(b: Bench) -> list[dict]:
    """Magnitude and Wanda in each comparison group at 50/60/70%, and the feature-norm spread."""
    print("\ninput-feature norm spread (max / median of ||X_j||_2 over calibration tokens, median over layers):")
    norms: dict[str, list[float]] = {}
    hooks = []
    for name, mod in b.base.model.layers.named_modules():
        if isinstance(mod, torch.nn.Linear):
            def keep(_m, args, kind=name.rsplit(".", 1)[-1]):
                x = args[0].reshape(-1, args[0].shape[-1]).float().norm(dim=0)
                norms.setdefault(kind, []).append((x.max() / x.median()).item())
            hooks.append(mod.register_forward_pre_hook(keep))
    with torch.no_grad():
        b.base(b.calib)
    for h in hooks:
        h.remove()
    for kind, v in norms.items():
        print(f"  {kind:<10} {statistics.median(v):5.1f}  (range {min(v):.1f}-{max(v):.1f})")

    out = []
    calib128 = calibration_batches(b.tok, "builtin", 128, CONTEXT)
    for sparsity in (0.5, 0.6, 0.7):
        ref_label = None
        for label, stage, calib in (
                ("magnitude, per-layer", {"method": "magnitude"}, b.calib),
                ("magnitude, per-output", {"method": "magnitude", "comparison": "output"}, b.calib),
                ("wanda, auto", {"method": "wanda"}, b.calib),
                ("wanda, per-output", {"method": "wanda", "comparison": "output"}, b.calib),
                ("wanda, per-layer", {"method": "wanda", "comparison": "layer"}, b.calib),
                ("wanda, per-output, 128 calibration samples", {"method": "wanda", "comparison": "output"}, calib128),
                ("wanda, per-layer, 128 calibration samples", {"method": "wanda", "comparison": "layer"}, calib128),
                ("sparsegpt", {"method": "sparsegpt"}, b.calib)):
            model, report = compress(copy.deepcopy(b.base), [{**stage, "sparsity": sparsity}], calibration=calib)
            key = f"{label} @ {sparsity:.0%}"
            nll = token_nll(model, b.tokens, b.bos)
            b.nll[key] = nll
            ref_label = ref_label or key
            groups = sorted({r.extra.get("comparison") for r in report.layers if r.extra.get("comparison")})
            row = {"sparsity": sparsity, "case": label, "ppl": float(torch.exp(nll.mean())),
                   "dnll_vs": [ref_label, *paired_ci(nll, b.nll[ref_label])], "groups_used": groups}
            out.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(study_table(out))
    return out


def _ci(row: dict) -> str:
    if not row.get("dnll_vs"):
        return ""
    _, mean, lo, hi = row["dnll_vs"]
    return f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def table(rows: list[dict]) -> str:
    base = rows[0]
    lines = ["| case | perplexity | KL to dense | top-1 agree | mean NLL change vs magnitude, same pattern [95% CI] | "
             "zeros in linears | weight bytes | prefill [1x256] vs dense | compress time |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        zeros = "" if r.get("sparsity") is None else f"{100 * r['sparsity']:.1f}%"
        lines.append(f"| {r['case']} | {r['ppl']:.2f} | {r['kl']:.4f} | {100 * r['top1']:.1f}% | {_ci(r)} | {zeros} | "
                     f"{r['weight_bytes'] / 1e6:.2f} MB ({r['weight_bytes'] / base['weight_bytes']:.2f}x) | "
                     f"{r['prefill_ms']:.0f} ms ({r['prefill_ratio']:.2f}x) | {r['seconds']:.1f} s |")
    return "\n".join(lines)


def study_table(rows: list[dict]) -> str:
    lines = ["| sparsity | method, comparison group | perplexity | mean NLL change vs magnitude per-layer [95% CI] | "
             "group chosen |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['sparsity']:.0%} | {r['case']} | {r['ppl']:.2f} | {_ci(r)} | "
                     f"{', '.join(g for g in r['groups_used'] if g) if r['case'].startswith('wanda, auto') else ''} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
