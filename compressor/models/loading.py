"""One entry point from a model spec to (model, tokenizer), safe by default.

A spec is one of:
  - "demo": the bundled model in assets/models/ (works offline, everywhere);
  - a catalog name ("smollm2-135m", compressor/models/catalog.py): a model a package ships as GGUF,
    converted once into the data folder;
  - a local folder, or a local .gguf file (or a folder holding one and no config.json), which must lie
    under an allowed root (see `allowed_roots`); GGUF weights are dequantized by transformers' reader;
  - a Hugging Face hub id ("org/name"), downloaded when online.

Safety: safetensors only unless `allow_pickle=True`; `trust_remote_code` only on explicit opt-in; the
config is checked for absurd values (compressor/models/sanity.py) and the parameter count read from it
(on the meta device, no weights) before loading, and a model that cannot fit in free memory is refused
with the numbers. A GGUF file holds no code: its header is read by compressor/models/gguf_file.py. Folders written by
`compressor.engine.serialize.save_compressed` load back through here, packed weights included.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import psutil
import torch

from compressor.errors import ModelLoadError
from compressor.models import catalog
from compressor.models.sanity import check_config
from compressor.paths import ASSETS, default_data_dir

DEMO_MODEL = "lab-llama-7m"
DEMO_DIR = ASSETS / "models" / DEMO_MODEL
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# Room needed beyond the weights: activations, evaluation copies, allocator slack.
MEMORY_HEADROOM = 1.3

logger = logging.getLogger(__name__)


@dataclass
class ModelInfo:
    """What a spec points at, read from its config before any weight is loaded."""

    spec: str
    source: str  # "demo", "catalog", "gguf", "local" or "hub"
    path: str  # folder, hub id, or the GGUF file when gguf_file is set
    architecture: str
    n_params: int
    weight_bytes_at_dtype: int
    gguf_file: str | None = None  # set when the weights load from this GGUF file (dequantized)
    source_note: str | None = None  # for reports: "from a Q4_1 GGUF, dequantized"
    config: Any = field(default=None, repr=False, compare=False)  # the transformers config read
    meta_model: Any = field(default=None, repr=False, compare=False)  # built from it on the meta device


def allowed_roots() -> list[Path]:
    """Folders that local model paths may come from: the bundled assets, the data folder, and any
    folders listed in $LAB_ALLOWED_MODEL_DIRS (separated by os.pathsep)."""
    roots = [ASSETS / "models", default_data_dir()]
    extra = os.environ.get("LAB_ALLOWED_MODEL_DIRS", "")
    roots += [Path(p).expanduser() for p in extra.split(os.pathsep) if p.strip()]
    return [r.resolve() for r in roots]


def _looks_local(spec: str) -> bool:
    # An existing folder counts as local even when its name could be a hub id ("mymodel", "org/name"):
    # transformers would load it in preference to the hub, so it must pass the allowed-folders check.
    return spec.startswith(("/", "./", "../", "~")) or os.path.exists(spec)


def _check_allowed(path: Path, roots: list[Path]) -> None:
    real = path.resolve()
    if not any(real == r or r in real.parents for r in roots):
        listed = ", ".join(str(r) for r in roots)
        raise ModelLoadError(
            f"Local path {str(path)!r} is outside the allowed folders ({listed}). Move the model into one of "
            "them, or add its parent folder to LAB_ALLOWED_MODEL_DIRS."
        )


def _check_local_files(folder: Path, allow_pickle: bool, trust_remote_code: bool) -> dict:
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{str(folder)!r} has no config.json: point to a folder saved by save_pretrained().")
    config = json.loads(cfg_path.read_text())
    files = [p.name for p in folder.iterdir()]
    has_st = any(f.endswith(".safetensors") for f in files)
    pickles = [f for f in files if f.endswith(PICKLE_SUFFIXES)]
    if not has_st and pickles and not allow_pickle:
        raise ModelLoadError(
            f"{str(folder)!r} holds only pickle weights ({', '.join(sorted(pickles)[:3])}), which can run code "
            "when loaded. Convert them to safetensors, or opt in with allow_pickle=True (CLI: --allow-pickle) "
            "if you trust the source."
        )
    if not has_st and not pickles:
        raise ModelLoadError(f"{str(folder)!r} has no weight files (*.safetensors).")
    _check_remote_code(config, str(folder), trust_remote_code)
    return config


def _check_remote_code(config: dict, where: str, trust_remote_code: bool) -> None:
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"{where!r} needs custom code from the model repository (config.json has auto_map), which would "
            "run on this machine. Opt in with trust_remote_code=True (CLI: --trust-remote-code) only if you "
            "trust its authors, or pick a model that transformers supports natively."
        )


def hub_reachable(timeout: float = 2.0) -> bool:
    """True when the Hugging Face Hub answers a TCP connection quickly; False offline."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _meta_model(config_obj, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config_obj, trust_remote_code=trust_remote_code)


