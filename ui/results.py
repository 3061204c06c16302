"""The results panel: metric cards and generations of the run on show, and the prompt box that puts one
free prompt to both of its models (a job of its own, `compressor.runs.ask:answer`)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.runs.ask import MAX_PROMPT_CHARS
from compressor.runs.contract import Report
from compressor.runs.store import SUCCEEDED
from ui.backend import ASK_TIMEOUT_S
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

    @property
    def outputs(self) -> list:
        return [self.cards, self.samples]

    @staticmethod
    def render(report: Report, pending: bool = False) -> list:
        return [metric_cards_html(report, pending), samples_html(report, pending)]


def results_panel(manager, ask_manager, run_id: gr.State, visitor: gr.State) -> ResultsPanel:
    """The "Result" tab's contents; call inside it. `ask_manager` (None: prompt box off) answers the
    prompt box with the baseline and the run's compressed model (the visitor's own run, or a shared one)."""
    cards = gr.HTML(EMPTY, elem_id="lab-cards")
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
        text = text if isinstance(text, str) else ""
        if not text.strip():  # refused here too, so no worker starts for nothing
            raise LabError("the prompt is empty: type a few words (e.g. 27+58=) for both models to continue")
        if len(text) > MAX_PROMPT_CHARS:
            raise LabError(f"the prompt has {len(text):,} characters; the limit is {MAX_PROMPT_CHARS:,}: shorten it")
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
        try:
            done = ask_manager.wait(ask_id, timeout=ASK_TIMEOUT_S)
        except TimeoutError:
            ask_manager.cancel(ask_id)
            raise LabError(f"no answer within {ASK_TIMEOUT_S} s; try a shorter prompt") from None
        if done.status != SUCCEEDED:
            raise LabError(f"could not answer: {done.error}")
        return done.report["baseline"], done.report["compressed"]  # compressor.runs.ask.answer's result

    ask.click(ask_clicked, [run_id, prompt, visitor], [baseline, compressed], api_name="ask")
    prompt.submit(ask_clicked, [run_id, prompt, visitor], [baseline, compressed], api_visibility="private")
    return ResultsPanel(cards, samples)
