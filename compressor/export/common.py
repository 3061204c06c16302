"""What every export format shares: options, model-level refusals, the config written, float tensors."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from compressor.export.result import TRANSFORMERS_CANNOT_LOAD, ExportRefused
from compressor.export.source import LabWeight, ModelFacts

MISMATCH = ("requantize", "dense", "refuse")
FLOAT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# config.json keys only the lab reads: never copied into an export
LAB_CONFIG_KEYS = ("compression_lab", "pruned_layout", "quantization_config")
LAB_FORMAT_HINT = ("keep the lab's own format (compressor.save_compressed, or the run's model download), "
                   "which holds it")


@dataclass
class ExportOptions:
    """How an export treats what its format cannot hold exactly.

    Args:
        mismatch: for weights whose grid the format cannot transcribe exactly: "requantize" (onto the
            format's nearest grid of the same bit width, error measured; refused when the format has no
            type of that width), "dense" (write the lab's dequantized weight as floats), or "refuse".
        dtype: float dtype of the tensors written as floats (norms, embeddings, dense layers): "auto"
            picks the smallest of float16, bfloat16, float32 that holds every such tensor exactly.
        drop_kv_cache: export the weights of a model whose recipe has a KV-cache stage, without that stage
            (no format records the lab's KV-cache compression); refused otherwise.
    """

    mismatch: str = "requantize"
    dtype: str = "auto"
    drop_kv_cache: bool = False

    def __post_init__(self) -> None:
        from compressor.errors import RecipeError

        if self.mismatch not in MISMATCH:
            raise RecipeError("mismatch", self.mismatch, f"choose one of {MISMATCH}")
        if self.dtype != "auto" and self.dtype not in FLOAT_DTYPES:
            raise RecipeError("dtype", self.dtype, f"choose auto or one of {tuple(FLOAT_DTYPES)}")


def on_mismatch(fmt: str, name: str, why: str, opts: ExportOptions, hint: str) -> str:
    """"requantize" or "dense" for a weight `fmt` cannot transcribe exactly; ExportRefused under "refuse"."""
    if opts.mismatch == "refuse":
        raise ExportRefused(fmt, f"{name} exactly ({why})", f"{hint}; or pass mismatch='requantize' or 'dense'")
    return opts.mismatch


def kv_cache_refused(fmt: str, method: str) -> ExportRefused:
    """The refusal of a KV-cache stage: no export format records run-time cache compression."""
    return ExportRefused(fmt, f"the KV-cache stage ({method}): it compresses the cache at run time and no export "
                         "format records it", f"{LAB_FORMAT_HINT}; or pass drop_kv_cache=True to export the weights alone")


def check_model(fmt: str, facts: ModelFacts, opts: ExportOptions, supported_types: tuple[str, ...] | None = None
                ) -> list[str]:
    """Refuse what no weight file of `fmt` can hold; returns model-level notes for what is dropped."""
    notes = []
    if supported_types is not None and facts.model_type not in supported_types:
        raise ExportRefused(fmt, f"a {facts.model_type!r} model (this writer knows {', '.join(supported_types)})",
                            "export to compressed-tensors or transformers, which hold any transformers architecture")
    if facts.kv_cache_method:
        if not opts.drop_kv_cache:
            raise kv_cache_refused(fmt, facts.kv_cache_method)
        notes.append(f"KV-cache stage ({facts.kv_cache_method}) dropped: the export runs with a full-precision cache")
    if facts.pruned_layout and facts.uniform_layout is None:
        varied = [k for k, v in facts.pruned_layout.items() if len(set(v)) > 1]
        raise ExportRefused(fmt, f"per-layer shapes from structured pruning ({', '.join(varied)} differ between "
                            "layers; one config value holds them all in transformers' and llama.cpp's readers)",
                            LAB_FORMAT_HINT)
    if facts.uniform_layout:
        heads = facts.uniform_layout.get("num_attention_heads")
        if heads and facts.hidden_size % heads:
            what = (f"{heads} attention heads with hidden size {facts.hidden_size} (structured pruning): transformers' "
                    "LlamaConfig refuses a hidden size that is not a multiple of the head count, even with head_dim set")
            if fmt != "GGUF":
                raise ExportRefused(fmt, what, f"export to GGUF for llama.cpp (which reads it), {LAB_FORMAT_HINT}, or "
                                    "prune a fraction of heads that leaves a divisor of the hidden size")
            notes.append(f"{what}: llama.cpp reads this file; {TRANSFORMERS_CANNOT_LOAD}")
        notes.append("structured pruning: every layer keeps "
                     + ", ".join(f"{k}={v}" for k, v in facts.uniform_layout.items()) + " (written to the config)")
    return notes


def export_config(model: nn.Module, facts: ModelFacts, dtype: torch.dtype):
    """A copy of the model's config for the export: lab-only keys removed, a uniform pruned layout applied."""
    config = copy.deepcopy(model.config)
    for key in LAB_CONFIG_KEYS:
        if hasattr(config, key):
            delattr(config, key)
    if facts.uniform_layout:
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        config.head_dim = head_dim  # explicit: fewer heads no longer divide hidden_size into it
        for key, value in facts.uniform_layout.items():
            setattr(config, key, value)
    if getattr(config, "tie_word_embeddings", False) and tied_head(model) is None:
        # the recipe gave the head its own (quantized) weights: a reader that ties would overwrite them
        config.tie_word_embeddings = False
    config.dtype = dtype
    config.architectures = [type(model).__name__]
    return config


def exact_in(t: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether every value of `t` survives a round trip through `dtype` unchanged."""
    return bool(torch.equal(t.to(dtype).to(t.dtype), t)) if t.is_floating_point() else True


def pick_dtype(tensors: list[torch.Tensor], requested: str) -> torch.dtype:
    """The float dtype for tensors written as floats: the requested one, or the smallest exact one."""
    if requested != "auto":
        return FLOAT_DTYPES[requested]
    for dtype in (torch.float16, torch.bfloat16):
        if all(exact_in(t, dtype) for t in tensors):
            return dtype
    return torch.float32


def other_tensors(model: nn.Module, linears: dict[str, LabWeight]) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every state-dict entry that does not belong to a linear layer: embeddings, norms.

    Tied weights (lm_head = embeddings) appear once, under their first name.
    """
    seen = set()
    for name, t in model.state_dict().items():
        if any(name.startswith(f"{m}.") for m in linears):
            continue
        key = (t.data_ptr(), tuple(t.shape))
        if t.numel() and key in seen:
            continue
        seen.add(key)
        yield name, t.detach()


def tied_head(model: nn.Module) -> str | None:
    """The name of the output head when it shares the embedding matrix (then it is not written)."""
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    if not getattr(cfg, "tie_word_embeddings", False):
        return None
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or emb is None or getattr(head, "weight", None) is not emb.weight:
        return None
    for name, module in model.named_modules():
        if module is head:
            return name
    return None
