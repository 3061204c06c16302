"""Save and load compressed models: safetensors plus a "compression_lab" section in config.json.

    config.json["compression_lab"] = {
        "format": 1,
        "modules": {"model.layers.0.self_attn.q_proj": {"type": "QuantLinear", "bits": 4, ...}, ...},
        "recipe": {...}                       # when a report is given
    }

Loading builds the model skeleton from config.json with parameters on the meta device (no weight
memory), gives structurally pruned layers their own shapes from config.json's "pruned_layout"
(written by the "structured" stage, compressor/engine/layout.py), puts an empty packed module of each
listed type in place (parents before the modules nested in them), and fills everything from
model.safetensors with `load_state_dict(assign=True)`, so tensors keep the dtypes they were saved with
and the logits are identical. Only the packed types of compressor/engine/packed.py can be named by a
config (a config never chooses arbitrary classes to import); pickle is never used. A type that has no
saved form (bitsandbytes) is listed as {"type": ..., "saved": false}, and loading refuses it by name.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from compressor.engine.layout import resize_to_layout
from compressor.engine.packed import packed_type_of, packed_types
from compressor.errors import ModelLoadError

SECTION = "compression_lab"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"


def _unique_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without second names for shared tensors (tied embeddings): safetensors refuses aliases."""
    out, seen = {}, set()
    for k, t in model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype)
        if t.numel() and key in seen:
            continue
        seen.add(key)
        out[k] = t.detach().contiguous().cpu()
    return out


def save_compressed(model: nn.Module, tokenizer, folder: str | Path, report=None) -> Path:
    """Write model.safetensors, config.json with the compression section, the tokenizer and report.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    modules = {}
    for name, mod in model.named_modules():
        t = packed_type_of(mod)
        if t is not None:
            modules[name] = {"type": t.name, **t.meta(mod)} if t.saveable else {"type": t.name, "saved": False}
    save_file(_unique_state_dict(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    model.config.save_pretrained(folder)
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg[SECTION] = {"format": FORMAT_VERSION, "modules": modules}
    kv = getattr(model, "kv_cache_config", None)
    if kv is not None:  # a KV stage changes no weight; keep its config so generation uses it again
        cfg[SECTION]["kv_cache"] = kv.to_dict()
    if report is not None:
        cfg[SECTION]["recipe"] = report.recipe
        (folder / "report.json").write_text(report.to_json())
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def unsaveable_modules(model: nn.Module) -> list[str]:
    """Names of packed modules whose type cannot be saved (bitsandbytes layers): such a model is not saved."""
    return [name for name, mod in model.named_modules()
            if (t := packed_type_of(mod)) is not None and not t.saveable]


def is_compressed_folder(folder: str | Path) -> bool:
    """True when `folder` holds a model saved by `save_compressed`."""
    cfg = Path(folder) / "config.json"
    try:
        return cfg.is_file() and SECTION in json.loads(cfg.read_text())
    except (OSError, json.JSONDecodeError):
        return False


def load_compressed(folder: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                    ) -> nn.Module:
    """Rebuild a model saved by `save_compressed` (packed modules included); returns it in eval mode.

    dtype applies to the modules that were not compressed when they were saved in another float
    dtype; packed buffers keep their own dtypes.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    if not is_compressed_folder(folder):
        raise ModelLoadError(f"{folder} has no '{SECTION}' section in config.json: it was not saved by "
                             "compressor.save_compressed; load it as a plain model")
    section = json.loads((folder / "config.json").read_text())[SECTION]
    if section.get("format") != FORMAT_VERSION:
        raise ModelLoadError(f"{folder}: compression format {section.get('format')!r}, this version reads "
                             f"{FORMAT_VERSION}: save it again with this version")
    _check_types(section["modules"], folder)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    layout = getattr(config, "pruned_layout", None)
    if layout:
        _resize_pruned_layers(model, layout, folder)
    # Parents first: a factored layer (LowRankLinear) must exist before its quantized factors go in.
    types = packed_types()
    for name, meta in sorted(section["modules"].items(), key=lambda item: item[0].count(".")):
        meta = dict(meta)
        type_name = meta.pop("type")
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, types[type_name].empty(meta))
    state = load_file(str(folder / WEIGHTS_FILE))
    # Own, aligned memory: tensors straight from the file are memory-mapped, and native CPU kernels
    # that repack in place (int8pack) crashed on them.
    for k in list(state):
        state[k] = state[k].clone()
    _check_shapes(model, state, folder)
    result = model.load_state_dict(state, strict=False, assign=True)
    if result.unexpected_keys:
        raise ModelLoadError(f"{folder}: weights not in the model: {result.unexpected_keys[:5]}")
    model.tie_weights()
    # A missing tensor is fine only where tying made it share a loaded one (lm_head = embeddings);
    # packed modules allocate real (uninitialised) buffers, which the meta check below cannot catch.
    if result.missing_keys:
        sd = model.state_dict()
        loaded = {sd[k].data_ptr() for k in state if k in sd}
        absent = [k for k in result.missing_keys if sd[k].device.type != "meta" and sd[k].data_ptr() not in loaded]
        if absent:
            raise ModelLoadError(f"{folder}: {len(absent)} tensors are missing from {WEIGHTS_FILE} "
                                 f"({', '.join(absent[:3])}): the file is incomplete, save the model again")
    packed = tuple(section["modules"])
    for name, p in list(model.named_parameters()) + list(model.named_buffers()):
        if p.device.type == "meta":
            raise ModelLoadError(f"{folder}: {name} has no saved weights: the file is incomplete, save it again")
        if p.is_floating_point() and p.dtype != dtype and not name.startswith(packed):
            p.data = p.data.to(dtype)
    if (folder / "generation_config.json").is_file():  # saved beside the weights: read it back, not a default
        from transformers import GenerationConfig

        model.generation_config = GenerationConfig.from_pretrained(folder)
    if section.get("kv_cache"):
        from compressor.engine.stage import stage_from_dict

        model.kv_cache_config = stage_from_dict(section["kv_cache"])
    return model.to(device).eval()


