"""Activation outliers: why AWQ, SmoothQuant and Wanda earn their place on SmolLM2 and not on the demo model.

Run:  python -m benchmarks.smollm2_outliers [--models demo,smollm2-135m] [--samples 8]

For every linear's input over builtin calibration tokens (compressor.engine.calibration: 8 x 256 by
default), two per-feature statistics: the L2 norm ||X_j|| (what AWQ's scales and Wanda's |W| x ||X||
score read) and max |X_j| (what SmoothQuant's s_j = max|X_j|^a / max|W_j|^(1-a) reads). A flat input
has a largest-to-median ratio near 1; a few channels far above the rest are the outliers those methods
exploit. Printed per projection: the ratio's median over the decoder layers, its worst layer, and
the channels that are largest most often.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
from collections import Counter  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

PROJECTIONS = ("q_proj", "o_proj", "gate_proj", "down_proj")  # q/k/v and gate/up read the same inputs


@torch.no_grad()
def input_statistics(model, tokens: torch.Tensor) -> dict[str, dict[int, dict]]:
    """{projection: {layer: {"sq": sum of x^2 [K], "amax": max |x| [K]}}} over `tokens` [n, L]."""
    acc: dict[str, dict[int, dict]] = {}

    def hook(kind: str, layer: int):
        def record(_mod, args):
            x = args[0].reshape(-1, args[0].shape[-1]).float()  # (tokens, K)
            s = acc.setdefault(kind, {}).setdefault(layer, {"sq": torch.zeros(x.shape[1]),
                                                            "amax": torch.zeros(x.shape[1])})
            s["sq"] += (x * x).sum(0)
            s["amax"] = torch.maximum(s["amax"], x.abs().amax(0))
        return record

    handles = []
    for name, mod in model.named_modules():
        parts = name.split(".")
        if isinstance(mod, nn.Linear) and parts[-1] in PROJECTIONS and any(p.isdigit() for p in parts):
            layer = int(next(p for p in parts if p.isdigit()))
            handles.append(mod.register_forward_pre_hook(hook(parts[-1], layer)))
    try:
        for batch in tokens.split(4):
            model(input_ids=batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return acc


def summarize(acc: dict[str, dict[int, dict]]) -> dict[str, dict]:
    out = {}
    for kind, layers in acc.items():
        norm = {i: s["sq"].sqrt() for i, s in layers.items()}
        r_norm = {i: (v.max() / v.median()).item() for i, v in norm.items()}
        r_amax = {i: (s["amax"].max() / s["amax"].median()).item() for i, s in layers.items()}
        worst = max(r_norm, key=r_norm.get)
        top = Counter(int(v.argmax()) for v in norm.values()).most_common(3)
        out[kind] = {"norm_ratio_median": statistics.median(r_norm.values()), "norm_ratio_worst": r_norm[worst],
                     "worst_layer": worst, "absmax_ratio_median": statistics.median(r_amax.values()),
                     "absmax_ratio_worst": max(r_amax.values()), "top_channels": top}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="demo,smollm2-135m")
    ap.add_argument("--samples", type=int, default=8)
    args = ap.parse_args()
    from compressor.engine.calibration import calibration_batches
    from compressor.models.loading import load_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    print("| model | input of | ||X_j|| max/median (median over layers) | worst layer | "
          "max|X_j| max/median (median) | worst | most frequent top channels (layers) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for spec in args.models.split(","):
        model, tok = load_model(spec)
        stats = summarize(input_statistics(model, calibration_batches(tok, "builtin", args.samples, 256)))
        for kind in PROJECTIONS:
            s = stats[kind]
            top = ", ".join(f"{c} ({n})" for c, n in s["top_channels"])
            print(f"| {spec} | {kind} | {s['norm_ratio_median']:.1f} | {s['norm_ratio_worst']:.1f} "
                  f"(layer {s['worst_layer']}) | {s['absmax_ratio_median']:.1f} | {s['absmax_ratio_worst']:.1f} | "
                  f"{top} |")


if __name__ == "__main__":
    main()
