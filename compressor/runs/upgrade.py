"""The one place that knows older report shapes: `upgrade(d)` turns any stored report dict into the
current schema's dict, which `Report.from_dict` reads.

Schema 1 (before the typed contract, no "schema_version" key): flat sections with the headline
figures copied beside their details, stages and layers stored both at the top and in "compression",
the request spread over "model", "recipe", "hardware" and "settings", projection sides as
`hardware.project` dicts. Older schema-1 reports may lack any key; what is missing stays missing.
"""

from __future__ import annotations

import dataclasses

from compressor.errors import LabError

CURRENT = 2


def upgrade(d: dict) -> dict:
    """`d` as a current-schema report dict (a copy when it changes)."""
    if not isinstance(d, dict):
        raise LabError(f"a stored report must be a mapping, got {type(d).__name__}")
    version = d.get("schema_version", 1)
    if version == CURRENT:
        return d
    if version != 1:
        raise LabError(f"this report has schema version {version!r}, which this version of the lab cannot read "
                       f"(it reads 1 to {CURRENT}): update the lab.")
    return _from_v1(d)


def _from_v1(d: dict) -> dict:
    model = d.get("model") if isinstance(d.get("model"), dict) else {"spec": str(d.get("model") or "")}
    proj = d.get("projection") if isinstance(d.get("projection"), dict) else {}
    request = {"model": model.get("spec") or "unknown", "recipe": _recipe_v1(d.get("recipe")),
               "hardware": d.get("hardware") or "this-machine", "eval": _settings_v1(d.get("settings"))}
    if isinstance(proj.get("context"), int):
        request["projection_context"] = proj.get("context_clamped_from") or proj["context"]
    if isinstance(proj.get("batch"), int):
        request["projection_batch"] = proj["batch"]
    compression = dict(d.get("compression") or {})
    compression.setdefault("stages", d.get("stages") or [])
    compression.setdefault("layers", d.get("layers") or [])
    for s in compression["stages"]:
        if isinstance(s, dict) and s.get("seconds") is None:
            s["seconds"] = 0.0
    online = d.get("online") or {}
    samples = [{"prompt": str(s.get("prompt", "")), "baseline": str(s.get("baseline", "")),
                "compressed": str(s.get("compressed", ""))} for s in d.get("samples") or [] if isinstance(s, dict)]
    return {
        "schema_version": CURRENT,
        "request": request,
        "model": {"spec": request["model"], "n_params": model.get("n_params") or 0,
                  "architecture": model.get("architecture") or "", "fingerprint": model.get("fingerprint") or {}},
        "baseline": _measurement_v1(d.get("baseline") or {}, online.get("baseline")),
        "compressed": _measurement_v1(d.get("compressed") or {}, online.get("compressed")),
        "compression": compression,
        "samples": samples,
        "projection": _projection_v1(proj),
        "environment": _environment_v1(d.get("environment")),
        "timings": {k: v for k, v in (d.get("timings") or {}).items() if isinstance(v, int | float)},
        "warnings": [str(w) for w in d.get("warnings") or []],
    }


def _recipe_v1(r: object) -> object:
    if isinstance(r, list):
        return {"stages": r}
    if isinstance(r, dict) and "stages" not in r:
        return {"stages": [r]}
    return r


def _settings_v1(s: object) -> dict:
    from compressor.measure.settings import EvalSettings

    known = {f.name for f in dataclasses.fields(EvalSettings)}
    return {k: v for k, v in (s or {}).items() if k in known} if isinstance(s, dict) else {}


