"""The page's "Fit to hardware" job: a job target (`target(payload, ctx) -> dict`) run by a job manager in
a worker process, so the page never loads a model or runs the statistics pass itself.

    payload = {"model": "demo", "budget": "4.5bits", "context": 2048, "batch": 1}
    -> {"map": SensitivityMap.to_dict(), "result": FitResult.to_dict() or None, "error": str or None}

The map comes back even when the budget cannot be met (below the smallest model), so the page can say
why and re-allocate at another budget without a second job (`fit_map` needs no model).
"""

from __future__ import annotations

from compressor.errors import LabError

SAMPLES = (1, 64)  # calibration sequences a page's job may ask for (each is a forward and a backward pass)
SEQ_LEN = (16, 1024)


def _int(payload: dict, key: str, default: int, bounds: tuple[int, int]) -> int:
    v = payload.get(key, default)
    lo, hi = bounds
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise LabError(f"{key}={v!r} is not valid: use a whole number in [{lo}, {hi}]")
    return v


def fit_job(payload: dict, ctx=None) -> dict:
    """Measure (or read) the model's sensitivity map and fit it to the payload's budget."""
    from compressor.fit.budget import parse_budget
    from compressor.fit.fitting import DEFAULT_SAMPLES, DEFAULT_SEQ_LEN, fit_map, measure_map
    from compressor.models.loading import load_model

    spec = payload.get("model") or "demo"
    budget = parse_budget(payload.get("budget", ""), _int(payload, "context", 2048, (1, 1 << 20)),
                          _int(payload, "batch", 1, (1, 4096)))
    samples = _int(payload, "samples", DEFAULT_SAMPLES, SAMPLES)
    seq_len = _int(payload, "seq_len", DEFAULT_SEQ_LEN, SEQ_LEN)

    def progress(fraction: float, message: str) -> None:
        if ctx is not None:
            ctx.progress({"stage": "fit", "fraction": 0.1 + 0.9 * fraction, "message": message})

    progress(0.0, f"loading {spec}")
    model, tokenizer = load_model(spec, log=ctx.log if ctx is not None else None)
    smap = measure_map(model, tokenizer, name=spec, n_samples=samples, seq_len=seq_len, progress=progress)
    try:
        result, error = fit_map(smap, budget).to_dict(), None
    except LabError as e:
        result, error = None, str(e)
    return {"map": smap.to_dict(), "result": result, "error": error}
