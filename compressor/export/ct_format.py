"""compressed-tensors: what llm-compressor writes and transformers / vLLM load (`quant_method: compressed-tensors`).

Per linear layer (the `compressed-tensors` package's own schemes, packers and decoders are used):

    lab weight                         scheme (config_groups)                    tensors written
    int b-bit, integer zeros           weights int b, group G (channel if G = K)  weight_packed int32 [N, ceil(K b/32)]
      (q in [0, 2^b - 1])                symmetric when every zero is 2^(b-1)      weight_scale fp32 [N, K/G]
                                         format pack-quantized                     weight_zero_point int32 (asym)
                                                                                   weight_shape int64 [2]
    int8 W8A8 (SmoothQuant)            weights int8 channel sym + inputs int8      weight int8 [N, K], weight_scale [N, 1]
                                         dynamic per token; int-quantized
    LLM.int8 rows                      weights int8 channel sym; pack-quantized  as the int row above
    fp8 e4m3                           weights float8 channel; float-quantized     weight fp8 [N, K], weight_scale [N, 1]
    dense (pruned, low-rank folded)    listed in `ignore`                          weight (float)

The package stores q as signed ints q - 2^(b-1) and zero points likewise, so W = (q_s - zp_s) * scale is the
lab's (q - zeros) * scales exactly when zeros are integers. Scales are written in fp32 (the lab's fp16
values, exactly): the package dequantizes in the scale's dtype, and fp16 would round every product.
What it cannot hold exactly, with `mismatch="requantize"`:
  - fractional zeros (HQQ): integer zero points, scales refit (compressor.export.requant.integer_zeros);
  - act-order with a stored permutation: 0.20 removed `g_idx`, so the columns are put back in order and
    re-quantized onto contiguous groups of the same size.
Sparsity: compressed-tensors 0.20 has no sparsity field for dense layers (only MoE expert sparsity), so the
measured zero fraction is noted in the result and in config.json's `compression_lab_export` section.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from compressor.export.common import (
    ExportOptions,
    check_model,
    export_config,
    on_mismatch,
    other_tensors,
    pick_dtype,
    tied_head,
)
from compressor.export.requant import integer_zeros, regrid
from compressor.export.result import TRANSFORMERS_CANNOT_LOAD, TensorNote, note_for
from compressor.export.source import DenseWeight, IntWeight, LabWeight, ModelFacts, ScaledWeight

FMT = "compressed-tensors"


def _int_args(w: IntWeight, per_channel: bool):
    from compressed_tensors.quantization import QuantizationArgs

    return QuantizationArgs(num_bits=w.bits, type="int", symmetric=w.symmetric,
                            strategy="channel" if per_channel else "group",
                            group_size=None if per_channel else w.group_size)


def _encode_int(w: IntWeight) -> dict[str, torch.Tensor]:
    """Pack with the package's own packer: signed q, signed zero points packed along the output dim."""
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32

    offset = 2 ** (w.bits - 1)
    q_signed = (w.q.to(torch.int16) - offset).to(torch.int8)
    out = {"weight_packed": pack_to_int32(q_signed, w.bits), "weight_scale": w.scales.float().contiguous(),
           "weight_shape": torch.tensor(list(w.q.shape), dtype=torch.int64)}
    if not w.symmetric:
        zp = (w.zeros.float() - offset).round().to(torch.int8)  # (N, K/G)
        out["weight_zero_point"] = pack_to_int32(zp, w.bits, packed_dim=0)
    return out


def _plan_int(name: str, w: IntWeight, opts: ExportOptions) -> tuple[IntWeight | None, str, str]:
    """(weight to write or None for dense, status if exact, why) for one integer layer."""
    if w.perm is None and w.integer_zeros:
        return w, "lossless", ""
    if w.perm is not None:
        why = ("act-order permutation: compressed-tensors 0.20 removed g_idx, so columns are put back in order "
               "and re-quantized onto contiguous groups")
        hint = "export GPTQ with actorder='static', which stores no permutation"
    else:
        why = "fractional zeros (HQQ): integer zero points, scales refit by least squares"
        hint = "export to GGUF (Q4_1 holds a float min)"
    if on_mismatch(FMT, name, why, opts, hint) == "dense":
        return None, "dense", why
    if w.perm is not None:
        return regrid(w.lab_dense(), w.bits, w.group_size, w.symmetric, w.bias), "requantized", why
    return integer_zeros(w), "requantized", why