def _measurement_v1(sec: dict, online: object) -> dict:
    out = {k: sec.get(k) for k in ("weight_bytes", "kv_bytes_per_token", "kv_bytes_per_token_config",
                                    "kv_bytes_per_token_speed_run", "kv_bytes_context", "arithmetic_diff_ci95")}
    out["online"] = online if isinstance(online, dict) else sec.get("online") or {}
    q = sec.get("quality")
    if isinstance(q, dict) and q.get("perplexity", sec.get("perplexity")) is not None:
        out["quality"] = {"perplexity": q.get("perplexity", sec.get("perplexity")), "nll": q.get("nll", sec.get("nll")),
                          "n_tokens": q.get("n_tokens", 0), "context": q.get("context", 0),
                          "stride": q.get("stride", 0), "kld": q.get("kld", sec.get("kld")),
                          "kld_p99": q.get("kld_p99", sec.get("kld_p99")),
                          "top1_agreement": q.get("top1_agreement", sec.get("top1_agreement", sec.get("top1"))),
                          "reference_top_k": q.get("reference_top_k"),
                          "reference_tail_mass": q.get("reference_tail_mass"), "seconds": sec.get("quality_seconds")}
    elif sec.get("perplexity") is not None:  # the oldest reports: headline figures only
        out["quality"] = {"perplexity": sec["perplexity"], "nll": sec.get("nll"), "n_tokens": 0, "context": 0,
                          "stride": 0, "kld": sec.get("kld"), "top1_agreement": sec.get("top1_agreement", sec.get("top1"))}
    a = sec.get("arithmetic")
    if isinstance(a, dict):
        out["arithmetic"] = a
    elif sec.get("arithmetic_accuracy") is not None or sec.get("arithmetic_n"):
        out["arithmetic"] = {"accuracy": sec.get("arithmetic_accuracy"), "n": sec.get("arithmetic_n") or 0,
                             "ci95": sec.get("arithmetic_ci95")}
    speed = sec.get("speed")
    if isinstance(speed, dict) and isinstance(speed.get("by_batch"), dict) and "1" in speed["by_batch"]:
        out["speed"] = {k: speed.get(k) for k in ("prompt_tokens", "new_tokens", "repeats", "by_batch",
                                                  "peak_memory_bytes", "peak_memory_delta_bytes",
                                                  "kv_bytes_per_token_measured")}
        out["speed"]["kernel_paths"] = sec.get("kernel_paths") or speed.get("kernel_paths") or {}
        out["speed"]["seconds"] = sec.get("speed_seconds")
    elif sec.get("decode_tokens_per_s") is not None:  # headline speed only: one repeat's worth
        def one(v):
            return {"median": v, "min": v, "max": v, "n": 1} if isinstance(v, int | float) else None
        out["speed"] = {"prompt_tokens": 0, "new_tokens": 0, "repeats": 1, "by_batch": {"1": {
            "prefill_tokens_per_s": one(sec.get("prefill_tokens_per_s")),
            "decode_tokens_per_s": one(sec.get("decode_tokens_per_s")),
            "time_to_first_token_s": one(sec.get("time_to_first_token_s"))}},
            "peak_memory_bytes": sec.get("peak_memory_bytes"), "kernel_paths": sec.get("kernel_paths") or {}}
    return out


_SIDE_KEYS = ("fits", "memory_needed_bytes", "memory_usable_bytes", "max_context_at_batch_1", "max_batch_at_context",
              "decode_tokens_per_s", "prefill_tokens_per_s", "time_to_first_token_s", "prompt_tokens",
              "decode_bound", "decode_breakdown_s", "warnings")


def _side_v1(p: object) -> dict | None:
    if not isinstance(p, dict) or p.get("decode_tokens_per_s") is None:
        return None
    side = {k: p.get(k) for k in _SIDE_KEYS}
    large = next((k for k in p if k.startswith("decode_tokens_per_s_batch_")), None)
    side["large_batch"] = int(large.rsplit("_", 1)[1]) if large else 16
    side["decode_tokens_per_s_large_batch"] = p.get(large) if large else side["decode_tokens_per_s"]
    side["warnings"] = [str(w) for w in side.get("warnings") or []]
    side["decode_breakdown_s"] = side.get("decode_breakdown_s") or {}
    side["prompt_tokens"] = side.get("prompt_tokens") or 0
    side["decode_bound"] = str(side.get("decode_bound") or "")
    return side


def _projection_v1(p: dict) -> dict | None:
    base, comp = _side_v1(p.get("baseline")), _side_v1(p.get("compressed"))
    if not isinstance(p.get("hardware"), dict) or base is None or comp is None:
        return None
    out = {"hardware": p["hardware"], "context": p.get("context") or 0, "batch": p.get("batch") or 1,
           "baseline": base, "compressed": comp, "float_dtype": str(p.get("baseline_dtype") or ""),
           "context_clamped_from": p.get("context_clamped_from")}
    chk = p.get("check_against_measured")
    if isinstance(chk, dict):
        out["check_against_measured"] = {
            side: {"projected_decode_tokens_per_s": chk[side].get("projected_decode_tokens_per_s"),
                   "measured_decode_tokens_per_s": chk[side].get("measured_decode_tokens_per_s")}
            for side in ("baseline", "compressed") if isinstance(chk.get(side), dict)}
    return out


def _environment_v1(e: object) -> dict | None:
    if not isinstance(e, dict) or "device" not in e:
        return None
    keys = ("device", "python", "torch", "transformers", "platform", "cpu", "threads", "gpu")
    out = {k: e.get(k) for k in keys}
    for k in keys[:-1]:
        out[k] = out[k] if out[k] is not None else ("" if k != "threads" else 0)
    return out
