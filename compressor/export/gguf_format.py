"""GGUF (llama.cpp, Ollama, LM Studio; transformers reads it with `gguf_file=`), written with the `gguf` package.

Per linear layer (see gguf_blocks.py for the block layouts and why each is or is not exact):

    lab weight                                  GGUF type   status
    int4 sym, groups of 32k                     Q4_0        lossless
    int4 asym (integer or HQQ fractional zeros) Q4_1        rounded (m = -zeros*scale in fp16), measured
    int8 sym, groups of 32k                     Q8_0        lossless
    int8 rows + fp32 scale (W8A8, LLM.int8)     Q8_0        rounded (scale in fp16), measured
    int4/int8 with act-order perm, groups not   Q4_x/Q8_0   requantized by gguf's own quantizer, measured
      a multiple of 32, int8 asym, fp8
    int2 / int3                                 refused (no simple type): compressed-tensors holds them
    dense, or rows not a multiple of 32         F16 / BF16 / F32 (auto: the smallest exact one)

Like llama.cpp's converter, q_proj and k_proj rows are reordered for llama.cpp's rotary layout (a row
permutation, which keeps blocks intact); norms are F32. Architecture: Llama (no biases, default RoPE).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compressor.export import gguf_blocks as blocks
from compressor.export.common import (
    ExportOptions,
    check_model,
    export_config,
    on_mismatch,
    other_tensors,
    pick_dtype,
    tied_head,
)
from compressor.export.gguf_vocab import read_vocab, write_vocab
from compressor.export.result import ExportRefused, TensorNote, note_for
from compressor.export.source import DenseWeight, IntWeight, LabWeight, ModelFacts, ScaledWeight

FMT = "GGUF"
ARCHS = ("llama",)
CT_HINT = ("export to compressed-tensors, whose pack-quantized format holds 2-, 3-, 4- and 8-bit groups as they "
           "are; or pass mismatch='dense' to write these layers as floats")


@dataclass
class _Tensor:
    """One GGUF tensor: data as the writer takes it and the ggml type."""

    data: np.ndarray
    qtype: object  # gguf.GGMLQuantizationType


def _qtypes():
    from gguf import GGMLQuantizationType as T

    return T


def _float_tensor(t: torch.Tensor, dtype: torch.dtype) -> _Tensor:
    T = _qtypes()
    if dtype == torch.bfloat16:  # numpy has no bfloat16: hand the bytes over with their type
        data = t.to(torch.bfloat16).contiguous().view(torch.uint16).numpy().view(np.uint8)
        return _Tensor(data.reshape(*t.shape[:-1], -1), T.BF16)
    qtype = T.F16 if dtype == torch.float16 else T.F32
    return _Tensor(t.to(dtype).contiguous().numpy(), qtype)


def _decode(t: _Tensor, shape: tuple[int, int]) -> torch.Tensor:
    T = _qtypes()
    if t.qtype in (T.F16, T.F32):
        return torch.from_numpy(t.data.astype(np.float32)).reshape(shape)
    return blocks.dequantize(t.data, t.qtype, shape)


def _encode_int(name: str, w: IntWeight, opts: ExportOptions) -> tuple[_Tensor | None, str, str]:
    """(tensor or None for dense, status if exact, why) for one lab integer layer."""
    T = _qtypes()
    k = w.q.shape[1]
    if k % blocks.BLOCK:
        return None, "dense", f"{k} columns are not a multiple of GGUF's block of 32"
    if w.bits not in (4, 8):
        if opts.mismatch == "dense":
            return None, "dense", f"GGUF's simple types have no {w.bits}-bit type"
        raise ExportRefused(FMT, f"{w.bits}-bit weights ({name}, {w.describe()}): its simple block types are "
                            "4- and 8-bit (Q4_0, Q4_1, Q8_0), and K-quants are not a transcription", CT_HINT)
    exact = w.perm is None and w.group_size % blocks.BLOCK == 0 and (w.bits == 4 or w.symmetric)
    if exact:
        if w.bits == 8:
            return _Tensor(blocks.pack_int8(w), T.Q8_0), "lossless", ""
        if w.symmetric:
            return _Tensor(blocks.pack_q4_0(w), T.Q4_0), "lossless", ""
        return _Tensor(blocks.pack_q4_1(w), T.Q4_1), "rounded", "Q4_1 stores the min -zeros*scale in fp16"
    why = ("act-order permutation: GGUF has no column permutation" if w.perm is not None else
           f"groups of {w.group_size} do not split into blocks of 32" if w.group_size % blocks.BLOCK else
           "asymmetric 8-bit: Q8_0 has no zero point")
    if on_mismatch(FMT, name, why, opts, "export to compressed-tensors") == "dense":
        return None, "dense", why
    qtype = T.Q8_0 if w.bits == 8 else (T.Q4_0 if w.symmetric else T.Q4_1)
    return _Tensor(blocks.requantize(w.lab_dense(), qtype), qtype), "requantized", why + "; re-quantized by gguf"


def _encode_scaled(name: str, w: ScaledWeight, opts: ExportOptions) -> tuple[_Tensor | None, str, str]:
    T = _qtypes()
    if w.shape[1] % blocks.BLOCK:
        return None, "dense", f"{w.shape[1]} columns are not a multiple of GGUF's block of 32"
    if not w.is_fp8:
        why = "Q8_0 stores the row scale in fp16"
        if w.dynamic_int8_inputs:
            why += "; activations: llama.cpp quantizes them per block of 32 in its own kernels, not per token"
        return _Tensor(blocks.pack_scaled_int8(w), T.Q8_0), "rounded", why
    why = "GGUF has no FP8 type"
    if on_mismatch(FMT, name, why, opts, "export to compressed-tensors (float-quantized holds FP8)") == "dense":
        return None, "dense", why
    return _Tensor(blocks.requantize(w.lab_dense(), T.Q8_0), T.Q8_0), "requantized", why + "; re-quantized to Q8_0"


def _encode_dense(name: str, w: DenseWeight, opts: ExportOptions) -> tuple[_Tensor | None, str, str]:
    if not w.nominal_bits:
        return None, "dense", "" if w.origin == "dense" else f"{w.origin}: written dequantized"
    T = _qtypes()
    why = f"{w.origin}: GGUF has no such code book"
    if w.shape[1] % blocks.BLOCK or on_mismatch(FMT, name, why, opts, "keep the lab's format") == "dense":
        return None, "dense", why + ": written dequantized"
    return _Tensor(blocks.requantize(w.weight, T.Q4_1), T.Q4_1), "requantized", why + "; re-quantized to Q4_1"


def _encode_linear(name: str, w: LabWeight, opts: ExportOptions) -> tuple[_Tensor | None, str, str]:
    if isinstance(w, IntWeight):
        return _encode_int(name, w, opts)
    if isinstance(w, ScaledWeight):
        return _encode_scaled(name, w, opts)
    return _encode_dense(name, w, opts)


def _float_source(w: LabWeight) -> torch.Tensor:
    """What a linear written as floats holds: a dense layer's own weight, else the lab's dequantized one."""
    return w.weight if isinstance(w, DenseWeight) else w.lab_dense()


def _rope_rows(n_rows: int, n_head: int) -> torch.Tensor:
    """Row order llama.cpp's converter gives q/k: per head, the two rotary halves interleaved."""
    idx = torch.arange(n_rows).reshape(n_head, 2, n_rows // n_head // 2)  # (heads, 2, head_dim / 2)
    return idx.transpose(1, 2).reshape(-1)


def check_arch(config) -> None:
    """ExportRefused for a Llama config this writer cannot describe to llama.cpp (RoPE scaling, biases, activation)."""
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    scaling = getattr(config, "rope_scaling", None)
    if rope_type != "default" or (isinstance(scaling, dict) and scaling.get("rope_type", "default") != "default"):
        raise ExportRefused(FMT, f"RoPE type {rope_type!r} (this writer writes default RoPE)",
                            "export to compressed-tensors or transformers")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        raise ExportRefused(FMT, "a Llama with attention or MLP biases (transformers' GGUF reader builds none)",
                            "export to compressed-tensors or transformers")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ExportRefused(FMT, f"activation {config.hidden_act!r} (llama.cpp's llama uses silu)",
                            "export to compressed-tensors or transformers")


def encode(model: nn.Module, tokenizer, linears: dict[str, LabWeight], facts: ModelFacts, opts: ExportOptions):
    """(tensors {gguf name: _Tensor}, config, vocab, notes, model notes) of the GGUF export."""
    import gguf

    model_notes = check_model(FMT, facts, opts, supported_types=ARCHS)
    if tokenizer is None:
        raise ExportRefused(FMT, "a model without its tokenizer (GGUF files carry the vocabulary)",
                            "pass the tokenizer the model was loaded with")
    head = tied_head(model)
    linears = {n: w for n, w in linears.items() if n != head}
    for name, w in linears.items():
        if w.bias is not None:
            raise ExportRefused(FMT, f"{name}'s bias (transformers' GGUF reader builds Llama without biases)",
                                "export to compressed-tensors or transformers")
    planned = {n: _encode_linear(n, w, opts) for n, w in linears.items()}
    others = dict(other_tensors(model, linears))
    # written as floats: 2-D tensors outside the linears, and the linears that got no block type
    floats = [t for t in others.values() if t.dim() == 2] + [_float_source(linears[n]) for n, p in planned.items()
                                                             if p[0] is None]
    config = export_config(model, facts, pick_dtype(floats, opts.dtype))
    check_arch(config)
    vocab = read_vocab(tokenizer, config.vocab_size)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)

    def gguf_name(hf: str) -> str:
        base, _, suffix = hf.rpartition(".")
        mapped = names.get_name(base)
        if mapped is None:
            raise ExportRefused(FMT, f"tensor {hf} (no llama GGUF name)", "export to compressed-tensors or transformers")
        return f"{mapped}.{suffix}"

    tensors: dict[str, _Tensor] = {}
    notes: list[TensorNote] = []
    for name, (t, status, why) in planned.items():
        w = linears[name]
        ref = w.lab_dense()
        if t is None:
            t = _float_tensor(_float_source(w), config.dtype)
        decoded = _decode(t, ref.shape)
        n_head = {"q_proj": config.num_attention_heads, "k_proj": config.num_key_value_heads}.get(name.split(".")[-1])
        if n_head:  # llama.cpp's rotary layout: a row permutation, blocks intact
            t.data = t.data[_rope_rows(ref.shape[0], n_head).numpy()]
        tensors[gguf_name(f"{name}.weight")] = t
        notes.append(note_for(name, w.describe(), t.qtype.name, status, ref, decoded, why))
    for hf, t in others.items():
        if not t.is_floating_point():
            continue
        tensors[gguf_name(hf)] = _float_tensor(t, torch.float32 if t.dim() == 1 else config.dtype)
    if head is not None:
        model_notes.append(f"{head} is tied to the input embeddings: no output tensor is written")
    model_notes += [f"{n}: {s:.1%} zeros stored densely (GGUF has no sparsity field)" for n, s in facts.sparsity.items()]
    model_notes.append(f"tokenizer: byte-level BPE, tokenizer.ggml.pre = {vocab.pre!r}"
                       + (", chat template included" if vocab.chat_template else ", no chat template on the tokenizer"))
    return tensors, config, vocab, notes, model_notes


