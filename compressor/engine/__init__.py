"""The engine: a recipe of stages applied to a model (`compress`), the methods, and the saved format.

recipe, registry, presets    what a recipe is, which methods exist, the named recipes (plain dicts)
fields                       a method's config as field specs for forms (no UI types)
compress, context, sequential  how stages run: `apply(cfg, ctx)` once on the model (StageContext) or
                             layer by layer on calibration data (LayerContext), same surface
calibration, text            calibration tokens; the stdlib text corpus and BOS rule shared with measurement
hessian, quant, sparsity     the shared pieces methods are built from
modules, packed, layout      module types stages leave; every packed type registered in one place;
                             the per-layer shapes structured pruning leaves
kvcache/                     compressed KV caches (store, layers, cache) and their measurements (metrics)
methods/                     one file per method (config with its declarations, pure tensor math, apply)
report, serialize            the per-stage/per-module report; saving and loading compressed models

Never imports gradio, compressor.runs or compressor.measure (tests/engine/test_boundaries.py).
"""
