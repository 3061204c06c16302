"""Compression Lab's page (Gradio only): one builder per panel, each owning its components and events.

    page.py      build_app(manager, ask_manager, fit_manager): assembles the panels; serve/stop launch it
    settings.py  model picker, recipe (preset, stage builder, YAML), hardware, evaluation settings
    fit.py       "Fit to hardware" under the presets: a budget -> a mixed-precision recipe (fit_plots.py)
    run.py       run and cancel: a RunRequest submitted as a job, its progress, its report shown
    results.py   metric cards and samples (cards.py), the prompt box
    plots.py     every figure, and the plots panel
    hardware.py  the hardware projection panel and the run's details
    compare.py   two or more runs side by side: table, plots, samples
    export.py    the Download tab: the run on show's model in each export format
    sweep.py     the Sweep tab: many recipes in one click, the grid and its Pareto front
    history.py   past runs: table, Pareto plot, shared gallery, CSV/JSON exports, model downloads
    files.py     the one folder of an app's downloadable files, removed when the app stops
    views.py     one stored report opened once (Report.from_dict) and shown in every panel
    records.py   the page's view of a stored run (the one place that knows the run store's shape)
    request.py   the page's inputs -> a RunRequest (compressor.runs.contract)
    recipes.py   recipe text: presets, YAML, appending a stage
    forms.py     a stage form from a method's config class
    backend.py   where jobs run: job managers (worker processes), or ZeroGPU in the app's own process

The page reads a report's attributes (compressor.runs.contract.Report) and formats them with
compressor.runs.format; it never computes a figure.
"""

import os

# Before gradio is imported anywhere: no analytics look-ups at launch, no hub telemetry.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
