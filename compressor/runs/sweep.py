"""A sweep: models x recipes x evaluation settings, every cell an ordinary run with its own report.

    spec = SweepSpec.build(models="demo", recipes="w4-g128,int8,hqq-w4-g64", hardware="t4")
    cells = spec.cells()          # every cell's payload checked as a submission is, before anything runs
    progress = sweep_progress(views, slots=2)   # done / running / queued / failed, ETA

Recipes come as preset names ("w4-g128,int8"), as a YAML list, or as budgets for the fit-to-hardware
allocator. A YAML list holds one entry per recipe:

    - w4-g128                                  # a preset
    - {method: hqq, bits: 4, group_size: 64}   # one stage
    - name: rtn-w4-g64                         # a named recipe of one or more stages
      stages: [{method: rtn, bits: 4, group_size: 64}]
    - budget: 300MiB                           # the allocator's recipe for this budget, per model

A budget needs an allocator: `register_budget_resolver(fn)` with `fn(model, budget, hardware) -> recipe`
(a preset name, a dict or a list of stages). Without one, a budget entry is refused with a message saying
so, before any cell runs.

Running a sweep is `compressor.runs.sweep_run`'s (executors, the baseline gate, cancel); its records are
`compressor.runs.sweep_store`'s. This module is pure: specs, cells and progress figures.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from compressor.engine.bounds import parse_recipe_text
from compressor.engine.presets import list_presets
from compressor.errors import LabError
from compressor.measure.hardware import THIS_MACHINE
from compressor.measure.settings import DEFAULT_PRESET, PRESETS
from compressor.runs.store import CANCELLED, FAILED, INTERRUPTED, QUEUED, RUNNING, SUCCEEDED

MAX_CELLS = 64  # each cell is a whole run: a grid beyond this is a batch job, not a click
MAX_MODELS = 8
WAITING = "waiting"  # a cell the sweep has not handed to its executor yet (no run exists)
# The runner's phases after the baseline quality is in the cache (compressor/runs/runner.py PHASES).
PAST_BASELINE = frozenset({"compress", "evaluate-compressed", "project"})

BudgetResolver = Callable[[str, object, str], object]
_budget_resolver: BudgetResolver | None = None


def register_budget_resolver(fn: BudgetResolver | None) -> None:
    """Lets sweeps take budgets: `fn(model, budget, hardware)` returns the allocator's recipe for `model`
    within `budget` on `hardware` (a preset name, a dict or a list of stages). None removes it."""
    global _budget_resolver
    _budget_resolver = fn


@dataclass(frozen=True)
class RecipeEntry:
    """One recipe of the sweep: `recipe` as a run payload carries it (a preset name or a stages dict),
    or `budget` for the allocator (resolved per model when the cells are made)."""

    label: str
    recipe: str | dict | None = None
    budget: object = None

    def for_model(self, model: str, hardware: str) -> str | dict | list:
        if self.budget is None:
            return self.recipe
        if _budget_resolver is None:
            raise LabError(f"recipe entry {self.label!r} is a budget, and budgets need the fit-to-hardware "
                           "allocator, which runs here only in the command line's sweep (python -m compressor sweep) "
                           "or the page's Fit to hardware panel: fit there and list the recipe it gives")
        return _budget_resolver(model, self.budget, hardware)


@dataclass(frozen=True)
class Cell:
    """One run of the sweep: `index` in the grid, what it runs, and the payload a job receives."""

    index: int
    model: str
    recipe_label: str
    eval_label: str
    payload: dict

    @property
    def group(self) -> str:
        """Cells of one group share one baseline measurement (same model and evaluation settings)."""
        return json.dumps([self.payload["model"], self.payload.get("eval"), self.payload.get("device")])


@dataclass
class SweepSpec:
    """What a sweep runs: every model x every recipe x every evaluation setting.

    Args:
        models: model specs ("demo", a local folder, a hub id), at most MAX_MODELS.
        recipes: RecipeEntry per recipe (`parse_recipes` reads them from text).
        evals: (label, eval settings mapping) per evaluation setting (`parse_evals`).
        hardware: the profile each cell's report is projected onto (the page re-projects on any other).
        device, projection_context, projection_batch: as in a RunRequest, the same for every cell.
    """

    models: list[str]
    recipes: list[RecipeEntry]
    evals: list[tuple[str, dict]] = field(default_factory=lambda: [(DEFAULT_PRESET, {"preset": DEFAULT_PRESET})])
    hardware: str = THIS_MACHINE
    device: str = "cpu"
    projection_context: int | None = None
    projection_batch: int | None = None

    def __post_init__(self):
        if not self.models or not all(isinstance(m, str) and m.strip() for m in self.models):
            raise LabError(f"sweep models={self.models!r}: give one or more model specs, e.g. 'demo'")
        if len(self.models) > MAX_MODELS:
            raise LabError(f"a sweep takes at most {MAX_MODELS} models; got {len(self.models)}")
        if not self.recipes:
            raise LabError("a sweep needs at least one recipe: tick presets or give a YAML list")
        if not self.evals:
            raise LabError("a sweep needs at least one evaluation setting, e.g. 'quick'")
        n = len(self.models) * len(self.recipes) * len(self.evals)
        if n > MAX_CELLS:
            raise LabError(f"this sweep has {n} cells ({len(self.models)} models x {len(self.recipes)} recipes x "
                           f"{len(self.evals)} evaluation settings); the limit is {MAX_CELLS}: split it in parts")

    @classmethod
    def build(cls, models: str | Iterable[str], recipes: object, evals: object = None, **kw) -> SweepSpec:
        """A spec from what a user types: models comma-separated (or a list), recipes and evaluation
        settings as `parse_recipes` and `parse_evals` read them."""
        if isinstance(models, str):
            models = [m.strip() for m in models.split(",") if m.strip()]
        return cls(models=list(models), recipes=parse_recipes(recipes), evals=parse_evals(evals), **kw)

    def cells(self) -> list[Cell]:
        """The grid, model-major, each payload checked as a submission is (a bad recipe or setting is a
        LabError naming the cell, before any cell runs)."""
        from compressor.runs.runner import check_payload

        out = []
        for model in self.models:
            for entry in self.recipes:
                recipe = entry.for_model(model, self.hardware)
                for eval_label, evald in self.evals:
                    payload = {"model": model, "recipe": recipe, "hardware": self.hardware, "eval": dict(evald),
                               "device": self.device}
                    for name in ("projection_context", "projection_batch"):
                        if getattr(self, name) is not None:
                            payload[name] = getattr(self, name)
                    try:
                        check_payload(payload)  # what JobManager.submit checks, before the sweep starts
                    except LabError as e:
                        raise LabError(f"sweep cell {model} x {entry.label} x {eval_label}: {e}") from None
                    out.append(Cell(len(out), model, entry.label, eval_label, payload))
        return out

    def to_dict(self) -> dict:
        return {"models": self.models, "hardware": self.hardware, "device": self.device,
                "projection_context": self.projection_context, "projection_batch": self.projection_batch,
                "recipes": [{"label": r.label, "recipe": r.recipe, "budget": r.budget} for r in self.recipes],
                "evals": [{"label": label, "eval": evald} for label, evald in self.evals]}

    @classmethod
    def from_dict(cls, d: dict) -> SweepSpec:
        return cls(models=list(d["models"]), hardware=d.get("hardware", THIS_MACHINE), device=d.get("device", "cpu"),
                   projection_context=d.get("projection_context"), projection_batch=d.get("projection_batch"),
                   recipes=[RecipeEntry(r["label"], r.get("recipe"), r.get("budget")) for r in d["recipes"]],
                   evals=[(e["label"], dict(e["eval"])) for e in d["evals"]])


# --- reading what a user typed ----------------------------------------------------------------------


def parse_recipes(value: object) -> list[RecipeEntry]:
    """Recipe entries from "a,b,c" (preset names), YAML/JSON text of a list (see the module docstring),
    or such a list already parsed (RecipeEntry items pass as they are). Each entry is checked for its
    shape here; its stages when the cells are made."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise LabError("no recipes: give preset names (a,b,c) or a YAML list")
        if "\n" not in text and not text.startswith(("[", "{", "-")) and ":" not in text:
            value = [name.strip() for name in text.split(",") if name.strip()]
        else:
            value = parse_recipe_text(text)
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list):
        raise LabError(f"recipes must be a list of presets or recipes, got {type(value).__name__}")
    entries = [_entry(item, i) for i, item in enumerate(value)]
    labels = [e.label for e in entries]
    dupes = sorted({label for label in labels if labels.count(label) > 1})
    if dupes:
        raise LabError(f"recipe(s) {dupes} are listed twice; give each recipe once (or a different name:)")
    return entries