@dataclass
class _Entry:
    """One linear layer on its way into the file."""

    lab: LabWeight  # what the lab holds (the reference)
    target: LabWeight  # what is written: the lab weight itself, a re-quantized one, or a dense one
    status: str
    why: str = ""
    args: object = None  # QuantizationArgs of the weights; None for dense
    inputs: object = None  # QuantizationArgs of dynamic input activations (W8A8)
    scheme_fmt: str | None = None
    tensors: dict = field(default_factory=dict)


def _plan(name: str, w: LabWeight, opts: ExportOptions) -> _Entry:
    if isinstance(w, IntWeight):
        target, status, why = _plan_int(name, w, opts)
        return _Entry(w, target or DenseWeight(w.lab_dense(), w.bias, origin=w.describe()), status, why)
    if isinstance(w, ScaledWeight):
        return _Entry(w, w, "lossless")
    if w.nominal_bits:  # NF4 / FP4 codes: no such grid here
        why = f"{w.origin}: compressed-tensors has no such code book"
        if on_mismatch(FMT, name, why, opts, "keep the lab's format") == "requantize" and \
                w.shape[1] % w.nominal_group == 0:
            return _Entry(w, regrid(w.weight, w.nominal_bits, w.nominal_group, False, w.bias), "requantized",
                          why + f"; re-quantized to int{w.nominal_bits} groups of {w.nominal_group}")
        return _Entry(w, w, "dense", why + ": written dequantized")
    return _Entry(w, w, "dense", "" if w.origin == "dense" else f"{w.origin}: written dequantized")


def _encode_scaled(e: _Entry) -> None:
    from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32
    from compressed_tensors.quantization import QuantizationArgs

    w = e.target
    e.args = QuantizationArgs(num_bits=8, type="float" if w.is_fp8 else "int", symmetric=True, strategy="channel")
    if w.dynamic_int8_inputs:
        e.inputs = QuantizationArgs(num_bits=8, type="int", symmetric=True, strategy="token", dynamic=True)
    if w.is_fp8 or e.inputs is not None:
        e.scheme_fmt = "float-quantized" if w.is_fp8 else "int-quantized"
        e.tensors = {"weight": w.weight.contiguous()}
    else:  # int8 weight-only (LLM.int8 rows): the W8A16 layout vLLM reads
        e.scheme_fmt = "pack-quantized"
        e.tensors = {"weight_packed": pack_to_int32(w.weight.to(torch.int8), 8),
                     "weight_shape": torch.tensor(list(w.weight.shape), dtype=torch.int64)}
    e.tensors["weight_scale"] = w.scale.float().reshape(-1, 1).contiguous()


def encode(model: nn.Module, linears: dict[str, LabWeight], facts: ModelFacts, opts: ExportOptions
           ) -> tuple[dict[str, torch.Tensor], dict | None, list[TensorNote], list[str], torch.dtype]:
    """(state dict, quantization_config, notes, model notes, float dtype) of the compressed-tensors export."""
    from compressed_tensors.quantization import QuantizationScheme

    model_notes = check_model(FMT, facts, opts)
    head = tied_head(model)
    entries = {n: _plan(n, w, opts) for n, w in linears.items() if n != head}
    floats = [t for _, t in other_tensors(model, linears) if t.is_floating_point()]
    floats += [e.target.weight for e in entries.values() if isinstance(e.target, DenseWeight)]
    dtype = pick_dtype(floats, opts.dtype)

    # Per channel only when every layer of that bit width has one group per row (the lab writes per channel
    # as G = K); otherwise groups, so that one scheme covers layers of different widths.
    ints = [e.target for e in entries.values() if isinstance(e.target, IntWeight)]
    per_channel = {(t.bits, t.symmetric): True for t in ints}
    for t in ints:
        per_channel[(t.bits, t.symmetric)] &= t.group_size == t.q.shape[1]
    for e in entries.values():
        if isinstance(e.target, IntWeight):
            e.args, e.scheme_fmt = _int_args(e.target, per_channel[(e.target.bits, e.target.symmetric)]), "pack-quantized"
            e.tensors = _encode_int(e.target)
        elif isinstance(e.target, ScaledWeight):
            _encode_scaled(e)
        else:
            e.tensors = {"weight": e.target.weight.to(dtype).contiguous()}

    state: dict[str, torch.Tensor] = {}
    groups: dict[str, tuple[QuantizationScheme, list[str]]] = {}
    notes, ignore = [], [head] if head is not None else []  # a tied head is no Linear of its own to quantize
    for name, e in entries.items():
        state.update({f"{name}.{k}": t for k, t in e.tensors.items()})
        if e.target.bias is not None:
            state[f"{name}.bias"] = e.target.bias.to(dtype).contiguous()
        if e.args is None:
            ignore.append(name)
            written = "float " + str(dtype).removeprefix("torch.")
        else:
            key = json.dumps([e.args.model_dump(), e.inputs and e.inputs.model_dump(), e.scheme_fmt], sort_keys=True)
            groups.setdefault(key, (QuantizationScheme(targets=[], weights=e.args, input_activations=e.inputs,
                                                       format=e.scheme_fmt), []))[1].append(name)
            written = f"{e.scheme_fmt} {_args_text(e.args)}" + (" + int8 dynamic per-token inputs" if e.inputs else "")
        decoded = decode(e.tensors, e.args, e.inputs, e.scheme_fmt)
        notes.append(note_for(name, e.lab.describe(), written, e.status, e.lab.lab_dense(), decoded, e.why))

    for name, t in other_tensors(model, linears):
        state[name] = t.to(dtype).contiguous() if t.is_floating_point() else t.contiguous()
    model_notes += [f"{n}: {s:.1%} zeros stored densely (compressed-tensors 0.20 has no sparsity field for dense "
                    "layers)" for n, s in facts.sparsity.items()]
    if head is not None:
        model_notes.append(f"{head} is tied to the input embeddings: written once")
    return state, _quant_config(groups, ignore, model_notes), notes, model_notes, dtype


