"""The settings panel: the model, the recipe (a preset, the stage builder or YAML), the hardware profile,
the evaluation settings, and the run and cancel buttons with the run's progress.

Its own events keep the recipe editor in step (presets, stages added, uploads, downloads) and check a
recipe (/check_recipe, public). Running is ui.run's.
"""

from __future__ import annotations

import html
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from compressor.engine.fields import method_forms
from compressor.errors import LabError
from compressor.measure.hardware import THIS_MACHINE, list_profiles
from compressor.models.loading import HUB_ID, hub_reachable
from ui.forms import stage_form
from ui.recipes import (
    DEFAULT_PRESET,
    parse_recipe_text,
    preset_choices,
    recipe_from_text,
    recipe_yaml,
    stages_of,
    with_stage,
)
from ui.request import EVAL_FIELDS, eval_default

DEMO_CHOICE = ("Bundled demo model: lab-llama-7m (offline)", "demo")
# Small hub models for people online; the page says they need internet. Any other hub id or local
# folder can be typed into the same box.
CURATED_HUB = [
    "HuggingFaceTB/SmolLM2-135M",
    "HuggingFaceTB/SmolLM2-360M",
    "Qwen/Qwen2.5-0.5B",
    "EleutherAI/pythia-160m",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
]
MAX_RECIPE_BYTES = 200_000


@dataclass
class SettingsPanel:
    model: gr.Dropdown
    recipe: gr.Code
    hardware: gr.Dropdown
    eval_inputs: list[gr.Slider]
    run: gr.Button
    cancel: gr.Button
    progress: gr.HTML
    status: gr.Markdown


def progress_html(fraction: float | None, text: str, state: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction or 0.0)) * 100
    return (f'<div class="lab-progress {state}" role="progressbar" aria-valuenow="{pct:.0f}" '
            f'aria-valuemin="0" aria-valuemax="100"><div class="lab-bar" style="width:{pct:.1f}%"></div></div>'
            f'<div class="lab-progress-text">{html.escape(text)}</div>')


def hardware_choices() -> list[tuple[str, str]]:
    """(label, value) pairs of the hardware profiles; "this machine" (measured) first."""
    return [("This machine (measured here)", THIS_MACHINE)] + [
        (f"{p.name} (projection)", p.id) for p in list_profiles() if p.id != THIS_MACHINE]


def model_note(spec: str) -> str:
    """What running on `spec` needs: the demo is offline, a hub id needs internet, a folder safetensors."""
    spec = (spec or "").strip()
    if spec == "demo":
        return "Bundled model, offline. A run on it takes about a minute on 2 CPU cores."
    if not spec:
        return "Pick a model."
    if spec.startswith(("/", ".", "~")):
        return f"Local folder `{spec}`: it must hold a model saved with save_pretrained (safetensors)."
    if HUB_ID.match(spec):
        if not hub_reachable(timeout=1.5):
            return (f"`{spec}` needs internet, and the Hugging Face Hub is not reachable from this "
                    "machine. Use the demo model or a local folder.")
        return f"`{spec}` is downloaded from the Hugging Face Hub on the first run (needs internet)."
    return f"`{spec}` is neither 'demo', a hub id like org/name, nor a local folder path."


def check_recipe_text(text: str) -> str:
    """/check_recipe: "Recipe is valid: N stage(s)." or the problem, named by the engine."""
    try:
        recipe = recipe_from_text(text)
    except LabError as e:
        return f"**Recipe problem:** {e}"
    return f"Recipe is valid: {len(recipe.stages)} stage(s)."


def recipe_file(text: str) -> str:
    """The editor's text as a .yaml file to download, named after the recipe when it has a name."""
    name = "recipe"
    try:
        parsed = parse_recipe_text(text)
        if isinstance(parsed, dict) and parsed.get("name"):
            name = re.sub(r"[^\w.+-]", "_", str(parsed["name"]))[:60]
    except LabError:
        pass
    path = Path(tempfile.mkdtemp(prefix="lab-recipe-")) / f"{name}.yaml"
    path.write_text(text or "", encoding="utf-8")
    return str(path)


