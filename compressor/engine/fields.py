"""Field specs: what a form needs to edit a method's config, read from the config dataclass alone.

A UI builds one widget per FieldSpec and never looks inside the engine:

    for form in method_forms().values():          # {method name: MethodForm}, every registered method
        for spec in form.fields:                   # FieldSpec: name, kind, default, help, choices, ...
            widget = {"bool": checkbox, "int": whole number, "float": number, "choice": dropdown(spec.choices),
                      "str": one-line text, "yaml": YAML text}[spec.kind](value=spec.initial, info=spec.help)
    stage = stage_from_values("gptq", {"bits": 4.0, "group_size": 128.0, "ignore": "[lm_head]"})

kind comes from the field's annotation: bool, int, float, str, `Literal[...]` -> "choice" (its values
are the choices), anything else (lists, dicts, unions) -> "yaml". `X | None` is `optional` (an empty
widget leaves the field out). help is the field's entry in the `Args:` section of the config's
docstring or, when the class does not document it itself, of its nearest base that does.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from compressor.errors import RecipeError

KINDS = ("bool", "int", "float", "choice", "str", "yaml")
# Module selection, shared by every stage (StageConfig): forms show these after the method's own fields.
SELECTION_FIELDS = ("targets", "ignore", "overrides")
# "name: text" or "a, b, c: text" (or "a / b: text") at the section's indent; "name (type): text" too.
_ENTRY = re.compile(r"^(\w+(?:\s*[,/]\s*\w+)*)\s*(?:\([^)]*\))?:\s*(.*)$")
# Entries that only point elsewhere ("see SparsityConfig", "as for svd"): a base's own words are better help.
_CROSS_REFERENCE = re.compile(r"^(see|as for|as in)\b", re.IGNORECASE)


@dataclass(frozen=True)
class FieldSpec:
    """One editable field of a stage config.

    Args:
        name: the field name (the recipe key).
        kind: one of KINDS: which widget edits it.
        default: the config's default value (a Python value; a list for "yaml" fields).
        help: the field's `Args:` docstring text.
        choices: the allowed values of a "choice" field; () otherwise.
        optional: None is allowed: an empty widget leaves the field out of the stage.
        selection: one of SELECTION_FIELDS (module selection every stage shares).
    """

    name: str
    kind: str
    default: Any
    help: str
    choices: tuple = ()
    optional: bool = False
    selection: bool = False

    @property
    def initial(self) -> Any:
        """The widget's starting value: YAML text for "yaml" fields, "" for an empty "str" field."""
        if self.kind == "yaml":
            return "" if self.default is None else yaml.safe_dump(self.default, default_flow_style=True).strip()
        if self.kind == "str":
            return self.default or ""
        return self.default

    def parse(self, value: Any, method: str = "") -> Any:
        """A widget's value as the config value; None means "leave the field out" (the config default).

        Raises RecipeError naming the field for a fractional "int", a non-number, or invalid YAML.
        """
        if value is None:
            return None
        blank = isinstance(value, str) and not value.strip()
        if blank and (self.kind == "yaml" or (self.kind == "str" and self.optional)):
            return None
        stage = method or None
        if self.kind in ("int", "float"):
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise RecipeError(self.name, value, "give a number", stage) from None
            if self.kind == "float":
                return number
            if number != int(number):
                raise RecipeError(self.name, value, "use a whole number", stage)
            return int(number)
        if self.kind == "yaml" and isinstance(value, str):
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise RecipeError(self.name, value, f"not valid YAML ({str(e).splitlines()[0]})", stage) from None
        return value


@dataclass(frozen=True)
class MethodForm:
    """Everything a form shows about one registered method."""

    name: str
    kind: str
    needs_calibration: bool
    needs_teacher: bool
    summary: str
    fields: list[FieldSpec]


def parse_args_doc(doc: str | None) -> dict[str, str]:
    """The `Args:` section of a Google-style docstring -> {name: help} (continuation lines joined).

    An entry naming several fields ("targets, ignore, overrides: module selection") gives each the text.
    """
    return {name: text for name, (text, _) in _args_entries(doc).items()}


