"""Measurement: quality (perplexity, KL, top-1, arithmetic), speed and memory, hardware projection.

Imports compressor.engine (reports, KV caches), never compressor.runs or gradio.
"""
