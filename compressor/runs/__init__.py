"""Runs: one experiment from a request to a report, the background workers, the run store.

Imports compressor.engine, compressor.measure and compressor.models; never gradio.
"""
