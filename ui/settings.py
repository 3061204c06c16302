"""The settings panel: the model, the recipe (a preset, the stage builder or YAML), the hardware profile,
the evaluation settings, and the run and cancel buttons with the run's progress.

Its own events keep the recipe editor in step (presets, stages added, uploads, downloads) and check a
recipe (/check_recipe, public). Running is ui.run's.
"""

from __future__ import annotations

import hashlib
import html
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from compressor.engine.fields import method_forms
from compressor.errors import LabError
from compressor.measure.hardware import THIS_MACHINE, list_profiles
from compressor.measure.settings import DEFAULT_PRESET as DEFAULT_EVAL
from compressor.measure.settings import PRESETS
from compressor.models import catalog
from compressor.models.loading import HUB_ID, hub_reachable
from compressor.models.preflight import preflight
from compressor.runs.contract import PROJECTION_CONTEXT
from compressor.runs.limits import PROJECTION_BATCHES, PROJECTION_CONTEXTS, UploadQuota, check_upload
from ui.files import AppFiles
from ui.forms import stage_form
from ui.inputs import checked
from ui.messages import guarded, public
from ui.names import model_name
from ui.recipes import (
    DEFAULT_PRESET,
    parse_recipe_text,
    preset_choices,
    recipe_from_text,
    recipe_yaml,
    stages_of,
    with_stage,
)
from ui.request import EVAL_FIELDS, EVAL_PRESETS, eval_default
from ui.visitors import owner_of

# Small hub models for people online; the page says they need internet. Any other hub id or local
# folder can be typed into the same box.
CURATED_HUB = [
    "HuggingFaceTB/SmolLM2-135M",
    "HuggingFaceTB/SmolLM2-360M",
    "Qwen/Qwen2.5-0.5B",
    "EleutherAI/pythia-160m",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
]


@dataclass
class SettingsPanel:
    model: gr.Dropdown
    recipe: gr.Code
    hardware: gr.Dropdown
    evaluation: gr.Radio
    eval_inputs: list[gr.Slider]
    projection_context: gr.Number
    projection_batch: gr.Number
    run: gr.Button
    cancel: gr.Button
    progress: gr.HTML
    status: gr.Markdown

    @property
    def restorable(self) -> list:
        """The inputs that opening a past run sets back to what it ran with (`restore_values`)."""
        return ([self.model, self.recipe, self.hardware, self.evaluation] + self.eval_inputs
                + [self.projection_context, self.projection_batch])


def restore_values(run) -> list:
    """The settings a stored run ran with, in `SettingsPanel.restorable` order; unchanged inputs (gr.update())
    for a run whose request no longer reads (an older payload)."""
    from compressor.runs.contract import RunRequest

    try:
        req = RunRequest.from_dict(run.payload or {})
    except (LabError, TypeError, ValueError):
        return [gr.update()] * (6 + len(EVAL_FIELDS))
    evals = [getattr(req.eval, name) for name in EVAL_FIELDS]
    preset = req.eval.preset if req.eval.preset in PRESETS else gr.update()  # "custom": the sliders say it
    return [req.model, req.recipe.to_yaml(), req.hardware, preset, *evals, req.projection_context,
            req.projection_batch]


def progress_html(fraction: float | None, text: str, state: str = "running") -> str:
    pct = max(0.0, min(1.0, fraction or 0.0)) * 100
    return (f'<div class="lab-progress {state}" role="progressbar" aria-valuenow="{pct:.0f}" '
            f'aria-valuemin="0" aria-valuemax="100"><div class="lab-bar" style="width:{pct:.1f}%"></div></div>'
            f'<div class="lab-progress-text">{html.escape(text)}</div>')


def hardware_choices() -> list[tuple[str, str]]:
    """(label, value) pairs of the hardware profiles; "this machine" (measured) first."""
    return [("This machine (measured here)", THIS_MACHINE)] + [
        (f"{p.name} (projection)", p.id) for p in list_profiles() if p.id != THIS_MACHINE]


def model_choices() -> list[tuple[str, str]]:
    """(label, spec): the catalog's installed models first (the first is the default), the demo, the catalog's
    models that are not installed (saying how to install them), then hub ids that need internet."""
    installed = catalog.choices()
    rest = [name for name in catalog.CATALOG if name not in installed]
    return ([(catalog.describe(name), name) for name in installed]
            + [(f"{catalog.describe(name)} (not installed)", name) for name in rest]
            + [(f"{m} (needs internet)", m) for m in CURATED_HUB])


