"""Click-to-first-result and click-to-full-result through the job manager, as the page sees them.

Run:  python -m benchmarks.click_to_result [--models demo,smollm2-135m] [--presets quick,thorough]
      [--recipes w4-g128,int8] [--hardware this-machine] [--settle-s 10]

For each model and evaluation preset, a JobManager with the real runner on `--data-dir` (what the app
builds; a catalog model's one-time conversion stays there between sections, as in the app), its
baseline cache emptied, its worker started and settled (`--settle-s`: the app's workers are up before a
visitor clicks, and import the runner meanwhile). Then one "click" per recipe, in order: the first
measures the baseline, the later ones find it in the cache. For each click the table gives

    first result   submit -> the first partial report (the compressed model's quality: the KL card)
    speed          submit -> the partial report with the compressed model's speed
    full result    submit -> the finished report (samples and the hardware projection too)

and the report's own timings (preflight, load, baseline, compress, compressed evaluation, projection:
with "this-machine" the first run of a worker process probes the machine). Wall-clock times on a
shared machine move with its load: the load average is printed before and after; compare only figures
taken back to back, and quote none as final until measured on a quiet machine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall on shared cores

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from compressor.runs.contract import Report  # noqa: E402
from compressor.runs.manager import JobManager  # noqa: E402
from compressor.runs.runner import check_payload  # noqa: E402

WAIT_S = 1800


def click(manager: JobManager, payload: dict) -> dict:
    """Submits `payload` and follows its events; seconds from the submit to each result."""
    t0 = time.perf_counter()
    run_id = manager.submit(payload, owner="benchmark")
    seen: dict[str, float] = {}
    for event in manager.follow(run_id, poll_s=0.05):
        if event["kind"] == "partial":
            # the first partial report carries the quality; the one whose next pending part is the samples, the speed
            seen.setdefault("speed" if event["pending"][:1] == ["samples"] else "first", time.perf_counter() - t0)
    run = manager.wait(run_id, timeout=WAIT_S)
    seen["full"] = time.perf_counter() - t0
    if run.status != "succeeded":
        raise SystemExit(f"{payload['model']} / {payload['recipe']}: the run {run.status}: {run.error}")
    return {"seconds": seen, "report": run.load_report()}


def row(model: str, preset: str, recipe: str, out: dict) -> str:
    s, r = out["seconds"], out["report"]
    t = r.timings

    def sec(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f}"

    base = f"{sec(t.baseline_eval_s)}{' (cached)' if t.baseline_cached else ''}"
    return (f"| {model} | {preset} | {recipe} | {sec(s.get('first'))} | {sec(s.get('speed'))} | {sec(s['full'])} | "
            f"{sec(t.preflight_s)} | {sec(t.load_s)} | {base} | {sec(t.compress_s)} | {sec(t.compressed_eval_s)} | "
            f"{sec(t.project_s)} | {sec(t.total_s)} |")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="demo,smollm2-135m")
    p.add_argument("--presets", default="quick,thorough")
    p.add_argument("--recipes", default="w4-g128,int8", help="clicked in this order on each model and preset")
    p.add_argument("--hardware", default="this-machine", help="the page's default profile")
    p.add_argument("--settle-s", type=float, default=10.0, help="wait after the worker is up, before clicking")
    p.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "lab-bench-data",
                   help="the app's data folder for the benchmark (kept: converted catalog models stay)")
    args = p.parse_args(argv)
    print(f"load average before: {', '.join(f'{x:.2f}' for x in os.getloadavg())}; {os.cpu_count()} CPUs")
    print("| model | preset | recipe | first result s | speed s | full result s | preflight s | load s | baseline s | "
          "compress s | compressed eval s | projection s | run total s |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for model in args.models.split(","):
        for preset in args.presets.split(","):
            os.environ["LAB_DATA_DIR"] = str(args.data_dir)  # catalog conversions live in the data folder
            with JobManager(args.data_dir, check_payload=check_payload) as manager:
                manager.store.cache_clear()  # the first click measures the baseline
                if manager.warm_up(timeout=WAIT_S):
                    time.sleep(args.settle_s)
                for recipe in args.recipes.split(","):
                    payload = {"model": model, "recipe": recipe, "hardware": args.hardware, "eval": {"preset": preset}}
                    out = click(manager, payload)
                    assert isinstance(out["report"], Report)
                    print(row(model, preset, recipe, out), flush=True)
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
