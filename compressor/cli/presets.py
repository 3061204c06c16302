"""`python -m compressor presets`: the recipe presets, their stages and what each is for."""

from __future__ import annotations

SHOWN = ("bits", "group_size", "sparsity", "pattern", "steps", "heads_fraction", "mlp_fraction")


def add_parser(sub) -> None:
    sub.add_parser("presets", help="list recipe presets").set_defaults(func=cmd_presets)


def cmd_presets(_args) -> int:
    from compressor.engine.presets import list_presets
    from compressor.engine.recipe import get_preset

    for name, about in list_presets().items():
        stages = get_preset(name).to_dict()["stages"]
        desc = " + ".join(", ".join([s["method"]] + [f"{k}={s[k]}" for k in SHOWN if k in s
                                                     and not (k == "pattern" and s[k] == "unstructured")])
                          for s in stages)
        print(f"{name:<26} {desc}\n{'':<26} {about}")
    return 0
