"""Fit to hardware: a per-module sensitivity map, an allocator under a budget, and the recipe it gives.

    formats.py      candidate formats and the bytes each one stores (the lab's packed format)
    stats.py        the statistics pass: Fisher diagonal from one backward pass per calibration sequence
    sensitivity.py  the map: predicted KL per (module, format), cached per model and calibration set
    allocator.py    multiple-choice knapsack by dynamic programming; the cost curve over budgets
    budget.py       "3.5bits" | "1.2GiB" | "hardware:t4" (+ context, batch) -> bytes of weights
    recipe.py       an allocation as an ordinary RTN recipe with per-module overrides, and back
    fitting.py      fit(spec, budget) and fit_map(map, budget): the whole path, typed results
    job.py          the page's job target
    sweeps.py       sweeps' `budget:` entries: the fitted recipe per model (`register()`)

Layering: imports compressor.engine, compressor.measure and compressor.models; the CLI and the page
import it. See docs/fit.md.
"""

from compressor.fit.fitting import FitResult, fit, fit_map, measure_map

__all__ = ["FitResult", "fit", "fit_map", "measure_map"]
