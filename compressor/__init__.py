"""Compression Lab's engine: recipes in, a compressed model and a report out. Never imports gradio.

The public names below load on first use (PEP 562), so `import compressor.runs.worker` in a worker process
or `compressor.runs.store` in the app stays free of torch until a job needs it.
"""

import importlib

_EXPORTS = {
    "calibration_batches": "engine.calibration",
    "StageContext": "engine.compress", "compress": "engine.compress",
    "ModelLoadError": "errors", "RecipeError": "errors", "UnsupportedOnDevice": "errors",
    "get_preset": "engine.recipe", "list_presets": "engine.presets",
    "QuantStageConfig": "engine.stage", "Recipe": "engine.recipe", "StageConfig": "engine.stage", "load_recipe": "engine.recipe",
    "METHODS": "engine.registry", "MethodSpec": "engine.registry", "register": "engine.registry",
    "CompressionReport": "engine.report", "weight_bytes": "engine.report",
    "LayerContext": "engine.sequential",
    "is_compressed_folder": "engine.serialize", "load_compressed": "engine.serialize", "save_compressed": "engine.serialize",
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
