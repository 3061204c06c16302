"""The results panel: metric cards and generations of the run on show, and the prompt box that puts one
free prompt to both of its models (a job of its own, `compressor.runs.ask:answer`)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.runs.contract import Report
from compressor.runs.limits import MAX_PROMPT_CHARS, check_prompt
from compressor.runs.store import SUCCEEDED
from ui.cards import metric_cards_html, samples_html
from ui.messages import guarded
from ui.records import visible_run
from ui.visitors import owner_of

ASK_NEW_TOKENS = 32
EMPTY = '<div class="lab-empty">Results appear here after a run.</div>'


@dataclass
class ResultsPanel:
    cards: gr.HTML
    samples: gr.HTML
    share: gr.Checkbox  # the run on show in the shared gallery (only its owner can change it)
    share_state: object  # (run_id, visitor, request) -> the checkbox's update for the run on show

    @property
    def outputs(self) -> list:
        return [self.cards, self.samples]

    @staticmethod
    def render(report: Report) -> list:
        return [metric_cards_html(report), samples_html(report)]


def results_panel(manager, ask_manager, run_id: gr.State, visitor: gr.State) -> ResultsPanel:
    """The "Result" tab's contents; call inside it. `ask_manager` (None: prompt box off) answers the
    prompt box with the baseline and the run's compressed model (the visitor's own run, or a shared one)."""
    cards = gr.HTML(EMPTY, elem_id="lab-cards")
    share = gr.Checkbox(False, label="Show this run in the shared gallery (everyone can open it then)",
                        interactive=False, elem_id="lab-share")
    samples = gr.HTML(elem_id="lab-samples-box")
    with gr.Group():
        prompt = gr.Textbox(label="Your prompt: both models answer it", placeholder="27+58=", lines=2, max_lines=6,
                            max_length=MAX_PROMPT_CHARS, elem_id="lab-prompt")
        ask = gr.Button("Ask both models", size="sm")
        with gr.Row():
            baseline = gr.Textbox(label="Baseline", interactive=False, lines=3)
            compressed = gr.Textbox(label="Compressed", interactive=False, lines=3)

    @guarded
    def ask_clicked(rid: str | None, text: str | None, vid: str | None, request: gr.Request = None):
        if ask_manager is None:
            raise LabError("free prompts are off in this app instance")
        text = check_prompt(text)  # empty, not text, too long: refused before a worker starts
        if not rid:
            raise LabError("run a comparison first (or open a run in History): the prompt goes to its compressed "
                           "model")
        owner = owner_of(vid, request)
        run = visible_run(manager, rid, owner)
        if run.status != SUCCEEDED:
            raise LabError(f"run {rid} is {run.status}: only a finished run can answer")
        payload = {"model": run.model_spec or "demo", "recipe": run.recipe, "artifact": run.artifact_path,
                   "prompt": text, "max_new_tokens": ASK_NEW_TOKENS}
        ask_id = ask_manager.submit(payload, owner=owner)
        limit = ask_manager.time_limit_s or 180
        try:
            done = ask_manager.wait(ask_id, timeout=limit + 30)  # the manager stops it at its limit
        except TimeoutError:
            ask_manager.cancel(ask_id)
            raise LabError(f"no answer within {limit:.0f} s; try a shorter prompt") from None
        if done.status != SUCCEEDED:
            raise LabError(f"could not answer: {done.error}")
        return done.report["baseline"], done.report["compressed"]  # compressor.runs.ask.answer's result

    ask.click(ask_clicked, [run_id, prompt, visitor], [baseline, compressed], api_name="ask")
    prompt.submit(ask_clicked, [run_id, prompt, visitor], [baseline, compressed], api_visibility="private")

    @guarded
    def share_state(rid: str | None, vid: str | None, request: gr.Request = None):
        """The checkbox for the run on show: ticked when shared, changeable by its owner once it succeeded."""
        owner = owner_of(vid, request)
        run = manager.get_run(rid, viewer=owner) if isinstance(rid, str) and rid else None
        if run is None:
            return gr.update(value=False, interactive=False)
        return gr.update(value=run.shared, interactive=run.owner == owner and run.status == SUCCEEDED,
                         info=None if run.owner == owner else "Shared by another visitor.")

    @guarded
    def on_share(rid: str | None, shared: bool, vid: str | None, request: gr.Request = None):
        if not rid:
            raise LabError("no run is on show: run a comparison or open one of yours, then share it")
        manager.set_shared(rid, owner_of(vid, request), bool(shared))  # only the owner, only a succeeded run
        word = "is in" if shared else "left"
        gr.Info(f"Run {rid} {word} the shared gallery.")
        return gr.update(value=bool(shared))

    share.input(on_share, [run_id, share, visitor], share, api_name="share")
    return ResultsPanel(cards, samples, share, share_state)
