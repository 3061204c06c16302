"""Take a compressed model elsewhere: compressed-tensors (vLLM, transformers), GGUF (llama.cpp), plain transformers.

    from compressor.export import export_model
    result = export_model(model, tokenizer, "gguf", "out/run-12")   # -> ExportResult
    print(result.summary())    # "GGUF: 14 lossless, 1 dense; every weight bit-exact"
    result.notes               # one TensorNote per linear: status, written_as, measured max |dW|, why

Formats (`FORMATS`): "compressed-tensors", "gguf", "transformers". Each weight is transcribed exactly where
the format's math matches the lab's, re-quantized (explicitly, measured) or written dense where it does
not, and what a format cannot hold at all (3-bit in GGUF, a KV-cache stage, per-layer pruned shapes) is an
`ExportRefused` (a LabError) naming the format that can. Errors are measured by decoding what was written
with the format's own package (compressed-tensors' decompressor, gguf's dequantizer); `verify=True`
also loads the export through transformers and measures the logits against the lab's model.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from compressor.export.common import ExportOptions
from compressor.export.result import ExportRefused, ExportResult, TensorNote, folder_bytes

FORMATS = {
    "compressed-tensors": "int weights pack-quantized, W8A8 int8, FP8 (vLLM, transformers)",
    "gguf": "Q4_0 / Q4_1 / Q8_0 blocks, F16 for the rest (llama.cpp, Ollama, LM Studio)",
    "transformers": "plain safetensors, every weight dequantized (anything that loads transformers)",
}
GGUF_FILE = "model.gguf"
RESULT_FILE = "export.json"

__all__ = ["FORMATS", "ExportOptions", "ExportRefused", "ExportResult", "TensorNote", "check_format", "export_model",
           "preview_export"]


def check_format(fmt: str) -> str:
    """The format's name in FORMATS (aliases: ct, hf, safetensors); RecipeError naming the choices otherwise."""
    from compressor.errors import RecipeError

    key = fmt.lower().replace("_", "-")
    key = {"ct": "compressed-tensors", "hf": "transformers", "safetensors": "transformers"}.get(key, key)
    if key not in FORMATS:
        raise RecipeError("format", fmt, f"choose one of {', '.join(FORMATS)}")
    return key


def _encode_notes(fmt: str, model: nn.Module, tokenizer, opts: ExportOptions):
    from compressor.export import ct_format, gguf_format, hf_format
    from compressor.export.source import model_facts, read_linears

    linears = read_linears(model)
    facts = model_facts(model, linears)
    if fmt == "gguf":
        return gguf_format.encode(model, tokenizer, linears, facts, opts)[3:5]
    if fmt == "compressed-tensors":
        return ct_format.encode(model, linears, facts, opts)[2:4]
    return hf_format.encode(model, linears, facts, opts)[2:4]


def preview_export(model: nn.Module, fmt: str, tokenizer=None, *, mismatch: str = "requantize",
                   dtype: str = "auto", drop_kv_cache: bool = False) -> ExportResult:
    """What `export_model` would write, measured, without writing anything (for a UI's notes beside a button).

    Raises ExportRefused when the format cannot hold the model (the message names what can).
    """
    fmt = check_format(fmt)
    opts = ExportOptions(mismatch=mismatch, dtype=dtype, drop_kv_cache=drop_kv_cache)
    notes, model_notes = _encode_notes(fmt, model, tokenizer, opts)
    return ExportResult(fmt=fmt, path=None, notes=notes, model_notes=model_notes)


def export_model(model: nn.Module, tokenizer, fmt: str, out_dir: str | Path, report=None, *,
                 mismatch: str = "requantize", dtype: str = "auto", drop_kv_cache: bool = False,
                 verify: bool = False) -> ExportResult:
    """Write `model` (as `compressor.compress` or `load_model` left it) in `fmt` into the folder `out_dir`.

    Args:
        model, tokenizer: the compressed model and its tokenizer (GGUF needs the tokenizer).
        fmt: "compressed-tensors", "gguf" or "transformers" (aliases: ct, hf).
        out_dir: a folder; created if missing. GGUF writes `model.gguf` there, the others a transformers folder.
            Every format also gets `export.json` (the ExportResult).
        report: the run's CompressionReport, if any: its recipe is recorded in the export's metadata.
        mismatch, dtype, drop_kv_cache: see ExportOptions.
        verify: load the export with transformers (the format's own reader) and measure the logits against
            `model` on a short probe; stored in result.logits_max_abs_err. Costs one load.

    Returns the ExportResult (per-tensor notes with measured error). Raises ExportRefused (a LabError)
    before writing anything when the format cannot hold the model, naming what can.
    """
    from compressor.export import ct_format, gguf_format, hf_format
    from compressor.export.source import model_facts, read_linears

    fmt = check_format(fmt)
    opts = ExportOptions(mismatch=mismatch, dtype=dtype, drop_kv_cache=drop_kv_cache)
    folder = Path(out_dir)
    linears = read_linears(model)
    facts = model_facts(model, linears)
    recipe = getattr(report, "recipe", None)
    if fmt == "gguf":
        notes, model_notes = gguf_format.write(model, tokenizer, folder / GGUF_FILE, linears, facts, opts,
                                               name=Path(getattr(model.config, "_name_or_path", "") or "model").name,
                                               recipe=recipe)
    elif fmt == "compressed-tensors":
        notes, model_notes = ct_format.write(model, tokenizer, folder, linears, facts, opts,
                                             extra={"recipe": recipe} if recipe else None)
    else:
        notes, model_notes = hf_format.write(model, tokenizer, folder, linears, facts, opts)
    result = ExportResult(fmt=fmt, path=str(folder), notes=notes, model_notes=model_notes)
    if verify and not result.transformers_loads:
        model_notes.append("verify skipped: see the note on transformers")
    elif verify:
        from compressor.export.verify import logits_error

        result.logits_max_abs_err, result.logits_reader = logits_error(model, folder, fmt)
    result.files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) + [RESULT_FILE]
    (folder / RESULT_FILE).write_text(result.to_json())
    result.bytes_written = folder_bytes(folder)
    return result