def _file_type(tensors: dict[str, _Tensor]) -> int:
    """general.file_type: the type holding most weight elements among the 2-D tensors."""
    import gguf

    T = _qtypes()
    count: dict = {}
    for t in tensors.values():
        if t.data.ndim == 2:
            count[t.qtype] = count.get(t.qtype, 0) + t.data.size
    main = max(count, key=count.get)
    by_type = {T.F32: "ALL_F32", T.F16: "MOSTLY_F16", T.BF16: "MOSTLY_BF16", T.Q4_0: "MOSTLY_Q4_0",
               T.Q4_1: "MOSTLY_Q4_1", T.Q8_0: "MOSTLY_Q8_0"}
    return int(getattr(gguf.LlamaFileType, by_type[main]))


def write(model: nn.Module, tokenizer, path: Path, linears: dict[str, LabWeight], facts: ModelFacts,
          opts: ExportOptions, name: str = "model", recipe: dict | None = None) -> tuple[list[TensorNote], list[str]]:
    """Write one .gguf file at `path`; the lab's recipe, if given, as the string `compression_lab.recipe`."""
    import gguf

    tensors, config, vocab, notes, model_notes = encode(model, tokenizer, linears, facts, opts)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    theta = rope.get("rope_theta") if isinstance(rope, dict) else None
    path.parent.mkdir(parents=True, exist_ok=True)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_rope_dimension_count(head_dim)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(float(theta or getattr(config, "rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(config.rms_norm_eps)
    w.add_vocab_size(len(vocab.tokens))
    w.add_file_type(_file_type(tensors))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    write_vocab(w, vocab)
    if recipe:
        w.add_string("compression_lab.recipe", json.dumps(recipe))
    T = _qtypes()
    for gname, t in tensors.items():  # float16/float32 arrays carry their type; block bytes and bf16 name it
        w.add_tensor(gname, t.data, raw_dtype=None if t.qtype in (T.F16, T.F32) else t.qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return notes, model_notes
