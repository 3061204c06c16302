"""Compression Lab's engine: recipes in, a compressed model and a report out. Never imports gradio.

The public names below load on first use (PEP 562), so `import compressor.jobs` in a worker process
or `compressor.store` in the app stays free of torch until a job needs it.
"""

import importlib

_EXPORTS = {
    "calibration_batches": "calibration",
    "StageContext": "engine", "compress": "engine",
    "ModelLoadError": "errors", "RecipeError": "errors", "UnsupportedOnDevice": "errors",
    "get_preset": "presets", "list_presets": "presets",
    "QuantStageConfig": "recipe", "Recipe": "recipe", "StageConfig": "recipe", "load_recipe": "recipe",
    "METHODS": "registry", "MethodSpec": "registry", "register": "registry",
    "CompressionReport": "report", "weight_bytes": "report",
    "LayerContext": "sequential",
    "is_compressed_folder": "serialize", "load_compressed": "serialize", "save_compressed": "serialize",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'compressor' has no attribute {name!r}")
    module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    if name == "METHODS":  # the registry, with every method file imported
        module.load_methods()
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