def _read_config(path: str, spec: str, trust_remote_code: bool, gguf_file: str | None):
    """The transformers config of a folder, hub id or GGUF file (its header only)."""
    from transformers import AutoConfig

    try:
        if gguf_file is not None:
            from compressor.models.gguf_file import config_from_metadata, read_metadata

            d = config_from_metadata(read_metadata(gguf_file))
            check_config(d, repr(spec))
            return AutoConfig.for_model(d.pop("model_type"), **d)
        local = Path(path) / "config.json"
        if local.is_file():  # the plain values first: transformers' own validation fails less clearly
            raw = json.loads(local.read_text())
            check_config(raw.get("text_config") or raw, repr(spec))
        return AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ModelLoadError:
        raise
    except Exception as e:  # hub errors, malformed configs: say which spec and why
        raise ModelLoadError(f"Could not read the config of {spec!r}: {type(e).__name__}: {e}") from e


def _gguf_note(path: Path) -> str:
    from compressor.models.gguf_file import read_metadata

    return catalog.source_note(read_metadata(path).quant_type)


def _folder_note(folder: Path) -> str | None:
    marker = folder / catalog.SOURCE_FILE
    if not marker.is_file():
        return None
    try:
        return json.loads(marker.read_text()).get("source")
    except (OSError, ValueError):
        return None


def _resolve_catalog(entry: catalog.CatalogEntry) -> tuple[str, str | None, str | None]:
    """(path, gguf_file, note) of a catalog model: its converted folder, else its package's GGUF file."""
    folder = catalog.cached_folder(entry)
    if folder is not None:
        return str(folder), None, _folder_note(folder)
    gguf = catalog.package_gguf(entry)
    if gguf is None or importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(catalog.missing_message(entry))
    return str(gguf), str(gguf), _gguf_note(gguf)


def _resolve_local(spec: str, roots: list[Path], allow_pickle: bool, trust_remote_code: bool
                   ) -> tuple[str, str, str | None, str | None]:
    """(source, path, gguf_file, note) of a local folder or .gguf file under the allowed roots."""
    from compressor.models.gguf_file import find_gguf

    path = Path(spec).expanduser()
    _check_allowed(path, roots)
    if path.is_file() and path.suffix.lower() == ".gguf":
        return "gguf", str(path), str(path), _gguf_note(path)
    if not path.is_dir():
        raise ModelLoadError(f"Local path {spec!r} does not exist (or is neither a model folder nor a .gguf file).")
    if not (path / "config.json").is_file():
        gguf = find_gguf(path)
        if gguf is not None:
            return "gguf", str(gguf), str(gguf), _gguf_note(gguf)
    _check_local_files(path, allow_pickle, trust_remote_code)
    return "local", str(path), None, _folder_note(path)


def resolve(spec: str, *, allow_pickle: bool = False, trust_remote_code: bool = False,
            dtype: torch.dtype = torch.float32, roots: list[Path] | None = None) -> ModelInfo:
    """Check a spec and read its size without loading weights. Raises ModelLoadError with the fix.

    The config is checked for absurd values before any module is built; the model is then built on the
    meta device (`info.meta_model`, no memory) to count its parameters."""
    spec = (spec or "").strip()
    if not spec:
        raise ModelLoadError("No model given: use 'demo' for the bundled model, a catalog model "
                             f"({', '.join(catalog.CATALOG)}), a local folder or .gguf file, or a hub id.")
    itemsize = torch.tensor([], dtype=dtype).element_size()
    gguf_file, note = None, None
    if spec == "demo":
        if not (DEMO_DIR / "config.json").is_file():
            raise ModelLoadError(f"The bundled demo model is missing from {DEMO_DIR}: reinstall the app.")
        source, path = "demo", str(DEMO_DIR)
    elif catalog.get(spec) is not None:
        source = "catalog"
        path, gguf_file, note = _resolve_catalog(catalog.get(spec))
    elif _looks_local(spec):
        source, path, gguf_file, note = _resolve_local(spec, roots if roots is not None else allowed_roots(),
                                                       allow_pickle, trust_remote_code)
    elif HUB_ID.match(spec):
        if not hub_reachable():
            raise ModelLoadError(
                f"Cannot download {spec!r}: the Hugging Face Hub is not reachable from this machine (offline). "
                f"Use the bundled model 'demo', a catalog model ({', '.join(catalog.CATALOG)}), or a local folder "
                "that holds the model."
            )
        source, path = "hub", spec
    else:
        raise ModelLoadError(
            f"{spec!r} is neither 'demo', a catalog model ({', '.join(catalog.CATALOG)}), an existing local folder "
            "or .gguf file, nor a hub id like 'org/name'."
        )
    config_obj = _read_config(path, spec, trust_remote_code, gguf_file)
    if source == "hub":
        _check_remote_code(config_obj.to_dict(), spec, trust_remote_code)
    if gguf_file is None:  # a GGUF header was checked as it was read
        check_config(config_obj.get_text_config().to_dict(), repr(spec))
    meta = _meta_model(config_obj, trust_remote_code)
    n_params = sum(p.numel() for p in meta.parameters())
    return ModelInfo(spec, source, path, type(meta).__name__, n_params, n_params * itemsize, gguf_file=gguf_file,
                     source_note=note, config=config_obj, meta_model=meta)