def _check_types(modules: dict[str, dict], folder: Path) -> None:
    """Before any work: every listed module type is registered and has a saved form."""
    types = packed_types()
    for name, meta in modules.items():
        type_name = meta.get("type")
        t = types.get(type_name)
        if meta.get("saved") is False or (t is not None and not t.saveable):
            n = sum(m.get("type") == type_name for m in modules.values())
            why = t.unsaved if t is not None else "compress the original model again with the saved recipe"
            raise ModelLoadError(f"{folder}: {n} module(s) such as {name} are {type_name}, which this format "
                                 f"cannot rebuild: {why}")
        if t is None:
            raise ModelLoadError(f"{folder}: module {name} has type {type_name!r}, which this version cannot "
                                 f"load (known: {', '.join(n for n, k in sorted(types.items()) if k.saveable)})")


def _resize_pruned_layers(model: nn.Module, layout: dict, folder: Path) -> None:
    from compressor.engine.sequential import find_decoder_layers

    try:
        resize_to_layout(find_decoder_layers(model)[1], layout)
    except ValueError as e:
        raise ModelLoadError(f"{folder}: config.json 'pruned_layout' does not fit this model: {e}; save the "
                             "pruned model again with this version") from e


def _check_shapes(model: nn.Module, state: dict[str, torch.Tensor], folder: Path) -> None:
    """Name the tensors whose saved shape differs from the rebuilt skeleton's, before torch's size error."""
    expected = model.state_dict()
    wrong = [f"{k} saved {tuple(t.shape)}, rebuilt {tuple(expected[k].shape)}" for k, t in state.items()
             if k in expected and tuple(expected[k].shape) != tuple(t.shape)]
    if wrong:
        raise ModelLoadError(f"{folder}: {len(wrong)} saved tensors do not fit the model rebuilt from config.json "
                             f"({'; '.join(wrong[:3])}): its structure was changed by something that left no "
                             "record this version can rebuild (only registered module types and a structured "
                             f"stage's 'pruned_layout' are); save it again with this version")
