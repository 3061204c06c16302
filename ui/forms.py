"""A stage form per registered method, built from the engine's field specs (compressor.engine.fields):
one widget per field, its docstring help as info, its default as value. A new method shows up in the
stage builder without a change here."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from compressor.engine.fields import FieldSpec, MethodForm, stage_from_values


def field_widget(spec: FieldSpec) -> gr.components.Component:
    """The widget that edits one field; call inside a Blocks context."""
    info = (spec.help + " Leave empty for none.").strip() if spec.optional else spec.help
    if spec.kind == "choice":
        return gr.Dropdown(choices=list(spec.choices), value=spec.initial, label=spec.name, info=info)
    if spec.kind == "bool":
        return gr.Checkbox(value=bool(spec.initial), label=spec.name, info=info)
    if spec.kind in ("int", "float"):
        return gr.Number(value=spec.initial, precision=0 if spec.kind == "int" else None, label=spec.name, info=info)
    if spec.kind == "str":
        return gr.Textbox(value=spec.initial, label=spec.name, info=info, max_lines=1)
    return gr.Textbox(value=spec.initial, label=f"{spec.name} (YAML)", info=info, max_lines=3)  # lists, dicts


@dataclass
class StageForm:
    """One method's form: its description and a widget per field."""

    method: MethodForm
    widgets: list[gr.components.Component]

    @property
    def help(self) -> str:
        m = self.method
        cal = " Needs calibration data (runs layer by layer)." if m.needs_calibration else ""
        teacher = " Learns from the original model (a teacher copy is kept in memory)." if m.needs_teacher else ""
        return f"**{m.name}** ({m.kind}).{cal}{teacher} {m.summary}"

    def stage(self, values: list) -> dict:
        """The recipe stage of the widgets' values; a bad value raises the engine's RecipeError naming it."""
        return stage_from_values(self.method.name, dict(zip((s.name for s in self.method.fields), values,
                                                            strict=True)))


def stage_form(method: MethodForm) -> StageForm:
    """A method's form; call inside a Blocks context."""
    return StageForm(method, [field_widget(s) for s in method.fields])
