"""`python -m compressor hardware`: the hardware profiles a run can be projected onto."""

from __future__ import annotations


def add_parser(sub) -> None:
    sub.add_parser("hardware", help="list hardware profiles").set_defaults(func=cmd_hardware)


def cmd_hardware(_args) -> int:
    from compressor.measure.hardware import THIS_MACHINE, human_bytes, list_profiles

    print(f"{'id':<14} {'memory':>10} {'GB/s':>7}  {'TFLOPS (dtype)':<22} features  name")
    for p in list_profiles():
        dt = p.default_compute_dtype
        feats = ",".join(k for k, v in p.features.items() if v) or "-"
        print(f"{p.id:<14} {human_bytes(p.memory_bytes):>10} {p.memory_bandwidth_gb_s:>7g}  "
              f"{p.peak_tflops.get(dt, 0):>8g} ({dt}){'':<8} {feats}  {p.name}")
    print(f"{THIS_MACHINE:<14} measured by a short probe when a run uses it")
    return 0
