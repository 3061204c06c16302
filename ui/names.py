"""Readable names for runs: model, recipe, hardware and time, instead of a hash.

    run_name(record) -> "demo · rtn w4 g128 · NVIDIA T4 · 01 Dec 14:05"

Names are made from what the store keeps for every run (model spec, the recipe as asked, hardware id,
submission time), so a long history is named without opening its reports.
"""

from __future__ import annotations

import functools
import time
from pathlib import PurePath

from compressor.measure.hardware import THIS_MACHINE, list_profiles
from compressor.runs.store import FINAL_STATUSES, SUCCEEDED, RunRecord
from ui.recipes import stored_recipe_label

MAX_PART = 48  # characters of one part of a name (a long hub id or recipe is cut)


@functools.lru_cache(maxsize=1)
def _hardware_names() -> dict[str, str]:
    return {THIS_MACHINE: "this machine"} | {p.id: p.name for p in list_profiles()}


def hardware_name(profile_id: str | None) -> str:
    if not profile_id:
        return "this machine"
    return _hardware_names().get(profile_id, str(profile_id))[:MAX_PART]


def model_name(spec: str | None) -> str:
    """"demo", the last part of a hub id, or a local folder's name (never its path on the server)."""
    spec = (spec or "").strip()
    if not spec:
        return "?"
    if spec.startswith(("/", ".", "~")) or "\\" in spec:
        return PurePath(spec.replace("\\", "/")).name[:MAX_PART] or "local model"
    return spec.rsplit("/", 1)[-1][:MAX_PART]


def when(stamp: float | None) -> str:
    return time.strftime("%d %b %H:%M", time.localtime(stamp)) if stamp else ""


def run_name(run: RunRecord) -> str:
    """model · recipe · hardware · time of submission."""
    recipe = stored_recipe_label(run.recipe)[:MAX_PART] or "?"
    parts = [model_name(run.model_spec), recipe, hardware_name(run.hardware), when(run.created_at)]
    return " · ".join(p for p in parts if p)


def run_choice(run: RunRecord) -> tuple[str, str]:
    """(label, run id) for a dropdown; an unfinished or failed run says how it stands."""
    label = run_name(run)
    if run.status != SUCCEEDED:
        label += f" ({run.status})" if run.status in FINAL_STATUSES else f" ({run.status}...)"
    return label, run.id
