"""GGUF files: their metadata read in milliseconds, and their weights loaded as a plain transformers model.

    meta = read_metadata(path)            header, key-values and tensor list; no tensor data is read
    meta.quant_type                       "Q4_1": the type most of its 2-D weights are stored in
    config_from_metadata(meta)            a transformers config dict for a meta-device model (preflight)
    model, tokenizer = load_gguf(path)    dequantized by transformers' GGUF reader, as a model that saves

`gguf.GGUFReader` parses every tokenizer array element by element (7 s for SmolLM2's 49k tokens on a
loaded 2-core machine, and transformers reads the file three times: config, tokenizer, weights). The
reader here keeps small values and only the length of large arrays, so a preflight can read a model's
shape before anything is loaded. Format: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
(version 2 and 3; little-endian only).
"""

from __future__ import annotations

import mmap
import struct
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from unittest.mock import patch

from compressor.errors import ModelLoadError

MAGIC = b"GGUF"
# Arrays longer than this keep only their length and element type (the tokenizer's tokens and merges).
KEEP_ARRAY_MAX = 256
# Bounds a real file stays far inside; beyond them the header is corrupt (or hostile) and is refused
# before it can make the reader allocate or loop for long.
MAX_TENSORS, MAX_KV, MAX_STRING, MAX_ARRAY, MAX_DIMS = 1_000_000, 100_000, 1 << 26, 1 << 28, 4
# GGUF value types: code -> struct format (None: string 8, array 9).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
# Tensor types that are not quantized (weights stored as plain floats).
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
# ggml's tensor type codes (gguf.GGMLQuantizationType, gguf 0.19), kept here: importing gguf takes 0.5 s.
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
              18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
              26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
              40: "NVFP4", 41: "Q1_0"}


@dataclass
class LargeArray:
    """An array value too long to keep: its element type code and length."""

    type: int
    count: int


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # GGUF order: the fastest-varying dimension first (in_features of a weight)
    type: str  # "Q4_1", "F32", ... (or "type 42" for a code this gguf package does not know)


@dataclass
class GGUFMetadata:
    path: Path
    version: int
    fields: dict[str, object] = field(default_factory=dict)
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def architecture(self) -> str:
        return str(self.fields.get("general.architecture", ""))

    def arch_value(self, key: str, default=None):
        """A `<architecture>.<key>` value ("block_count", "embedding_length", ...)."""
        return self.fields.get(f"{self.architecture}.{key}", default)

    @property
    def type_counts(self) -> dict[str, int]:
        """How many tensors of each type, most common first."""
        return dict(Counter(t.type for t in self.tensors).most_common())

    @property
    def quant_type(self) -> str:
        """The type most 2-D weight tensors are stored in ("Q4_1"); a float type when none is quantized."""
        weights = Counter(t.type for t in self.tensors if len(t.shape) >= 2)
        quantized = Counter({k: v for k, v in weights.items() if k not in FLOAT_TYPES})
        common = (quantized or weights).most_common(1)
        return common[0][0] if common else "none"

    @property
    def vocab_size(self) -> int | None:
        tokens = self.fields.get("tokenizer.ggml.tokens")
        n = self.arch_value("vocab_size")
        if isinstance(n, int):
            return n
        return tokens.count if isinstance(tokens, LargeArray) else len(tokens) if isinstance(tokens, list) else None


