"""Engine parity on the demo model: our RTN / GPTQ / AWQ against the fp32 baseline, and our GPTQ against
llm-compressor's GPTQ (W4A16, group 128) on the same calibration tokens.

    python -m benchmarks.parity_llmcompressor                        # our engine only
    /tmp/llmc/bin/python -m benchmarks.parity_llmcompressor          # plus llm-compressor, when importable

llm-compressor lives in its own venv (`python -m venv --system-site-packages /tmp/llmc &&
/tmp/llmc/bin/pip install llmcompressor==0.14.*`) because it pins other transformers versions.
Perplexity here is a plain mean token NLL over `seq_len` windows of the held-out evaluation text
(compressor.measure.evaldata.held_out_text); calibration uses the builtin calibration text, which is disjoint
from it. Every figure is measured on the run; nothing is stored.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from compressor import calibration_batches, compress  # noqa: E402
from compressor.measure.evaldata import held_out_text  # noqa: E402
from compressor.models.loading import DEMO_DIR  # noqa: E402

# Our settings matching llm-compressor's W4A16 preset scheme: symmetric int4, groups of 128.
OURS_W4A16 = {"method": "gptq", "bits": 4, "group_size": 128, "symmetric": True}


def eval_windows(tokenizer, seq_len: int, n_windows: int) -> torch.Tensor:
    ids = torch.tensor(tokenizer(held_out_text(), add_special_tokens=False)["input_ids"])
    n = min(n_windows, ids.numel() // seq_len)
    return ids[: n * seq_len].reshape(n, seq_len)  # (n, seq_len)


@torch.no_grad()
def perplexity(model, windows: torch.Tensor, batch: int = 8) -> float:
    nll, count = 0.0, 0
    for chunk in windows.split(batch):
        logits = model(input_ids=chunk, use_cache=False).logits[:, :-1].float()  # (B, L-1, V)
        target = chunk[:, 1:]
        nll += torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                                                 reduction="sum").item()
        count += target.numel()
    return math.exp(nll / count)


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, use_safetensors=True).eval()
    return model, AutoTokenizer.from_pretrained(path)


def run_ours(base, recipe, calib, windows) -> dict:
    model = copy.deepcopy(base)
    t0, c0 = time.perf_counter(), time.process_time()
    model, report = compress(model, recipe, calibration=calib)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"ppl": perplexity(model, windows), "seconds": seconds, "cpu": cpu, "bits": report.effective_bits}


def run_llmcompressor(base, calib, windows, actorder) -> dict | None:
    try:
        from datasets import Dataset
        from llmcompressor import oneshot
        from llmcompressor.modifiers.quantization import GPTQModifier
    except ImportError as e:
        print(f"llm-compressor is not importable here ({e}); run this script with /tmp/llmc/bin/python")
        return None
    model = copy.deepcopy(base)
    data = Dataset.from_dict({"input_ids": calib.tolist(), "attention_mask": torch.ones_like(calib).tolist()})
    modifier = GPTQModifier(targets="Linear", scheme="W4A16", ignore=["lm_head"], actorder=actorder)
    t0, c0 = time.perf_counter(), time.process_time()
    oneshot(model=model, dataset=data, recipe=modifier, max_seq_length=calib.shape[1],
            num_calibration_samples=calib.shape[0])
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    # llm-compressor keeps fake-quantized (quantize-dequantize) weights in the model after oneshot.
    return {"ppl": perplexity(model, windows), "seconds": seconds, "cpu": cpu, "bits": None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEMO_DIR, help="a model folder, or 'demo' (the bundled model)")
    ap.add_argument("--n-samples", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--eval-windows", type=int, default=48)
    ap.add_argument("--skip-ours", action="store_true", help="only the W4A16 parity rows")
    args = ap.parse_args()
    torch.manual_seed(0)
    if str(args.model) == "demo" and not args.model.exists():
        args.model = DEMO_DIR
    base, tok = load(args.model)
    calib = calibration_batches(tok, "builtin", args.n_samples, args.seq_len)
    windows = eval_windows(tok, args.seq_len, args.eval_windows)
    print(f"model {args.model} | calibration {tuple(calib.shape)} builtin | eval {tuple(windows.shape)} held-out "
          f"| torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [("fp32 baseline", {"ppl": perplexity(base, windows), "seconds": 0.0, "cpu": 0.0, "bits": 32.0})]
    if not args.skip_ours:
        for name in ("int8", "w4-g128", "gptq-w4-g128", "awq-w4-g128", "w3-g128", "gptq-w3-g128"):
            rows.append((f"ours {name}", run_ours(base, name, calib, windows)))
    # llm-compressor 0.14's GPTQModifier defaults to static act-order; ours takes the same setting.
    for actorder in ("static",):
        rows.append((f"ours gptq W4A16 g128 sym actorder={actorder}",
                     run_ours(base, {**OURS_W4A16, "actorder": actorder}, calib, windows)))
        theirs = run_llmcompressor(base, calib, windows, actorder)
        if theirs is not None:
            import llmcompressor

            rows.append((f"llm-compressor {llmcompressor.__version__} GPTQ W4A16 g128 actorder={actorder}", theirs))
    base_ppl = rows[0][1]["ppl"]
    # Wall time depends on what else shares the CPU; CPU seconds (all threads of this process) less so.
    print("\n| run | perplexity | vs fp32 | effective bits | compress wall s | compress CPU s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name, r in rows:
        bits = f"{r['bits']:.3f}" if r["bits"] else "-"
        print(f"| {name} | {r['ppl']:.3f} | {100 * (r['ppl'] / base_ppl - 1):+.2f}% | {bits} | {r['seconds']:.1f} | {r['cpu']:.1f} |")


if __name__ == "__main__":
    main()
