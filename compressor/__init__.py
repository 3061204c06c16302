"""Compression Lab's engine: recipes in, a compressed model and a report out. Never imports gradio."""

from .calibration import calibration_batches
from .engine import StageContext, compress
from .errors import ModelLoadError, RecipeError, UnsupportedOnDevice
from .presets import get_preset, list_presets
from .recipe import QuantStageConfig, Recipe, StageConfig, load_recipe
from .registry import METHODS, MethodSpec, register
from .report import CompressionReport, weight_bytes
from .sequential import LayerContext
from .serialize import is_compressed_folder, load_compressed, save_compressed

__all__ = [
    "METHODS", "CompressionReport", "LayerContext", "MethodSpec", "ModelLoadError", "QuantStageConfig", "Recipe",
    "RecipeError", "StageConfig", "StageContext", "UnsupportedOnDevice", "calibration_batches", "compress",
    "get_preset", "is_compressed_folder", "list_presets", "load_compressed", "load_recipe", "register",
    "save_compressed", "weight_bytes",
]