class _Cursor:
    """Reads little-endian values off a memory map, refusing anything that runs past its end."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, what: str) -> ModelLoadError:
        return ModelLoadError(f"{str(self.path)!r} is not a readable GGUF file: {what} (at byte {self.pos}). "
                              "Check that the download is complete, or convert the model again.")

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise self.fail("the header runs past the end of the file")
        self.pos += n
        return start

    def scalar(self, fmt: str):
        return struct.unpack_from(fmt, self.buf, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.scalar("<Q")
        if n > MAX_STRING:
            raise self.fail(f"a string of {n} bytes")
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="replace")

    def skip_strings(self, count: int) -> None:
        """Step over `count` strings (a tokenizer's 49k tokens: one tight loop, no values kept)."""
        buf, pos, end, read_len = self.buf, self.pos, len(self.buf), _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                break
            n = read_len(buf, pos)[0]
            if n > MAX_STRING:
                self.pos = pos
                raise self.fail(f"a string of {n} bytes")
            pos += 8 + n
        else:
            if pos <= end:
                self.pos = pos
                return
        self.pos = min(pos, end)
        raise self.fail("the header runs past the end of the file")

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype != _ARRAY:
            raise self.fail(f"unknown value type {vtype}")
        etype, count = self.scalar("<I"), self.scalar("<Q")
        if count > MAX_ARRAY:
            raise self.fail(f"an array of {count} values")
        if count <= KEEP_ARRAY_MAX:
            return [self.value(etype) for _ in range(count)]
        if etype in _SCALARS:
            self.take(count * struct.calcsize(_SCALARS[etype]))
        elif etype == _STRING:
            self.skip_strings(count)
        else:  # arrays of arrays: no real file has a long one
            for _ in range(count):
                self.value(etype)
        return LargeArray(etype, count)


def read_metadata(path: str | Path) -> GGUFMetadata:
    """The header of a GGUF file: key-values (large arrays as LargeArray) and tensor names, shapes and
    types. No tensor data is read. ModelLoadError for anything that is not a GGUF file it can read."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            cur = _Cursor(buf, path)
            if len(buf) < 24 or bytes(buf[:4]) != MAGIC:
                raise cur.fail("it does not start with the GGUF magic bytes")
            cur.take(4)
            version = cur.scalar("<I")
            if version not in (2, 3):
                raise cur.fail(f"version {version} (this reader takes versions 2 and 3, little-endian)")
            n_tensors, n_kv = cur.scalar("<Q"), cur.scalar("<Q")
            if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
                raise cur.fail(f"{n_tensors} tensors and {n_kv} key-values")
            meta = GGUFMetadata(path, version)
            for _ in range(n_kv):
                key = cur.string()
                meta.fields[key] = cur.value(cur.scalar("<I"))
            for _ in range(n_tensors):
                name, n_dims = cur.string(), cur.scalar("<I")
                if n_dims > MAX_DIMS:
                    raise cur.fail(f"tensor {name!r} has {n_dims} dimensions")
                shape = tuple(cur.scalar("<Q") for _ in range(n_dims))
                ttype = cur.scalar("<I")
                cur.scalar("<Q")  # data offset
                meta.tensors.append(TensorInfo(name, shape, GGML_TYPES.get(ttype, f"type {ttype}")))
            return meta
    except ModelLoadError:
        raise
    except (OSError, ValueError) as e:  # unreadable, or empty (mmap of 0 bytes)
        raise ModelLoadError(f"Could not read {str(path)!r} as a GGUF file: {e}") from e


def find_gguf(folder: Path) -> Path | None:
    """The one .gguf file in `folder`, None when there is none; ModelLoadError naming them when several."""
    found = sorted(p for p in folder.glob("*.gguf") if p.is_file())
    if len(found) > 1:
        raise ModelLoadError(f"{str(folder)!r} holds {len(found)} GGUF files ({', '.join(p.name for p in found[:4])}): "
                             "point to the one you want, e.g. its full path.")
    return found[0] if found else None


def config_from_metadata(meta: GGUFMetadata) -> dict:
    """A transformers config dict from GGUF metadata, through transformers' own GGUF key mapping.

    Enough to build the model on the meta device for a preflight; the authoritative config is the one
    transformers reads when it loads the file (which the engine checks the recipe against again)."""
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    arch = meta.architecture
    name = str(meta.fields.get("general.name", "")).lower()
    model_type = "mistral" if "llama" in arch and "mistral" in name else arch.replace("-", "_")
    mapping = GGUF_CONFIG_MAPPING.get(model_type) or GGUF_CONFIG_MAPPING.get(arch)
    if mapping is None:
        known = ", ".join(sorted(k for k in GGUF_CONFIG_MAPPING if k not in ("general", "tokenizer")))
        raise ModelLoadError(f"{meta.path.name!r} is a GGUF of architecture {arch!r}, which transformers cannot load "
                             f"from GGUF (it reads: {known}). Use the model's original safetensors folder instead.")
    config: dict = {"model_type": model_type}
    for key, hf_key in mapping.items():
        value = meta.fields.get(f"{arch}.{key}")
        if hf_key not in (None, -1) and value is not None and not isinstance(value, LargeArray):
            config[hf_key] = value
    if "rope_theta" in config:
        config["rope_parameters"] = {"rope_type": "default", "rope_theta": config.pop("rope_theta")}
    if isinstance(config.get("num_key_value_heads"), list):  # per-layer counts (LFM2): the largest
        config["num_key_value_heads"] = max(config["num_key_value_heads"])
    config.setdefault("vocab_size", meta.vocab_size)
    config["tie_word_embeddings"] = all(t.name != "output.weight" for t in meta.tensors)
    if config["model_type"] in ("gemma3", "gemma4"):  # GGUF holds the text backbone only
        config["model_type"] += "_text"
    return {k: v for k, v in config.items() if v is not None}


def load_gguf(path: Path, dtype=None):
    """(model, tokenizer) from a GGUF file, dequantized by transformers (needs the `gguf` package).

    transformers marks a GGUF-loaded model with a quantization config and refuses to save it; the
    weights are plain floats by then, so they are moved into a fresh model of the same config, which
    saves, compresses and loads like any other. `config._name_or_path` is the file's folder (the run's
    fingerprint hashes its files)."""
    import importlib.util

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"Loading {path.name!r} needs the `gguf` package: pip install gguf "
                             "(scripts/setup.sh installs it).")
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    dtype = dtype or torch.float32
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # its per-tensor tqdm bar ignores transformers' disable_progress_bar and floods worker logs
    with patch.object(gguf_utils, "tqdm", lambda items, **_: items):
        loaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    state = loaded.state_dict()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.load_state_dict(state, assign=True, strict=True)
    model.tie_weights()
    for name, buf in loaded.named_buffers():  # non-persistent buffers (rotary inv_freq) are not in the state dict
        parent, _, child = name.rpartition(".")
        model.get_submodule(parent)._buffers[child] = buf
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelLoadError(f"{path.name!r}: {len(left)} tensors ({', '.join(left[:3])}) were not in the GGUF file's "
                             "weights as transformers read them; this architecture cannot be imported from GGUF.")
    model.config._name_or_path = str(path.parent)
    return model.eval(), tokenizer
