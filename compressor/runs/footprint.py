"""What a projection needs of the two models, taken while they are in memory: `Report.footprint`.

Each side's `ModelFacts` as measured here, and with floats at 16 bits (how a GPU profile holds them:
the lab loads fp32 on the CPU), so that compressor/runs/projection.py can project a finished report
onto any profile without the model.
"""

from __future__ import annotations

from compressor.engine.recipe import Recipe
from compressor.engine.report import weight_bytes_at
from compressor.measure.hardware import ModelFacts
from compressor.runs.contract import Footprint, Measurement

FLOAT16_BYTES = 2


def float16_weight_bytes(model) -> int:
    """The model's weight bytes with floats at 16 bits (packed integers at their own size). Count the
    baseline's before compression changes it."""
    return weight_bytes_at(model, FLOAT16_BYTES)


def footprint(model, n_params: int, recipe: Recipe, baseline: Measurement, compressed: Measurement,
              baseline_float16_bytes: int, baseline_float_bytes: int) -> dict[str, Footprint]:
    """Both sides' facts, from the compressed `model` (its shape and dtype) and the two measurements.

    At 16 bits a KV cache that a KV stage compressed keeps its measured bytes; a dense cache is scaled
    from the measured float width (`baseline_float_bytes` per element) to 2 bytes.
    """
    cfg = model.config
    traits, bits = recipe.traits()  # formats that change kernel behaviour, lowest weight bits
    dtype = next(model.parameters()).dtype
    measured_bits = 8.0 * dtype.itemsize
    kv16 = FLOAT16_BYTES / baseline_float_bytes
    compressed_kv16 = compressed.kv_bytes_per_token * (1 if getattr(model, "kv_cache_config", None) else kv16)

    def facts(w_bytes: int, kv: float, side_traits: list[str], side_bits: float) -> ModelFacts:
        return ModelFacts(weight_bytes=w_bytes, n_params=n_params, n_layers=cfg.num_hidden_layers,
                          kv_bytes_per_token=kv, max_context=getattr(cfg, "max_position_embeddings", 2048),
                          hidden_size=cfg.hidden_size, traits=side_traits, weight_bits=side_bits)

    measured_dtype = str(dtype).removeprefix("torch.")
    return {
        "baseline": Footprint(
            measured=facts(baseline.weight_bytes, baseline.kv_bytes_per_token, [], measured_bits),
            float16=facts(baseline_float16_bytes, baseline.kv_bytes_per_token * kv16, [], 16.0),
            measured_dtype=measured_dtype),
        "compressed": Footprint(
            measured=facts(compressed.weight_bytes, compressed.kv_bytes_per_token, traits, bits),
            float16=facts(float16_weight_bytes(model), compressed_kv16, traits, bits),
            measured_dtype=measured_dtype),
    }
