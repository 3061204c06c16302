"""`config.pruned_layout`: the per-layer shapes structured pruning leaves (heads, KV heads and MLP
channels per decoder layer), and rebuilding them in an empty model skeleton when a pruned model is
loaded (compressor/engine/serialize.py). The "structured" stage writes it
(compressor/engine/methods/prune_structured.py); KV byte counts read it (compressor/engine/kvcache).
"""

from __future__ import annotations

from torch import nn

LAYOUT_KEYS = ("num_attention_heads", "num_key_value_heads", "intermediate_size")


def pruned_layout(config, n_layers: int) -> dict[str, list[int]]:
    """config.pruned_layout: per-layer head and channel counts (created with the uniform values)."""
    layout = getattr(config, "pruned_layout", None)
    if not layout:
        layout = {"num_attention_heads": [config.num_attention_heads] * n_layers,
                  "num_key_value_heads": [getattr(config, "num_key_value_heads", None)
                                          or config.num_attention_heads] * n_layers,
                  "intermediate_size": [config.intermediate_size] * n_layers}
        config.pruned_layout = layout
    return layout


def _empty_linear(like: nn.Linear, in_features: int, out_features: int) -> nn.Linear:
    """A meta-device linear with `like`'s bias and dtype, to be filled by load_state_dict(assign=True)."""
    return nn.Linear(in_features, out_features, bias=like.bias is not None, dtype=like.weight.dtype, device="meta")


def resize_to_layout(layers: nn.ModuleList, layout: dict) -> None:
    """Give an empty model's decoder layers the per-layer shapes of `config.pruned_layout`, in place.

    Mirrors the "structured" stage: q/k/v/o_proj are resized to n_heads * head_dim and
    n_kv_heads * head_dim, gate/up/down_proj to intermediate_size channels (and the MLP's `intermediate_size` attribute);
    the attention keeps head_dim and num_key_value_groups, which removing whole KV groups never changes.
    Layers whose shapes already match are left alone. Raises ValueError naming the layer and value
    when the layout does not fit the model.
    """
    if not isinstance(layout, dict) or any(k not in layout for k in LAYOUT_KEYS):
        raise ValueError(f"pruned_layout needs the lists {', '.join(LAYOUT_KEYS)}, got {layout!r}")
    for key in LAYOUT_KEYS:
        v = layout[key]
        if not isinstance(v, list) or len(v) != len(layers) or \
                not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in v):
            raise ValueError(f"pruned_layout[{key!r}] must list a positive integer for each of the "
                             f"{len(layers)} decoder layers, got {v!r}")
    for i, layer in enumerate(layers):
        n_heads, n_kv, n_ch = (layout[k][i] for k in LAYOUT_KEYS)
        attn, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        if attn is not None and hasattr(attn, "o_proj"):
            hd, n_rep = attn.head_dim, attn.num_key_value_groups
            if n_heads != n_kv * n_rep:
                raise ValueError(f"layer {i}: {n_heads} heads over {n_kv} KV heads, but this attention "
                                 f"shares each KV head among {n_rep} query heads; structured pruning "
                                 f"removes whole KV groups and keeps heads = {n_rep} * KV heads")
            if attn.q_proj.out_features != n_heads * hd or attn.k_proj.out_features != n_kv * hd:
                hidden = attn.q_proj.in_features
                for child, n_out in (("q_proj", n_heads * hd), ("k_proj", n_kv * hd), ("v_proj", n_kv * hd)):
                    setattr(attn, child, _empty_linear(getattr(attn, child), hidden, n_out))
                attn.o_proj = _empty_linear(attn.o_proj, n_heads * hd, attn.o_proj.out_features)
        if mlp is not None and hasattr(mlp, "down_proj") and mlp.down_proj.in_features != n_ch:
            hidden = mlp.down_proj.out_features
            for child in ("gate_proj", "up_proj"):
                setattr(mlp, child, _empty_linear(getattr(mlp, child), hidden, n_ch))
            mlp.down_proj = _empty_linear(mlp.down_proj, n_ch, hidden)
            if hasattr(mlp, "intermediate_size"):
                mlp.intermediate_size = n_ch
