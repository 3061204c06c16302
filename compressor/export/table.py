"""The recipe -> format -> lossless table of docs/export.md, measured on the demo model.

    python -m compressor.export.table                       # every preset, every format
    python -m compressor.export.table --presets int8,fp8 --formats gguf

For each preset: compress the demo model, export it to each format, load the export with transformers
(fp32) and measure
  - max |dW|: largest difference between a written weight (decoded by the format's own package) and the
    lab's weight, over all linear layers;
  - logits vs lab: max |logits| difference against the lab's compressed model on a 32-token probe (the lab's
    int4/int8 CPU kernels compute in bf16, so this is not zero even for exact weights);
  - logits vs weights: the same against a dense fp32 model holding the lab's weights exactly (the plain
    transformers export, itself checked bit-exact): the error the export adds, alone.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

import torch

FORMATS = ("compressed-tensors", "gguf", "transformers")
# shown beside the presets: the recipe whose GGUF transcription is exact (Q4_0)
EXTRA = {"w4-g32-sym (RTN, not a preset)": {"stages": [{"method": "rtn", "bits": 4, "group_size": 32,
                                                        "symmetric": True}]}}


def condense(notes: list[str]) -> str:
    """Model notes in one cell, a remark repeated per layer ("model.layers.3.mlp.up_proj: 50.0% zeros ...") said
    once with its count: "42 layers: 50.0% zeros ..."."""
    counts: dict[str, int] = {}
    for m in notes:
        head, sep, rest = m.partition(": ")
        key = rest if sep and re.fullmatch(r"[\w.]*layers\.\d+\.[\w.]+", head) else m
        counts[key] = counts.get(key, 0) + (1 if key != m else 0)
    return "; ".join(f"{n} layers: {k}" if n else k for k, n in counts.items())


def _row(name: str, fmt: str, model, tokenizer, ref_logits, ids, folder: Path) -> dict:
    from compressor.export import ExportRefused, export_model
    from compressor.export.verify import load_export

    try:
        result = export_model(model, tokenizer, fmt, folder)
    except ExportRefused as e:
        return {"recipe": name, "format": fmt, "written": f"refused: {e.what}", "lossless": "-"}
    row = {"recipe": name, "format": fmt, "written": result.written(), "lossless": "yes" if result.lossless else "no",
           "max_dw": f"{result.max_abs_err:.2g}", "bytes": result.bytes_written,
           "note": condense([m for m in result.model_notes if not m.startswith("tokenizer")])}
    if not result.transformers_loads:
        return row  # llama.cpp only: transformers cannot load it to measure logits
    with torch.no_grad():
        got = load_export(folder, fmt)(input_ids=ids).logits
        lab = model(input_ids=ids).logits
    row["vs_lab"] = f"{float((got - lab).abs().max()):.3g}"
    if ref_logits is not None:
        row["vs_weights"] = f"{float((got - ref_logits).abs().max()):.3g}"
    return row


def measure(recipes: dict, formats=FORMATS, log=print) -> list[dict]:
    import compressor
    from compressor.export import ExportRefused, export_model
    from compressor.export.verify import load_export, probe_ids
    from compressor.models.loading import load_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, recipe in recipes.items():
            t0 = time.perf_counter()
            model, tokenizer = load_model("demo")
            model, _ = compressor.compress(model, recipe)
            ids = probe_ids(model.config.vocab_size)
            # the lab's weights, exactly, in fp32: the plain export (its notes must all be exact)
            ref_dir = Path(tmp) / f"{len(rows)}-ref"
            ref_logits = None
            try:
                ref = export_model(model, tokenizer, "transformers", ref_dir, dtype="float32")
                assert ref.lossless, "the fp32 plain export must hold the lab's weights exactly"
                with torch.no_grad():
                    ref_logits = load_export(ref_dir, "transformers")(input_ids=ids).logits
            except ExportRefused:
                pass  # no transformers folder can hold it: that column stays empty
            for fmt in formats:
                rows.append(_row(name, fmt, model, tokenizer, ref_logits, ids, Path(tmp) / f"{len(rows)}-{fmt}"))
                log(markdown(rows[-1:], header=False).rstrip())
            log(f"{name}: {time.perf_counter() - t0:.0f} s")
    return rows


def markdown(rows: list[dict], header: bool = True) -> str:
    head = "" if not header else ("| recipe | format | linear layers written as | lossless | max abs dW | logits vs lab | "
            "logits vs weights |\n|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['recipe']} | {r['format']} | {r['written']} | {r['lossless']} | {r.get('max_dw', '-')} | "
                   f"{r.get('vs_lab', '-')} | {r.get('vs_weights', '-')} |\n" for r in rows)
    notes = sorted({f"- {r['recipe']} / {r['format']}: {r['note']}" for r in rows if r.get("note")})
    return head + body + ("\n" + "\n".join(notes) + "\n" if notes and header else "")


def main(argv=None) -> None:
    import os

    from compressor import list_presets

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", help="comma-separated preset names (default: all, plus w4-g32-sym)")
    p.add_argument("--formats", default=",".join(FORMATS))
    args = p.parse_args(argv)
    recipes = {n: n for n in (args.presets.split(",") if args.presets else list_presets())}
    if not args.presets:
        recipes.update(EXTRA)
    t0 = time.perf_counter()
    rows = measure(recipes, tuple(args.formats.split(",")), log=lambda m: print(m, flush=True))
    print(markdown(rows))
    print(f"{time.perf_counter() - t0:.0f} s, load average {os.getloadavg()[0]:.1f} at the end, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    main()