def model_note(spec: str | None) -> str:
    """What running on `spec` needs: catalog models and the demo are offline, a hub id needs internet, a
    folder safetensors."""
    spec = spec.strip() if isinstance(spec, str) else ""
    entry = catalog.get(spec)
    if spec == catalog.DEMO:
        return "Bundled 7M-parameter model, offline: the quickest (a quick run takes well under a minute)."
    if entry is not None:
        if not catalog.installed(spec):
            return catalog.missing_message(entry)
        return (f"{entry.title} ({entry.params} parameters, {entry.license}), offline. Its first run converts the "
                "GGUF file once; a quick run then takes about a minute or two on 2 CPU cores.")
    if not spec:
        return "Pick a model."
    if spec.startswith(("/", ".", "~")):
        return ("A local folder: it must hold a model saved with save_pretrained (safetensors), under the allowed "
                "folders.")
    if HUB_ID.match(spec):
        if not hub_reachable(timeout=1.5):
            return (f"`{spec}` needs internet, and the Hugging Face Hub is not reachable from this "
                    "machine. Use a model of the list above or a local folder.")
        return f"`{spec}` is downloaded from the Hugging Face Hub on the first run (needs internet)."
    return f"`{spec[:80]}` is neither a model of the list, a hub id like org/name, nor a local folder path."


def check_recipe_text(text: str | None, model: str | None = None) -> str:
    """/check_recipe: the recipe checked against the model's shapes from its config alone, no weights loaded
    (compressor.models.preflight): "Recipe is valid for <model>: ..." with what it will do otherwise than
    asked, or the problem, named by the engine."""
    if text is not None and not isinstance(text, str):
        return f"**Recipe problem:** the recipe must be text, got {type(text).__name__}"
    try:
        recipe = recipe_from_text(text)
    except LabError as e:
        return f"**Recipe problem:** {html.escape(public(e), quote=False)}"
    spec = model.strip() if isinstance(model, str) else ""
    n = f"{len(recipe.stages)} stage(s)"
    if not spec:
        return f"Recipe is valid: {n} (pick a model to check it against the model's shapes)."
    if HUB_ID.match(spec) and "/" in spec and not hub_reachable(timeout=1.5):
        return (f"Recipe is valid: {n}. Its fit to `{html.escape(spec[:80])}` is checked when a run starts "
                "(the hub is not reachable from here to read its config).")
    try:
        pre = preflight(spec, recipe)
    except LabError as e:
        return f"**Recipe problem on {html.escape(model_name(spec))}:** {html.escape(public(e), quote=False)}"
    modules = ", ".join(str(t) for t in pre.targets)
    out = f"Recipe is valid for **{html.escape(model_name(spec))}**: {n}, acting on {modules} module(s)."
    if pre.warnings:
        out += "\n\n" + "\n".join(f"- {html.escape(public(w), quote=False)}" for w in pre.warnings[:8])
    return out


