"""Named recipes as plain stage dicts: `list_presets()` -> {name: description}, `preset_stages(name)` ->
[stage dict, ...]. `compressor.engine.recipe` builds them (`load_recipe(name)`, `get_preset(name)`);
this module imports nothing of the engine, so recipe -> presets is the only arrow between them."""

from __future__ import annotations

from compressor.errors import RecipeError

# name: (description, stages). Methods are looked up when a preset is built, so a preset whose method
# is not installed fails with the registry's list of known methods.
PRESETS: dict[str, tuple[str, list[dict]]] = {
    "int8": ("RTN int8 weights, symmetric, one scale per output channel",
             [{"method": "rtn", "bits": 8, "group_size": -1, "symmetric": True}]),
    "w4-g128": ("RTN 4-bit weights, asymmetric, groups of 128",
                [{"method": "rtn", "bits": 4, "group_size": 128}]),
    "w3-g128": ("RTN 3-bit weights, asymmetric, groups of 128",
                [{"method": "rtn", "bits": 3, "group_size": 128}]),
    "gptq-w4-g128": ("GPTQ 4-bit weights, groups of 128, static act-order (needs calibration)",
                     [{"method": "gptq", "bits": 4, "group_size": 128}]),
    "gptq-w3-g128": ("GPTQ 3-bit weights, groups of 128, static act-order (needs calibration)",
                     [{"method": "gptq", "bits": 3, "group_size": 128}]),
    "awq-w4-g128": ("AWQ 4-bit weights, groups of 128, activation-aware scales (needs calibration)",
                    [{"method": "awq", "bits": 4, "group_size": 128}]),
    "hqq-w4-g64": ("HQQ 4-bit weights, groups of 64, calibration-free zero optimisation",
                   [{"method": "hqq", "bits": 4, "group_size": 64}]),
    "smoothquant-w8a8": ("SmoothQuant int8 weights and dynamic per-token int8 activations (needs calibration)",
                         [{"method": "smoothquant"}]),
    "nf4": ("bitsandbytes NF4 4-bit weights", [{"method": "bnb-nf4"}]),
    "llm-int8": ("bitsandbytes LLM.int8() with outlier decomposition", [{"method": "llm-int8"}]),
    "fp8": ("FP8 E4M3 weights with per-channel scales", [{"method": "fp8"}]),
    # Pruning: zeros stored densely save nothing by themselves (the report says so); the stack and the
    # structured preset are the ones that end smaller. Stacked presets show per-stage attribution.
    "sparsegpt-50": ("SparseGPT 50% unstructured pruning, zeros stored densely: quality cost only (needs calibration)",
                     [{"method": "sparsegpt", "sparsity": 0.5}]),
    "sparsegpt-50-distill-int8": ("Prune -> distil -> quantize: SparseGPT 50%, 60 steps of logit distillation "
                                  "against the original, then RTN int8 (needs calibration; per-stage table)",
                                  [{"method": "sparsegpt", "sparsity": 0.5},
                                   {"method": "distill", "steps": 60, "seq_len": 256},
                                   {"method": "rtn", "bits": 8, "group_size": -1, "symmetric": True}]),
    "structured-25": ("Structured pruning: 25% of KV-head groups and 25% of MLP channels physically removed "
                      "(smaller and faster; needs calibration)",
                      [{"method": "structured", "heads_fraction": 0.25, "mlp_fraction": 0.25}]),
}


def list_presets() -> dict[str, str]:
    """{preset name: one-line description}."""
    return {name: desc for name, (desc, _) in PRESETS.items()}


def preset_stages(name: str) -> list[dict]:
    """The stage dicts of a named preset (copies); RecipeError listing the presets for an unknown name."""
    if name not in PRESETS:
        raise RecipeError("preset", name, f"known presets are {', '.join(PRESETS)}")
    return [dict(s) for s in PRESETS[name][1]]

