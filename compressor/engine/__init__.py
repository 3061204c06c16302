"""The engine: a recipe of stages applied to a model (`compress`), the methods, and the saved format.

recipe, registry, presets   what a recipe is and which methods exist
compress, sequential        how stages run (whole model, or layer by layer on calibration data)
calibration, hessian, quant the shared pieces methods are built from
sparsity, kvcache           pruning masks and compact 2:4; compressed KV-cache layers
methods/                    one file per method (config, pure tensor math, a thin apply)
report, serialize           the per-stage/per-module report; saving and loading compressed models

Never imports gradio, compressor.runs or compressor.measure.
"""