def _entry(item: object, i: int) -> RecipeEntry:
    presets = list_presets()
    if isinstance(item, RecipeEntry):
        return item
    if isinstance(item, str):
        name = item.strip()
        if name not in presets:
            raise LabError(f"recipe {i + 1}: {name[:60]!r} is not a preset (known: {', '.join(presets)}); "
                           "write other recipes as YAML entries")
        return RecipeEntry(name, name)
    if not isinstance(item, dict):
        raise LabError(f"recipe {i + 1}: give a preset name or a mapping ({{stages: [...]}}, one stage "
                       f"{{method: ...}}, or {{budget: ...}}), not a {type(item).__name__}")
    item = dict(item)
    name = item.pop("name", None)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise LabError(f"recipe {i + 1}: name={name!r} must be a non-empty string")
    if "budget" in item:
        if set(item) != {"budget"}:
            raise LabError(f"recipe {i + 1}: a budget entry holds only budget (and name); got {sorted(item)}")
        return RecipeEntry(name or f"budget {item['budget']}", budget=item["budget"])
    recipe = item if "stages" in item else {"stages": [item]}
    if name is None:
        from compressor.engine.recipe import Recipe

        try:
            name = Recipe.from_dict(recipe).label()
        except LabError as e:
            raise LabError(f"recipe {i + 1}: {e}") from None
    return RecipeEntry(name.strip(), recipe)


