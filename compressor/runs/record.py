"""Typed records that survive JSON: the base of every type in the run contract (compressor/runs/contract.py).

A `Record` is a dataclass with `to_dict()` (plain JSON values) and `from_dict()` (rebuilt by its type
hints: nested records, their lists and dicts, and any type with its own `from_dict`, e.g. a Recipe).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing

from compressor.errors import LabError


def to_json(obj: object) -> object:
    """Plain JSON values of a contract object: dataclasses by field (or their own `to_dict`), tuples as
    lists, NaN and infinities as None so the JSON is strict."""
    if hasattr(obj, "to_dict") and not isinstance(obj, Record):
        return to_json(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_json(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def build(tp: object, value: object) -> object:
    """`value` (parsed JSON) as type `tp`: records, their lists and dicts, types with a `from_dict`
    (Recipe, EvalSettings, CompressionReport, HardwareProfile, ModelFacts), or plain values."""
    if value is None:
        return None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return build(inner[0], value) if len(inner) == 1 else value
    if origin is list:
        return [build(args[0], v) for v in value]
    if origin is tuple:
        return tuple(value)
    if origin is dict:
        return {k: build(args[1], v) for k, v in value.items()}
    if isinstance(tp, type) and hasattr(tp, "from_dict") and not isinstance(value, tp):
        return tp.from_dict(value)
    return value


class Record:
    """A contract dataclass: `to_dict()` for JSON, `from_dict()` that ignores keys it does not know
    (a newer writer's additions) and leaves missing ones at their defaults."""

    def to_dict(self) -> dict:
        return {f.name: to_json(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise LabError(f"{cls.__name__} must be a mapping, got {type(d).__name__}")
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: build(hints[k], v) for k, v in d.items() if k in known})
