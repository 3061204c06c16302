"""Decode loops for benchmarks/gpu_check.py, over a transformers Llama-family model's own modules.

    hf_decode       transformers' forward with its DynamicCache, one token at a time: how an app runs decode,
                    eager, so every kernel launch (and the Python around it) is paid per token
    StaticDecoder   the same modules (embedding, norms, projections, MLP, lm_head: QuantLinear where quantized)
                    over a static KV cache, every shape fixed, so one decode step (argmax and position update
                    included) is captured once as a CUDA graph and replayed: launch overhead gone
    random_llama    a LlamaForCausalLM of given shapes with random weights, built on the meta device and
                    filled on the target (a 7B shape in seconds on a GPU)
    rtn_quantize_   every linear of the decoder layers -> kernels.modules.QuantLinear (min-max RTN)

StaticDecoder.forward reproduces LlamaForCausalLM's logits (checked against it by gpu_check --dry-run).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from kernels.modules import QuantLinear


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_llama(shapes: dict, *, device: str, dtype: torch.dtype, seed: int = 0) -> nn.Module:
    """LlamaForCausalLM(LlamaConfig(**shapes)) with N(0, 0.02) weights and unit norms, in `dtype` on `device`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shapes)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).to(dtype)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=gen)
        rotary = type(model.model.rotary_emb)(config=config)  # its inv_freq buffer is not a parameter
        model.model.rotary_emb = rotary.to(device)
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.eval()


@torch.no_grad()
def rtn_quantize_(model: nn.Module, bits: int, group_size: int) -> int:
    """Replace every nn.Linear of the decoder layers by a QuantLinear (asymmetric min-max RTN); returns how many."""
    maxq = 2**bits - 1
    count = 0
    for layer in model.model.layers:
        for parent in list(layer.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is not nn.Linear:
                    continue
                w = child.weight.float()
                n, k = w.shape
                wg = w.reshape(n, k // group_size, group_size)  # (N, K/G, G)
                lo, hi = wg.amin(-1), wg.amax(-1)
                s = ((hi - lo) / maxq).clamp(min=1e-8)
                z = torch.round(-lo / s).clamp(0, maxq)
                q = torch.clamp(torch.round(wg / s[..., None]) + z[..., None], 0, maxq).to(torch.uint8)
                setattr(parent, name, QuantLinear.from_quantized(q.reshape(n, k), s, z, bits=bits,
                                                                 group_size=group_size, bias=child.bias))
                count += 1
    return count


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class StaticDecoder:
    """A Llama-family model's forward over a static KV cache [B, H_kv, max_len, head_dim] per layer."""

    def __init__(self, model: nn.Module, max_len: int, batch: int = 1):
        cfg = model.config
        self.model, self.max_len = model, max_len
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        p = model.model.embed_tokens.weight
        shape = (batch, self.kv_heads, max_len, self.head_dim)
        self.k = [torch.zeros(shape, device=p.device, dtype=p.dtype) for _ in model.model.layers]
        self.v = [torch.zeros(shape, device=p.device, dtype=p.dtype) for _ in model.model.layers]
        self.slots = torch.arange(max_len, device=p.device)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """ids [B, T] at positions pos [T] (int64, on the device) -> logits [B, T, vocab]; writes the cache."""
        m = self.model.model
        b, t = ids.shape
        h = m.embed_tokens(ids)  # (B, T, D)
        cos, sin = m.rotary_emb(h, pos[None, :])  # (1, T, hd)
        cos, sin = cos[:, None], sin[:, None]  # (1, 1, T, hd)
        mask = self.slots[None, :] <= pos[:, None]  # (T, L): causal over the filled cache
        for i, layer in enumerate(m.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
            k = attn.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # (B, Hkv, T, hd)
            v = attn.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            self.k[i].index_copy_(2, pos, k)
            self.v[i].index_copy_(2, pos, v)
            o = F.scaled_dot_product_attention(q, self.k[i], self.v[i], attn_mask=mask,
                                               enable_gqa=self.heads != self.kv_heads)  # (B, H, T, hd)
            h = h + attn.o_proj(o.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.model.lm_head(m.norm(h))  # (B, T, V)


def hf_decode(model: nn.Module, prompt: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    """(tokens/s, tokens) of greedy decode through transformers' own forward and DynamicCache, eager."""
    with torch.no_grad():
        out = model(input_ids=prompt, use_cache=True)
        past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)  # (B, 1)
        tokens = []
        _sync(prompt.device)
        t0 = time.perf_counter()
        for _ in range(new_tokens):
            out = model(input_ids=tok, past_key_values=past, use_cache=True)
            past, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
            tokens.append(tok)
        _sync(prompt.device)
        seconds = time.perf_counter() - t0
    return new_tokens / seconds, [int(t[0, 0]) for t in tokens]


def static_decode(model: nn.Module, prompt: torch.Tensor, new_tokens: int, *, graph: bool,
                  warmup: int = 2) -> tuple[float, list[int]]:
    """(tokens/s, tokens) of greedy decode through StaticDecoder, each step eager or one CUDA graph replay."""
    t_prompt = prompt.shape[1]
    dec = StaticDecoder(model, max_len=t_prompt + warmup + new_tokens + 1, batch=prompt.shape[0])
    device = prompt.device
    pos = torch.arange(t_prompt, device=device)
    tok = dec.forward(prompt, pos)[:, -1:].argmax(-1)  # (B, 1)
    pos = torch.tensor([t_prompt], device=device)
    out = torch.zeros(prompt.shape[0], warmup + new_tokens, dtype=torch.long, device=device)
    start = pos.clone()

    def step():
        nxt = dec.forward(tok, pos)[:, -1:].argmax(-1)
        out.index_copy_(1, pos - start, nxt)
        tok.copy_(nxt)
        pos.add_(1)

    for _ in range(warmup):  # builds each layer's runtime layout and autotunes: never inside a capture
        step()
    run = step
    if graph:
        cuda_graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(cuda_graph):
            step()
        run = cuda_graph.replay
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(new_tokens):
        run()
    _sync(device)
    seconds = time.perf_counter() - t0
    return new_tokens / seconds, out[0, warmup:].tolist()
