"""Runs: one run from a request (RunRequest) to a report (Report), the background workers, the run store.

Imports compressor.engine, compressor.measure and compressor.models; never gradio.
"""