def _quant_config(groups: dict, ignore: list[str], model_notes: list[str]) -> dict | None:
    """quantization_config for config.json, built with the package's own pydantic models."""
    from compressed_tensors.quantization import QuantizationConfig

    if not groups:
        return None
    only_one = len(groups) == 1
    config_groups = {}
    for i, (scheme, names) in enumerate(groups.values()):
        # One scheme: every Linear but the ignored, as llm-compressor writes it; several: each lists its layers.
        scheme.targets = ["Linear"] if only_one else names
        config_groups[f"group_{i}"] = scheme
    formats = {s.format for s, _ in groups.values()}
    qcfg = QuantizationConfig(config_groups=config_groups, format=formats.pop() if len(formats) == 1 else
                              "mixed-precision", quantization_status="compressed", ignore=ignore).model_dump()
    if any(not s.weights.symmetric for s, _ in groups.values()):
        # transformers 5.24 with compressed-tensors 0.20.1 allocates zero points unpacked but the files (and
        # vLLM) pack them: a compressed load fails on their shape. Its dequantize-at-load path reads them
        # right, but decodes every layer with the first scheme: usable with one scheme only.
        if only_one:
            qcfg["dequantize"] = True
            model_notes.append("asymmetric zero points: config.json asks transformers to dequantize at load "
                               "(dequantize: true; its compressed load path fails on packed zero points); vLLM "
                               "ignores the flag")
        else:
            model_notes.append(f"several schemes with asymmetric zero points: {TRANSFORMERS_CANNOT_LOAD} (5.24 with "
                               "compressed-tensors 0.20.1: its compressed load fails on packed zero points and its "
                               "dequantize-at-load decodes every layer with the first scheme); the file follows "
                               "the compressed-tensors format (vLLM's reader was not tested here)")
    return qcfg


def _args_text(args) -> str:
    kind = f"{args.type}{args.num_bits}"
    where = f"group {args.group_size}" if args.strategy == "group" else str(args.strategy)
    return f"{kind} {where} {'sym' if args.symmetric else 'asym'}"


def decode(tensors: dict[str, torch.Tensor], args, inputs, scheme_fmt: str | None) -> torch.Tensor:
    """The weight compressed-tensors' own decompressor reads back from `tensors` (fp32)."""
    if args is None:
        return tensors["weight"].float()
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    scheme = QuantizationScheme(targets=["Linear"], weights=args, input_activations=inputs, format=scheme_fmt)
    out = BaseCompressor.get_value_from_registry(scheme_fmt).decompress(dict(tensors), scheme)
    return out["weight"].float()


def write(model: nn.Module, tokenizer, folder: Path, linears: dict[str, LabWeight], facts: ModelFacts,
          opts: ExportOptions, extra: dict | None = None) -> tuple[list[TensorNote], list[str]]:
    """Write config.json, model.safetensors, the tokenizer and generation config into `folder`."""
    from safetensors.torch import save_file

    state, qcfg, notes, model_notes, dtype = encode(model, linears, facts, opts)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    config = export_config(model, facts, dtype)
    if qcfg is not None:
        config.quantization_config = qcfg
    config.compression_lab_export = {"format": FMT, "sparsity": facts.sparsity, **(extra or {})}
    config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return notes, model_notes
