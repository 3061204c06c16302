"""A plain transformers folder: every weight dequantized to floats, loadable by anything that loads transformers.

Nothing stays compressed at rest (the notes say "dense" for every quantized layer); in exchange no reader
needs to know any quantization format. With dtype "auto" the floats are written in the smallest dtype that
holds every weight exactly (usually float32 for dequantized integer weights), so the folder computes
what the lab's dequantized model computes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from compressor.export.common import (
    ExportOptions,
    check_model,
    export_config,
    other_tensors,
    pick_dtype,
    tied_head,
)
from compressor.export.result import TensorNote, note_for
from compressor.export.source import DenseWeight, LabWeight, ModelFacts

FMT = "transformers"


def encode(model: nn.Module, linears: dict[str, LabWeight], facts: ModelFacts, opts: ExportOptions):
    """(state dict, float dtype, notes, model notes) of the dequantized folder."""
    model_notes = check_model(FMT, facts, opts)
    head = tied_head(model)
    linears = {n: w for n, w in linears.items() if n != head}
    dense = {n: w.lab_dense() if not isinstance(w, DenseWeight) else w.weight for n, w in linears.items()}
    others = dict(other_tensors(model, linears))
    dtype = pick_dtype([t for t in others.values() if t.is_floating_point()] + list(dense.values()), opts.dtype)
    state: dict[str, torch.Tensor] = {}
    notes: list[TensorNote] = []
    for name, w in linears.items():
        state[f"{name}.weight"] = dense[name].to(dtype).contiguous()
        if w.bias is not None:
            state[f"{name}.bias"] = w.bias.to(dtype).contiguous()
        why = "" if getattr(w, "origin", None) == "dense" else "dequantized: not compressed at rest"
        notes.append(note_for(name, w.describe(), f"float {str(dtype).removeprefix('torch.')}", "dense",
                              w.lab_dense(), state[f"{name}.weight"], why))
    for name, t in others.items():
        state[name] = t.to(dtype).contiguous() if t.is_floating_point() else t.contiguous()
    if head is not None:
        model_notes.append(f"{head} is tied to the input embeddings: written once")
    return state, dtype, notes, model_notes


def write(model: nn.Module, tokenizer, folder: Path, linears: dict[str, LabWeight], facts: ModelFacts,
          opts: ExportOptions) -> tuple[list[TensorNote], list[str]]:
    from safetensors.torch import save_file

    state, dtype, notes, model_notes = encode(model, linears, facts, opts)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    export_config(model, facts, dtype).save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return notes, model_notes
