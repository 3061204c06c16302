"""The error types users meet. Each message names the bad value and what would work."""

from __future__ import annotations


class LabError(Exception):
    """Base class: an error whose message is written for the person who caused it."""


class RecipeError(LabError, ValueError):
    """A recipe, stage config or override that cannot work: names field, value and the fix."""

    def __init__(self, field: str, value: object, hint: str, stage: str | None = None):
        self.field, self.value, self.hint, self.stage = field, value, hint, stage
        where = f"stage '{stage}': " if stage else ""
        super().__init__(f"{where}{field}={value!r} is not valid: {hint}")


class ModelLoadError(LabError):
    """A model spec that cannot be loaded (unknown, offline, unsafe, too large)."""


class UnsupportedOnDevice(LabError):
    """A method or kernel that has no implementation on the current device; says what would work."""
