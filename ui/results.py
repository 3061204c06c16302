"""The results panel: metric cards and generations of the run on show, and the prompt box that puts one
free prompt to both of its models (a job of its own, `compressor.runs.ask:answer`)."""

from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from compressor.errors import LabError
from compressor.runs.contract import Report
from compressor.runs.store import SUCCEEDED
from ui.backend import ASK_TIMEOUT_S
from ui.cards import metric_cards_html, samples_html

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
    def render(report: Report) -> list:
        return [metric_cards_html(report), samples_html(report)]


def results_panel(manager, ask_manager, run_id: gr.State) -> ResultsPanel:
    """The "Comparison" tab's contents; call inside it. `ask_manager` (None: prompt box off) answers the
    prompt box with the baseline and the run's compressed model."""
    cards = gr.HTML(EMPTY, elem_id="lab-cards")
    samples = gr.HTML(elem_id="lab-samples-box")
    with gr.Group():
        prompt = gr.Textbox(label="Your prompt: both models answer it", placeholder="27+58=", lines=2, max_lines=6,
                            elem_id="lab-prompt")
        ask = gr.Button("Ask both models", size="sm")
        with gr.Row():
            baseline = gr.Textbox(label="Baseline", interactive=False, lines=3)
            compressed = gr.Textbox(label="Compressed", interactive=False, lines=3)

    def ask_clicked(rid: str | None, text: str):
        if ask_manager is None:
            raise gr.Error("Free prompts are off in this app instance.", print_exception=False)
        if not rid:
            raise gr.Error("Run a comparison first (or pick a run in History): the prompt goes to its "
                           "compressed model.", print_exception=False)
        if not (text or "").strip():  # refused here too, so no worker starts for nothing
            raise gr.Error("The prompt is empty: type a few words (e.g. 27+58=) for both models to continue.",
                           print_exception=False)
        run = manager.get_run(rid)
        if run is None or run.status != SUCCEEDED:
            raise gr.Error(f"Run {rid} is {run.status if run else 'gone'}: only a finished run can answer.",
                           print_exception=False)
        payload = {"model": run.model_spec or "demo", "recipe": run.recipe, "artifact": run.artifact_path,
                   "prompt": text, "max_new_tokens": ASK_NEW_TOKENS}
        try:
            ask_id = ask_manager.submit(payload, owner="prompt-box")
        except LabError as e:
            raise gr.Error(f"Cannot ask: {e}", print_exception=False) from None
        try:
            done = ask_manager.wait(ask_id, timeout=ASK_TIMEOUT_S)
        except TimeoutError:
            ask_manager.cancel(ask_id)
            raise gr.Error(f"No answer within {ASK_TIMEOUT_S} s; try a shorter prompt.") from None
        if done.status != SUCCEEDED:
            raise gr.Error(f"Could not answer: {done.error}", print_exception=False)
        return done.report["baseline"], done.report["compressed"]  # compressor.runs.ask.answer's result

    ask.click(ask_clicked, [run_id, prompt], [baseline, compressed], api_name="ask")
    prompt.submit(ask_clicked, [run_id, prompt], [baseline, compressed], api_visibility="private")
    return ResultsPanel(cards, samples)