def model_source(spec: str, roots: list[Path] | None = None) -> str | None:
    """Where a spec's weights come from, for reports: "from a Q4_1 GGUF, dequantized" for a GGUF file or
    a catalog model (its converted folder remembers), None for plain checkpoints. Reads headers only."""
    spec = spec.strip() if isinstance(spec, str) else ""
    entry = catalog.get(spec)
    if entry is not None:
        folder, gguf = catalog.cached_folder(entry), catalog.package_gguf(entry)
        return _folder_note(folder) if folder is not None else (_gguf_note(gguf) if gguf is not None else None)
    if spec in ("", "demo") or not _looks_local(spec):
        return None
    path = Path(spec).expanduser()
    _check_allowed(path, roots if roots is not None else allowed_roots())
    if path.is_file() and path.suffix.lower() == ".gguf":
        return _gguf_note(path)
    if path.is_dir() and not (path / "config.json").is_file():
        from compressor.models.gguf_file import find_gguf

        gguf = find_gguf(path)
        return _gguf_note(gguf) if gguf is not None else None
    return _folder_note(path) if path.is_dir() else None


def check_fits(info: ModelInfo, available: int | None = None) -> None:
    """Refuse a model whose weights (with headroom) exceed free memory, with the numbers."""
    available = psutil.virtual_memory().available if available is None else available
    need = int(info.weight_bytes_at_dtype * MEMORY_HEADROOM)
    if need > available:
        raise ModelLoadError(
            f"{info.spec!r} has {info.n_params / 1e9:.2f}B parameters: about {need / 2**30:.1f} GiB needed "
            f"with working room, but only {available / 2**30:.1f} GiB is free. Pick a smaller model, load it "
            "in a lower precision, or use a machine with more memory."
        )


def check_device(device: str | torch.device) -> torch.device:
    """The torch.device for `device`, or ModelLoadError naming what this machine has (before any loading)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ModelLoadError(f"device={device!r} is not a device: use 'cpu' or 'cuda' (or 'cuda:N').") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ModelLoadError(f"device={device!r}: this machine has no CUDA GPU (or this torch build has no "
                                 "CUDA): use 'cpu'.")
        if dev.index is not None and dev.index >= n:
            raise ModelLoadError(f"device={device!r}: this machine has {n} CUDA GPU(s): use cuda:0..cuda:{n - 1}.")
    elif dev.type != "cpu":
        raise ModelLoadError(f"device={device!r} is not supported: use 'cpu' or 'cuda'.")
    return dev


def load_model(spec: str, *, allow_pickle: bool = False, trust_remote_code: bool = False,
               device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               roots: list[Path] | None = None, log: Callable[[str], None] | None = None):
    """Resolve, check and load a causal LM and its tokenizer. Returns (model, tokenizer), model in
    eval mode on `device`. Folders saved by compressor.engine.serialize load with their packed weights.
    A catalog model's first load converts its GGUF into the data folder, saying so through `log`
    (default: a line on stderr)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a bar per load clutters the CLI and worker logs
    check_device(device)
    if not isinstance(spec, str):
        raise ModelLoadError(f"model={spec!r} must be a string: 'demo', a catalog model, a local folder or a hub "
                             "id like 'org/name'.")
    info = resolve(spec, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, dtype=dtype,
                   roots=roots)
    check_fits(info)
    path = info.path
    try:
        if info.source == "catalog" and info.gguf_file is not None:  # first use: convert once, then load the folder
            path, info.gguf_file = str(catalog.ensure_folder(catalog.get(spec), log)), None
        if info.gguf_file is not None:
            from compressor.models.gguf_file import load_gguf

            model, tokenizer = load_gguf(Path(info.gguf_file), dtype)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            if info.source != "hub" and _is_compressed(Path(path)):
                from compressor.engine.serialize import load_compressed

                model = load_compressed(Path(path), dtype=dtype)
            else:
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=dtype, use_safetensors=None if allow_pickle else True,
                    trust_remote_code=trust_remote_code,
                )
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(f"Loading {spec!r} failed: {type(e).__name__}: {e}") from e
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device).eval()
    return model, tokenizer


def _is_compressed(folder: Path) -> bool:
    cfg = folder / "config.json"
    return cfg.is_file() and "compression_lab" in json.loads(cfg.read_text())