def parse_evals(value: object) -> list[tuple[str, dict]]:
    """Evaluation settings from "quick,standard" (preset names), YAML/JSON text of a mapping or a list
    of names and mappings, or such values parsed; None gives the default preset."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return [(DEFAULT_PRESET, {"preset": DEFAULT_PRESET})]
    if isinstance(value, str):
        text = value.strip()
        if "\n" not in text and not text.startswith(("[", "{", "-")) and ":" not in text:
            value = [name.strip() for name in text.split(",") if name.strip()]
        else:
            value = parse_recipe_text(text)  # bounded YAML, as recipes are
    if isinstance(value, str | dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise LabError("evaluation settings: give preset names (quick,standard) or a mapping of settings")
    out = []
    for item in value:
        if isinstance(item, str):
            if item not in PRESETS:
                raise LabError(f"evaluation preset {item[:40]!r} is not known: use one of {', '.join(PRESETS)}")
            out.append((item, {"preset": item}))
        elif isinstance(item, dict):
            changes = ", ".join(f"{k}={v}" for k, v in item.items() if k != "preset")
            label = f"{item.get('preset', 'custom')}" + (f" ({changes})" if changes else "")
            out.append((label, dict(item)))
        else:
            raise LabError(f"evaluation setting {item!r}: give a preset name or a mapping of settings")
    return out


# --- progress -----------------------------------------------------------------------------------------

# A cell's status as the sweep counts it.
BUCKET = {WAITING: "queued", QUEUED: "queued", RUNNING: "running", SUCCEEDED: "done", FAILED: "failed",
          INTERRUPTED: "failed", CANCELLED: "cancelled", "deleted": "cancelled"}


@dataclass(frozen=True)
class CellState:
    """Where one cell stands: a run's status (or WAITING), its times and progress fraction."""

    status: str
    started_at: float | None = None
    finished_at: float | None = None
    fraction: float | None = None


@dataclass(frozen=True)
class SweepProgress:
    """Counts of a sweep's cells and the time left (None until one cell has told how long it takes)."""

    total: int
    done: int
    running: int
    queued: int
    failed: int
    cancelled: int
    eta_s: float | None

    @property
    def finished(self) -> bool:
        return self.running == 0 and self.queued == 0

    def line(self) -> str:
        """"3/6 done, 2 running, 1 queued, 0 failed, about 2 min left"."""
        text = f"{self.done}/{self.total} done, {self.running} running, {self.queued} queued, {self.failed} failed"
        if self.cancelled:
            text += f", {self.cancelled} cancelled"
        if not self.finished:
            text += ", time left unknown yet" if self.eta_s is None else f", about {_duration(self.eta_s)} left"
        return text

    def to_dict(self) -> dict:
        return {"total": self.total, "done": self.done, "running": self.running, "queued": self.queued,
                "failed": self.failed, "cancelled": self.cancelled, "eta_s": self.eta_s, "finished": self.finished}


def sweep_progress(cells: list[CellState], slots: int, now: float | None = None) -> SweepProgress:
    """Counts and ETA. A cell's duration is learnt from finished cells (mean), or before any has finished
    from running cells past a tenth of their work (elapsed / fraction). The ETA is the work left (running
    cells' remainder plus queued cells' durations) spread over `slots` cells at once."""
    now = time.time() if now is None else now
    counts = {"done": 0, "running": 0, "queued": 0, "failed": 0, "cancelled": 0}
    for c in cells:
        counts[BUCKET[c.status]] += 1
    took = [c.finished_at - c.started_at for c in cells if c.status == SUCCEEDED and c.started_at and c.finished_at]
    if not took:
        took = [(now - c.started_at) / c.fraction for c in cells
                if c.status == RUNNING and c.started_at and c.fraction and c.fraction >= 0.1]
    eta = None
    if took:
        mean = sum(took) / len(took)
        left = 0.0
        for c in cells:
            if c.status == RUNNING:
                elapsed = now - c.started_at if c.started_at else 0.0
                left += max(mean - elapsed, 0.0)
        eta = (left + counts["queued"] * mean) / max(slots, 1)
    return SweepProgress(total=len(cells), eta_s=eta, **counts)


def _duration(s: float) -> str:
    return f"{s:.0f} s" if s < 90 else f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"
