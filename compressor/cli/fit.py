"""`python -m compressor fit`: a mixed-precision recipe that fits a budget, from a sensitivity map.

    python -m compressor fit --model smollm2-135m --budget 3.5bits --out recipe.yaml
    python -m compressor fit --model demo --budget 1.2GiB
    python -m compressor fit --model smollm2-135m --budget hardware:t4 --context 8192 --batch 64

The first fit of a model measures its sensitivity map (one forward and backward pass per calibration
sequence: minutes on 2 CPU cores for a 135M model) and caches it in the data folder; later fits of the
same model at any budget load the model to find the cached map and skip the pass. The recipe is an
ordinary recipe: run it with `python -m compressor run --model M --recipe recipe.yaml`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("fit", help="fit a model to a memory budget: a mixed-precision recipe from a sensitivity map",
                       description=__doc__.splitlines()[0])
    p.add_argument("--model", default="demo", help="'demo', a catalog model (smollm2-135m), a folder or a hub id")
    p.add_argument("--budget", required=True,
                   help="3.5bits (average bits per weight), 1.2GiB / 800MB (all weights), or hardware:<profile>")
    p.add_argument("--context", type=int, default=2048, help="tokens of context for a hardware budget's KV cache")
    p.add_argument("--batch", type=int, default=1, help="sequences at once for a hardware budget's KV cache")
    p.add_argument("--out", type=Path, help="write the recipe (YAML) here")
    p.add_argument("--json", type=Path, help="write the whole result (allocation, cost curve, uniform recipes) here")
    p.add_argument("--samples", type=int, default=None, help="calibration sequences for the map (default 16)")
    p.add_argument("--seq-len", type=int, default=None, help="tokens per calibration sequence (default 256)")
    p.add_argument("--calibration", default="builtin", help="'builtin', text, or hub:<dataset id>")
    p.add_argument("--tie", default="", help="roles that must share a format in each layer: qkv, gate_up "
                   "(comma-separated)")
    p.add_argument("--exclude", default=None, help="formats the allocator may not give, though the map scores them "
                   "(comma-separated; default w4pc, compressor.fit.formats.NOT_OFFERED: see docs/fit.md); '' allows all")
    p.add_argument("--no-cache", action="store_true", help="measure the map again instead of reading the cache")
    p.set_defaults(func=cmd_fit)


def _progress():
    last = [0.0]

    def say(fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - last[0] >= 5 or fraction >= 1.0:
            last[0] = now
            print(f"  [{100 * fraction:3.0f}%] {message}", file=sys.stderr, flush=True)
    return say


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f} MiB"


def cmd_fit(args) -> int:
    from compressor.errors import LabError
    from compressor.fit.fitting import DEFAULT_SAMPLES, DEFAULT_SEQ_LEN, fit
    from compressor.fit.formats import NOT_OFFERED

    samples = DEFAULT_SAMPLES if args.samples is None else args.samples
    seq_len = DEFAULT_SEQ_LEN if args.seq_len is None else args.seq_len
    for name, v, lo, hi in (("--samples", samples, 1, 512), ("--seq-len", seq_len, 16, 8192)):
        if not lo <= v <= hi:
            raise LabError(f"{name}={v} is not valid: use a whole number in [{lo}, {hi}]")
    if args.out is not None and args.out.suffix not in (".yaml", ".yml"):
        raise LabError(f"--out {args.out.name}: give a .yaml file name (the recipe is YAML)")
    tie = tuple(t.strip() for t in args.tie.split(",") if t.strip())
    exclude = NOT_OFFERED if args.exclude is None else tuple(f.strip() for f in args.exclude.split(",") if f.strip())
    t0 = time.perf_counter()
    result, smap = fit(args.model, args.budget, args.context, args.batch, tie=tie, exclude=exclude,
                       calibration=args.calibration, n_samples=samples, seq_len=seq_len, cache=not args.no_cache,
                       progress=_progress(), log=lambda line: print(line, file=sys.stderr, flush=True))
    s = smap.seconds
    print(f"sensitivity map of {smap.model}: {len(smap.modules)} modules x {len(smap.formats)} formats, "
          f"{smap.calibration['n_samples']} x {smap.calibration['seq_len']} calibration tokens; measured in "
          f"{s.get('statistics', 0) + s.get('scoring', 0):.0f} s (statistics {s.get('statistics', 0):.0f} s, scoring "
          f"{s.get('scoring', 0):.0f} s; cached as {smap.key[:12]})")
    detail = ", ".join(f"{k} {_mib(v) if isinstance(v, int) and k != 'quantizable_params' else v}"
                       for k, v in result.budget_detail.items())
    print(f"budget: {args.budget} -> {_mib(result.budget_bytes)} of weights ({detail}; floats at "
          f"{8 * result.float_bytes} bits)")
    print(result.summary())
    print("uniform RTN on the same map (predicted):")
    for u in result.uniform:
        print(f"  {u['format']:<7} {_mib(u['bytes']):>11}  predicted KL {u['predicted_kl']:.4f}")
    if result.recipe is not None and args.out is not None:
        args.out.write_text(result.recipe_yaml)
        print(f"recipe written to {args.out}; run it with: python -m compressor run --model {args.model} "
              f"--recipe {args.out}")
    elif result.recipe is not None:
        print(result.recipe_yaml)
    if args.json is not None:
        args.json.write_text(json.dumps(result.to_dict(), indent=1))
    print(f"done in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 0