class RecipeFiles:
    """The editor's text as a .yaml file to download, kept in one folder of this app: named by content, so
    the same text is one file, and only the newest KEPT files stay (a page load no longer leaves a folder).
    The folder is one of the app's files (ui.files), removed when the app stops."""

    KEPT = 256

    def __init__(self, files: AppFiles) -> None:
        self.files = files  # held: the folder lives as long as this does
        self.root = files.folder("recipes")

    def __call__(self, text: str | None) -> str:
        text = text if isinstance(text, str) else ""
        name = "recipe"
        try:
            parsed = parse_recipe_text(text)
            if isinstance(parsed, dict) and parsed.get("name"):
                name = re.sub(r"[^\w.+-]", "_", str(parsed["name"]))[:60]
        except LabError:
            pass
        folder = self.root / hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:20]
        path = folder / f"{name}.yaml"
        if not path.is_file():
            folder.mkdir(exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self._prune()
        return str(path)

    def _prune(self) -> None:
        folders = sorted(self.root.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in folders[: max(0, len(folders) - self.KEPT)]:
            shutil.rmtree(old, ignore_errors=True)


def read_upload(file: object, owner: str, quota: UploadQuota) -> tuple[str, str]:
    """(text, file name) of an uploaded recipe, within the size and the visitor's quota; the uploaded copy
    is removed once read. LabError naming the limit or the problem."""
    path = Path(file if isinstance(file, str) else getattr(file, "name", ""))
    if not path.name or not path.is_file():
        raise LabError("the upload did not arrive: upload the file again")
    try:
        check_upload(owner, path, quota)  # its size, and the visitor's quota (compressor.runs.limits)
        try:
            return path.read_text(encoding="utf-8"), path.name
        except UnicodeDecodeError:
            raise LabError(f"{path.name} is not a UTF-8 text file: save the recipe as UTF-8 YAML or JSON") from None
    finally:
        path.unlink(missing_ok=True)


def _recipe_builder(demo: gr.Blocks, recipe: gr.Code, recipe_status: gr.Markdown, visitor: gr.State,
                    app_files: AppFiles, beside_presets: Callable[[], object] | None) -> None:
    """Preset, stage builder and YAML tabs; each writes into the recipe editor."""
    files, quota = RecipeFiles(app_files), UploadQuota()
    presets = preset_choices()
    methods = method_forms()  # every registered method; a broken method file raises here, at start-up
    names = list(methods)
    with gr.Tabs():
        with gr.Tab("Preset"):
            preset = gr.Dropdown(presets, value=DEFAULT_PRESET, label="Preset recipe", elem_id="lab-preset")
            if beside_presets is not None:
                beside_presets()
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

    @guarded
    def on_upload(file, vid: str | None, request: gr.Request = None):
        if file is None:
            return gr.update(), ""
        text, name = read_upload(file, owner_of(vid, request), quota)
        try:
            recipe_from_text(text)
        except LabError as e:
            return text, f"Uploaded **{html.escape(name)}**, but: {html.escape(public(e), quote=False)}"
        return text, f"Uploaded **{html.escape(name)}**: recipe is valid."

    upload.upload(on_upload, [upload, visitor], [recipe, recipe_status], api_visibility="private")
    recipe.change(files, recipe, download, show_progress="hidden", api_visibility="private")
    demo.load(files, recipe, download, api_visibility="private")


def settings_panel(demo: gr.Blocks, visitor: gr.State, files: AppFiles,
                   beside_presets: Callable[..., object] | None = None) -> SettingsPanel:
    """The settings column's contents; call inside it. `files` is the app's folder for downloads (ui.files);
    `beside_presets(model, hardware, recipe, projection_context, projection_batch)`, when given, builds a
    panel under the preset picker (the page's "Fit to hardware")."""
    hw = hardware_choices()
    model = gr.Dropdown(model_choices(), value=catalog.default_model(), allow_custom_value=True, label="Model",
                        elem_id="lab-model", info="The listed models work offline. Type any hub id (org/name) or a "
                        "local folder to use another model.")
    note = gr.Markdown(model_note(catalog.default_model()), elem_classes="lab-note")
    model.change(guarded(model_note), model, note, show_progress="hidden", api_visibility="private")
    recipe_status = gr.Markdown(elem_classes="lab-note", render=False)
    recipe = gr.Code(recipe_yaml(DEFAULT_PRESET), language="yaml", label="Recipe (YAML)", lines=8,
                     elem_id="lab-recipe", render=False)
    # made before the recipe tabs (a panel beside the presets reads them), drawn below the recipe
    hardware = gr.Dropdown(hw, value=hw[0][1], label="Hardware profile", elem_id="lab-hardware", render=False,
                           info="Other profiles are projected from a roofline model. Changing it after a run "
                           "projects that run again at once (no new run).")
    projection_context = checked(gr.Number(PROJECTION_CONTEXT, precision=0, minimum=PROJECTION_CONTEXTS[0],
                                           maximum=PROJECTION_CONTEXTS[1], label="Projection context (tokens)",
                                           elem_id="lab-proj-context", min_width=120, render=False))
    projection_batch = checked(gr.Number(1, precision=0, minimum=PROJECTION_BATCHES[0],
                                         maximum=PROJECTION_BATCHES[1], label="Projection batch",
                                         elem_id="lab-proj-batch", min_width=120, render=False))
    beside = (lambda: beside_presets(model, hardware, recipe, projection_context, projection_batch)) \
        if beside_presets is not None else None
    _recipe_builder(demo, recipe, recipe_status, visitor, files, beside)
    recipe.render()
    check = gr.Button("Check recipe against the model", size="sm", elem_id="lab-check")
    recipe_status.render()
    check.click(guarded(check_recipe_text), [recipe, model], recipe_status, api_name="check_recipe")
    hardware.render()
    with gr.Row():
        projection_context.render()
        projection_batch.render()
    evaluation = gr.Radio(EVAL_PRESETS, value=DEFAULT_EVAL, label="Evaluation", elem_id="lab-evaluation",
                          info="Quick gives a first full result in seconds (one timed repeat: no spread); thorough "
                          "measures more tokens, problems and repeats for a report.")
    with gr.Accordion("Evaluation settings (the preset's values; change any)", open=False):
        eval_inputs = [checked(gr.Slider(lo, hi, value=eval_default(name), step=1, label=label))
                       for name, (label, lo, hi) in EVAL_FIELDS.items()]
    with gr.Row():
        run = gr.Button("Run comparison", variant="primary", elem_id="lab-run")
        cancel = gr.Button("Cancel", variant="stop", elem_id="lab-cancel")
    progress = gr.HTML(progress_html(0, "Ready. Pick a preset and press Run.", "idle"), elem_id="lab-progress")
    status = gr.Markdown(elem_id="lab-status")
    evaluation.input(lambda name: [eval_default(n, name) for n in EVAL_FIELDS], evaluation, eval_inputs,
                     api_visibility="private")
    return SettingsPanel(model, recipe, hardware, evaluation, eval_inputs, projection_context, projection_batch, run,
                         cancel, progress, status)