def _recipe_builder(demo: gr.Blocks, recipe: gr.Code, recipe_status: gr.Markdown) -> None:
    """Preset, stage builder and YAML tabs; each writes into the recipe editor."""
    presets = preset_choices()
    methods = method_forms()  # every registered method; a broken method file raises here, at start-up
    names = list(methods)
    with gr.Tabs():
        with gr.Tab("Preset"):
            preset = gr.Dropdown(presets, value=DEFAULT_PRESET, label="Preset recipe", elem_id="lab-preset")
        with gr.Tab("Stage builder"):
            method = gr.Dropdown(names, value=names[0], label="Method", elem_id="lab-method")
            method_help = gr.Markdown(elem_classes="lab-note")
            groups, forms = {}, {}
            for name in names:
                with gr.Group(visible=(name == names[0])) as groups[name]:
                    forms[name] = stage_form(methods[name])
            with gr.Row():
                add_stage = gr.Button("Add stage to recipe", variant="secondary", size="sm")
                clear_stages = gr.Button("Start a new recipe", size="sm")
        with gr.Tab("YAML"):
            gr.Markdown("The recipe that runs. Edit it here, or upload a .yaml file.", elem_classes="lab-note")
            with gr.Row():
                upload = gr.UploadButton("Upload YAML", file_types=[".yaml", ".yml", ".json"], size="sm")
                download = gr.DownloadButton("Download YAML", size="sm")
                check = gr.Button("Check recipe", size="sm")

    def on_preset(name: str):
        if not name:
            return gr.update(), ""
        return recipe_yaml(name), f"Preset **{name}** loaded into the recipe editor."

    preset.input(on_preset, preset, [recipe, recipe_status], api_visibility="private")

    def on_method(name: str):
        return [forms[name].help] + [gr.update(visible=(n == name)) for n in names]

    method_outputs = [method_help] + [groups[n] for n in names]
    method.change(on_method, method, method_outputs, api_visibility="private")
    demo.load(on_method, method, method_outputs, api_visibility="private")

    widgets = [w for n in names for w in forms[n].widgets]

    def on_add_stage(name: str, text: str, *values):
        if name not in forms:
            raise gr.Error(f"Pick a method first (known: {', '.join(names)}).")
        offset = sum(len(forms[n].widgets) for n in names[: names.index(name)])
        try:
            stage = forms[name].stage(list(values[offset : offset + len(forms[name].widgets)]))
            new_text = with_stage(text, stage)
            recipe_from_text(new_text)
        except LabError as e:
            raise gr.Error(str(e), print_exception=False) from None
        n = len(stages_of(parse_recipe_text(new_text)))
        return new_text, f"Added a **{name}** stage. The recipe now has {n} stage(s)."

    add_stage.click(on_add_stage, [method, recipe] + widgets, [recipe, recipe_status], api_visibility="private")
    clear_stages.click(lambda: ("stages: []\n", "Empty recipe: add stages with the builder."),
                       None, [recipe, recipe_status], api_visibility="private")

    def on_upload(file):
        if file is None:
            return gr.update(), ""
        path = Path(file if isinstance(file, str) else file.name)
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise gr.Error(f"{path.name} is {path.stat().st_size:,} bytes; a recipe is at most 200 kB.")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise gr.Error(f"{path.name} is not a UTF-8 text file.", print_exception=False) from None
        try:
            recipe_from_text(text)
        except LabError as e:
            return text, f"Uploaded, but: {e}"
        return text, f"Uploaded **{path.name}**: recipe is valid."

    upload.upload(on_upload, upload, [recipe, recipe_status], api_visibility="private")
    recipe.change(recipe_file, recipe, download, show_progress="hidden", api_visibility="private")
    demo.load(recipe_file, recipe, download, api_visibility="private")
    check.click(check_recipe_text, recipe, recipe_status, api_name="check_recipe")


def settings_panel(demo: gr.Blocks) -> SettingsPanel:
    """The settings column's contents; call inside it."""
    hw = hardware_choices()
    model = gr.Dropdown([DEMO_CHOICE] + [(f"{m} (needs internet)", m) for m in CURATED_HUB], value="demo",
                        allow_custom_value=True, label="Model", elem_id="lab-model",
                        info="The demo model works offline. Type any hub id (org/name) or a local folder to use "
                        "another model.")
    note = gr.Markdown(elem_classes="lab-note")
    model.change(model_note, model, note, show_progress="hidden", api_visibility="private")
    recipe_status = gr.Markdown(elem_classes="lab-note", render=False)
    recipe = gr.Code(recipe_yaml(DEFAULT_PRESET), language="yaml", label="Recipe (YAML)", lines=8,
                     elem_id="lab-recipe", render=False)
    _recipe_builder(demo, recipe, recipe_status)
    recipe.render()
    recipe_status.render()
    hardware = gr.Dropdown(hw, value=hw[0][1], label="Hardware profile", elem_id="lab-hardware",
                           info="Other profiles are projected from a roofline model.")
    with gr.Accordion("Evaluation settings", open=False):
        eval_inputs = [gr.Slider(lo, hi, value=eval_default(name), step=1, label=label)
                       for name, (label, lo, hi) in EVAL_FIELDS.items()]
    with gr.Row():
        run = gr.Button("Run comparison", variant="primary", elem_id="lab-run")
        cancel = gr.Button("Cancel", variant="stop", elem_id="lab-cancel")
    progress = gr.HTML(progress_html(0, "Ready. Pick a preset and press Run.", "idle"), elem_id="lab-progress")
    status = gr.Markdown(elem_id="lab-status")
    return SettingsPanel(model, recipe, hardware, eval_inputs, run, cancel, progress, status)
