"""Checks an export can pass before any work: the output folder, and the recipe and model config against the format.

    fmt = check_export(fmt, out_dir, recipe, config)   # before `compressor.compress` or a run starts

What only the compressed weights can tell (a group size that needs re-quantizing, the tokenizer GGUF must
describe) is still `export_model`'s to refuse; this catches the refusals a recipe or a config already decides
(a KV-cache stage, 2-/3-bit weights in GGUF, a model GGUF's writer does not know) and a folder that cannot be
written, so a command line or a page says so in a second instead of after minutes of compression.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from compressor.errors import LabError


def check_out_dir(out_dir: str | Path, flag: str = "--out") -> Path:
    """The folder an export will write, if it can: new, or an empty folder, and writable. LabError naming the fix
    otherwise. Creates nothing that stays (a probe file in the nearest existing folder is removed at once)."""
    path = Path(out_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise LabError(f"{flag} {path} is a file: give a folder (new or empty) for the export")
    if path.is_dir() and any(path.iterdir()):
        raise LabError(f"{flag} {path} is not empty: give a new or empty folder (an export never overwrites files)")
    folder = path
    while not folder.exists() and folder != folder.parent:  # the folders the export would create
        folder = folder.parent
    if not folder.is_dir():
        raise LabError(f"{flag} {path}: {folder} is a file, not a folder: choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".lab-write-check-"):
            pass
    except OSError as e:
        raise LabError(f"{flag} {path}: cannot write in {folder} ({e.strerror or e}): choose a writable folder") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise LabError(f"{flag} {path}: {folder} is not writable: choose a writable folder")
    return path


def check_recipe(fmt: str, recipe, *, drop_kv_cache: bool = False, mismatch: str = "requantize") -> None:
    """ExportRefused (naming what can hold it) when `recipe` (anything `load_recipe` takes) makes a model `fmt`
    refuses whatever the weights: a KV-cache stage (every format), 2- or 3-bit weights in GGUF."""
    from compressor.engine.recipe import load_recipe
    from compressor.export import check_format
    from compressor.export.common import kv_cache_refused
    from compressor.export.gguf_format import CT_HINT
    from compressor.export.gguf_format import FMT as GGUF
    from compressor.export.result import ExportRefused

    fmt = check_format(fmt)
    for i, stage in enumerate(load_recipe(recipe, files=False).stages):
        if stage.kind == "kv" and not drop_kv_cache:
            raise kv_cache_refused(GGUF if fmt == "gguf" else fmt, stage.method)  # named as its writer names it
        if fmt == "gguf" and stage.kind == "quantize" and mismatch != "dense":
            bits = {getattr(stage, "bits", None), *stage.override_values("bits")} & {2, 3}
            if bits:
                raise ExportRefused(GGUF, f"{min(bits)}-bit weights (stage {i}, {stage.method}): its simple block "
                                    "types are 4- and 8-bit (Q4_0, Q4_1, Q8_0), and K-quants are not a transcription",
                                    CT_HINT)


def check_config(fmt: str, config) -> None:
    """ExportRefused when the model's transformers config is one `fmt`'s writer refuses (GGUF: Llama only, default
    RoPE, no biases, SiLU). Nothing to check for compressed-tensors and transformers, which hold any architecture."""
    from compressor.export import check_format
    from compressor.export import gguf_format as g
    from compressor.export.result import ExportRefused

    if check_format(fmt) != "gguf" or config is None:
        return
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    model_type = getattr(text, "model_type", None)
    if model_type not in g.ARCHS:
        raise ExportRefused(g.FMT, f"a {model_type!r} model (this writer knows {', '.join(g.ARCHS)})",
                            "export to compressed-tensors or transformers, which hold any transformers architecture")
    g.check_arch(text)


def check_export(fmt: str, out_dir: str | Path, recipe=None, config=None, *, drop_kv_cache: bool = False,
                 mismatch: str = "requantize", flag: str = "--out") -> str:
    """All the checks above; returns the format's name in FORMATS. RecipeError for an unknown format or option,
    LabError for the folder, ExportRefused for what the format cannot hold."""
    from compressor.export import check_format
    from compressor.export.common import ExportOptions

    fmt = check_format(fmt)
    ExportOptions(mismatch=mismatch)  # a bad option fails here too
    check_out_dir(out_dir, flag)
    if recipe is not None:
        check_recipe(fmt, recipe, drop_kv_cache=drop_kv_cache, mismatch=mismatch)
    check_config(fmt, config)
    return fmt
