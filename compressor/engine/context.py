"""What a method's `apply(cfg, ctx)` sees: one surface, whether the stage runs once on the whole model
(StageContext) or once per decoder layer on calibration data (compressor.engine.sequential.LayerContext).

    ctx.targets()                 {qualified name: nn.Linear} the stage acts on (targets, ignore, skip)
    ctx.override_for(name)        the config with that module's overrides, or None when it is skipped
    ctx.module(name)              the submodule by qualified name
    ctx.replace(name, module)     swap a module in (bytes before and after go to the report)
    ctx.record(name, **metrics)   report entries: sqnr_db / weight_sqnr_db / output_sqnr_db / probe_sqnr_db,
                                  bits, group_size, seconds, sparsity, anything else (kept as extra)
    ctx.warn(message)             a report warning for something not done as asked
    ctx.progress(done, total, message)   progress within the stage (StageContext) or the layer (LayerContext)

A StageContext also has `model`, and for configs with `needs_teacher` the frozen `teacher` and the
`calibration` tokens [n, L]; a LayerContext has `layer`, `prefix`, `index`, `n_layers` and the
calibration statistics (`hessians`, `input_activations`, `forward`).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from compressor.engine.report import CompressionReport, LayerReport, module_row

# Metric names methods may use for an SQNR, and what it was measured on.
SQNR_KEYS = {"sqnr_db": None, "weight_sqnr_db": "weights", "probe_sqnr_db": "probe",
             "output_sqnr_db": "calibration"}
_ROW_FIELDS = ("bits", "group_size", "seconds", "sparsity")


class MethodContext(Protocol):
    """The surface every method may use (see the module docstring)."""

    cfg: Any

    def targets(self) -> dict[str, nn.Linear]: ...
    def override_for(self, name: str) -> Any: ...
    def module(self, name: str) -> nn.Module: ...
    def replace(self, name: str, module: nn.Module) -> None: ...
    def record(self, name: str, **metrics: Any) -> None: ...
    def warn(self, message: str) -> None: ...
    def progress(self, done: float, total: float, message: str = "") -> None: ...


class StageContext:
    """A stage's view of the whole model; calibration-free methods get it as `ctx`, and LayerContext
    forwards its replace/record/warn here, so one stage's report rows are kept in one place."""

    def __init__(self, model: nn.Module, cfg, spec, index: int, report: CompressionReport, emit, *,
                 teacher: nn.Module | None = None, calibration: torch.Tensor | None = None):
        self.model, self.cfg, self.spec, self.index = model, cfg, spec, index
        self.teacher, self.calibration = teacher, calibration
        self._report, self._emit = report, emit
        self._rows: dict[str, LayerReport] = {}

    def targets(self) -> dict[str, nn.Linear]:
        return self.cfg.resolve(self.model)

    def override_for(self, name: str):
        return self.cfg.override_for(name)

    def module(self, name: str) -> nn.Module:
        return self.model.get_submodule(name)

    def replace(self, name: str, module: nn.Module) -> None:
        parent_name, _, child = name.rpartition(".")
        parent = self.model.get_submodule(parent_name)
        old = getattr(parent, child)
        row = module_row(name, self.index, self.spec.name, old, module)
        if name in self._rows:  # replaced twice in one stage: keep the first bytes_before
            row.bytes_before = self._rows[name].bytes_before
            row.extra = self._rows[name].extra
        setattr(parent, child, module)
        self._rows[name] = row
        if name not in [r.name for r in self._report.layers if r.stage == self.index]:
            self._report.layers.append(row)
        else:
            self._report.layers = [row if (r.name == name and r.stage == self.index) else r
                                   for r in self._report.layers]

    def record(self, name: str, **metrics: Any) -> None:
        row = self._rows.get(name)
        if row is None:  # metrics for a module modified in place
            row = LayerReport(name=name, stage=self.index, method=self.spec.name)
            self._rows[name] = row
            self._report.layers.append(row)
        for key, value in metrics.items():
            if key in SQNR_KEYS:
                row.sqnr_db = None if value is None else float(value)
                row.sqnr_basis = SQNR_KEYS[key] or metrics.get("sqnr_basis") or row.sqnr_basis or "weights"
            elif key in _ROW_FIELDS:
                setattr(row, key, value)
            elif key != "sqnr_basis":
                row.extra[key] = value

    def warn(self, message: str) -> None:
        """A report warning for something the stage did not do as asked (shown with the run)."""
        text = f"stage {self.index} ({self.spec.name}): {message}"
        if text not in self._report.warnings:
            self._report.warnings.append(text)

    def progress(self, done: float, total: float, message: str = "") -> None:
        self._emit(self.index, done / total if total else 1.0, message, done, total)

    @property
    def n_modules(self) -> int:
        return len(self._rows)