def _args_entries(doc: str | None) -> dict[str, tuple[str, bool]]:
    """{name: (help, shared)}: shared is True when the entry names several fields at once."""
    lines = (doc or "").expandtabs().splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == "Args:"), None)
    if start is None:
        return {}
    entries: list[tuple[list[str], list[str]]] = []
    indent = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        width = len(line) - len(line.lstrip())
        indent = width if indent is None else indent
        if width < indent:
            break
        m = _ENTRY.match(line.strip()) if width == indent else None
        if m:
            entries.append(([n.strip() for n in re.split(r"[,/]", m[1])], [m[2].strip()]))
        elif entries:
            entries[-1][1].append(line.strip())
    return {name: (" ".join(t for t in text if t), len(names) > 1) for names, text in entries for name in names}


def field_help(config_cls: type) -> dict[str, str]:
    """{field: help} over the class and its bases: the nearest class's own words, where an entry that
    only points elsewhere ("see SparsityConfig") or speaks for several fields yields to a base's entry
    for that one field."""
    ranked: dict[str, tuple[tuple[bool, bool, int], str]] = {}
    for depth, cls in enumerate(config_cls.__mro__):
        for name, (text, shared) in _args_entries(cls.__dict__.get("__doc__")).items():
            rank = (bool(_CROSS_REFERENCE.match(text)), shared, depth)
            if text and (name not in ranked or rank < ranked[name][0]):
                ranked[name] = (rank, text)
    return {name: text for name, (_, text) in ranked.items()}


def _unwrap_optional(tp) -> tuple[Any, bool]:
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else object), True
    return tp, False


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def config_fields(config_cls: type) -> list[FieldSpec]:
    """One FieldSpec per init field of a config dataclass: the method's own fields first, then the
    module selection. An annotation that does not resolve is a broken method file and raises here."""
    hints = typing.get_type_hints(config_cls)
    help_text = field_help(config_cls)
    out = []
    for f in sorted(dataclasses.fields(config_cls), key=lambda f: f.name in SELECTION_FIELDS):
        if not f.init or f.name.startswith("_"):
            continue
        tp, optional = _unwrap_optional(hints.get(f.name, str))
        choices: tuple = ()
        if typing.get_origin(tp) is typing.Literal:
            kind, choices = "choice", typing.get_args(tp)
        else:
            kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(tp, "yaml")
        out.append(FieldSpec(f.name, kind, _default(f), help_text.get(f.name, ""), choices, optional,
                             f.name in SELECTION_FIELDS))
    return out


def summary(config_cls: type) -> str:
    """The first paragraph of the config's docstring, on one line."""
    first = (config_cls.__doc__ or "").strip().split("\n\n")[0]
    return " ".join(first.split())


def method_forms() -> dict[str, MethodForm]:
    """{method name: MethodForm} of every registered method, in name order."""
    from compressor.engine.registry import load_methods

    forms = {}
    for name, spec in sorted(load_methods().items()):
        cls = spec.config_cls
        forms[name] = MethodForm(name, cls.kind, cls.needs_calibration, cls.needs_teacher, summary(cls),
                                 config_fields(cls))
    return forms


def stage_from_values(method: str, values: Mapping[str, Any]) -> dict:
    """A recipe stage dict {"method": method, field: value, ...} from widget values by field name.

    Empty values are left out (the config's default applies); RecipeError names a bad value or an
    unknown field. The stage is not validated here: `load_recipe` does that.
    """
    from compressor.engine.registry import get_method

    specs = {s.name: s for s in config_fields(get_method(method).config_cls)}
    stage: dict = {"method": method}
    for name, value in values.items():
        if name not in specs:
            raise RecipeError(name, value, f"{method} has the fields {', '.join(specs)}", method)
        parsed = specs[name].parse(value, method)
        if parsed is not None:
            stage[name] = parsed
    return stage
