"""KV-cache review: regressions found against the papers and transformers' Cache contract."""

from __future__ import annotations

import pytest
import torch

from compressor.engine import kvcache as kc
from compressor.engine.methods.kv import StreamingConfig
from tests.helpers import random_tokens, tiny_llama


def _left_padded(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of different lengths left-padded with 0: (ids [B, T], attention_mask [B, T])."""
    T = max(r.numel() for r in rows)
    ids = torch.stack([torch.cat([r.new_zeros(T - r.numel()), r]) for r in rows])  # (B, T)
    mask = torch.stack([(torch.arange(T) >= T - r.numel()).long() for r in rows])  # (B, T)
    return ids, mask


@pytest.mark.parametrize("pad", [3, 8, 20])
def test_streaming_left_padded_batch_generates_what_each_row_generates_alone(pad):
    # The sinks are each row's first real tokens, not its padding; once tokens were evicted, the padding mask
    # (read at stored index + offset) used to make a padded row attend to pad keys kept as "sinks".
    model = tiny_llama(hidden=128, layers=2)
    rows = [random_tokens(1, 6, seed=1)[0], random_tokens(1, 6 + pad, seed=2)[0]]
    ids, mask = _left_padded(rows)
    cfg = StreamingConfig(sinks=4, window=12)
    kw = dict(max_new_tokens=30, do_sample=False, pad_token_id=0)
    with kc.kv_cache_in_generate(model, cfg):
        batch = model.generate(ids, attention_mask=mask, **kw)[:, ids.shape[1]:]
        alone = [model.generate(r[None], attention_mask=torch.ones_like(r[None]), **kw)[0, r.numel():] for r in rows]
    assert torch.equal(batch[0], alone[0]) and torch.equal(batch[1], alone[1])


def test_streaming_padding_survives_beam_expansion():
    model = tiny_llama(hidden=128, layers=2)
    rows = [random_tokens(1, 5, seed=3)[0], random_tokens(1, 14, seed=4)[0]]
    ids, mask = _left_padded(rows)
    kw = dict(max_new_tokens=20, do_sample=False, pad_token_id=0, num_beams=2)
    with kc.kv_cache_in_generate(model, StreamingConfig(sinks=2, window=8)):
        batch = model.generate(ids, attention_mask=mask, **kw)[:, ids.shape[1]:]
        alone = model.generate(rows[0][None], attention_mask=torch.ones_like(rows[0][None]), **kw)[0, 5:]
    assert torch.equal(batch[0], alone)
