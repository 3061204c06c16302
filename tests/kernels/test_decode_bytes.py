"""benchmarks.decode_speed.decode_bytes: the weight bytes a decode step reads, the memory-bound ceiling the
speed table prints beside each ratio. Runtime copies count instead of the stored bytes they replace."""

from __future__ import annotations

import pytest
import torch

from benchmarks.decode_speed import decode_bytes
from compressor.engine.compress import compress
from compressor.engine.recipe import load_recipe
from tests.helpers import tiny_llama

H, FFN, L, V = 128, 256, 2, 256
LINEARS = L * (4 * H * H + 3 * H * FFN)  # q, k, v, o and gate, up, down per layer (kv_heads = heads)


def test_baseline_reads_every_linear_and_lm_head_not_the_embedding():
    model = tiny_llama(hidden=H, intermediate=FFN, layers=L, vocab=V)
    norms = (2 * L + 1) * H
    assert decode_bytes(model) == 4 * (LINEARS + V * H + norms)
    model.model.embed_tokens.weight = model.lm_head.weight  # tied: the table is read once, as lm_head
    assert decode_bytes(model) == 4 * (LINEARS + V * H + norms)


@pytest.mark.parametrize("recipe,per_weight", [("fp8", 2), ("int8", 1)])
def test_runtime_copy_counts_not_the_stored_bytes(recipe, per_weight):
    model, _ = compress(tiny_llama(hidden=H, intermediate=FFN, layers=L, vocab=V), load_recipe(recipe))
    model(input_ids=torch.tensor([[1, 2, 3]]))  # CPU runtime layouts in place
    rest = 4 * (V * H + (2 * L + 1) * H)  # fp32 lm_head and norms
    per_row = 4 if recipe == "fp8" else 2  # fp32 scale (FP8's copy) or bf16 native scale (int8pack)
    rows = L * (4 * H + 2 * FFN + H)
    assert decode_bytes(model) == per_weight * LINEARS + per_row * rows + rest
