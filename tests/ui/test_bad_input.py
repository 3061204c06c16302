"""The API's and the page's share of the bad-input battery (issue 14; the job manager's and the CLI's share
is in tests/runs and tests/cli): every public endpoint, given what a careless or hostile script sends,
answers with a sentence naming the problem or the limit, never a traceback, a bare "Error" or a path on
the server, the app's process does not grow by 200 MB, and the app answers a normal request right after.

Nothing here starts a job: each input is refused at the edge (the page, the recipe's bounded parser, the
model's preflight) before anything is queued.
"""

from __future__ import annotations

import json

import psutil
import pytest

from compressor.paths import REPO
from tests.ui.pages import DEMO_EVAL, client

gradio_client = pytest.importorskip("gradio_client")

E = list(DEMO_EVAL.values())  # ppl_tokens, context, arithmetic_samples, max_new_tokens
BOMB = ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
        'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nstages: [{method: rtn}]\n')
DEEP = "stages: " + "[" * 60 + "]" * 60
MANY_STAGES = "stages:\n" + "- {method: rtn, bits: 8}\n" * 100
SLOW_REGEX = "stages:\n- {method: rtn, targets: '^(.|.)*Z$'}\n"


def _run(model="demo", recipe="int8", hardware="t4", ppl=E[0], context=E[1], problems=E[2], new=E[3], pctx=2048,
         pbatch=1, evaluation="quick") -> tuple:
    return ("/run", (model, recipe, hardware, False, ppl, context, problems, new, pctx, pbatch, evaluation))


CASES = {
    # /run: the model
    "empty model": (_run(model=""), "no model given"),
    "huge model name": (_run(model="x" * 5000), "limit is 200"),
    "model not text": (_run(model=5), "must be text"),
    "model outside the allowed folders": (_run(model="../../etc"), "outside the allowed folders"),
    "absolute model path": (_run(model="/etc"), "outside the allowed folders"),
    # /run: hardware (a dropdown: Gradio names the value and the choices)
    "unknown hardware": (_run(hardware="no-such-gpu"), "not in the list of choices"),
    "hardware path": (_run(hardware="../t4"), "not in the list of choices"),
    # /run: the recipe
    "empty recipe": (_run(recipe=""), "recipe is empty"),
    "no recipe": (_run(recipe=None), "recipe is empty"),
    "broken yaml": (_run(recipe="stages: [method: rtn"), "not valid JSON or YAML"),
    "unknown preset": (_run(recipe="no-such-preset"), "not a preset name"),
    "bits out of range": (_run(recipe="stages:\n- {method: rtn, bits: 99}\n"), "bits"),
    "group size zero": (_run(recipe="stages:\n- {method: rtn, group_size: 0}\n"), "group_size"),
    "unknown method": (_run(recipe="stages:\n- {method: nope}\n"), "method"),
    "unknown field": (_run(recipe="stages:\n- {method: rtn, bitz: 4}\n"), "bitz"),
    "yaml alias bomb": (_run(recipe=BOMB), "aliases"),
    "one megabyte recipe": (_run(recipe="a: " + "x" * 1_000_000), "MAX_RECIPE_CHARS"),
    "a hundred stages": (_run(recipe=MANY_STAGES), "MAX_STAGES"),
    "deep nesting": (_run(recipe=DEEP), "MAX_RECIPE_DEPTH"),
    "catastrophic regex": (_run(recipe=SLOW_REGEX), "targets"),
    "invalid regex": (_run(recipe="stages:\n- {method: rtn, targets: '('}\n"), "targets"),
    "targets nothing": (_run(recipe="stages:\n- {method: rtn, targets: 'no_such_module_xyz'}\n"), "match"),
    "list of numbers": (_run(recipe="[1, 2]"), "stage"),
    "control characters": (_run(recipe="\x00\x01\x02"), "recipe"),
    "file name for a recipe": (_run(recipe="/etc/passwd.yaml"), "not a file name"),
    # /run: evaluation and projection settings
    "too few tokens": (_run(ppl=0), "out of range"),
    "too many tokens": (_run(ppl=10**9), "out of range"),
    "fractional context": (_run(context=64.5), "not a whole number"),
    "negative problems": (_run(problems=-1), "out of range"),
    "new tokens not a number": (_run(new="abc"), "not a number"),
    "projection context zero": (_run(pctx=0), "out of range"),
    "projection batch huge": (_run(pbatch=10**9), "out of range"),
    "projection context text": (_run(pctx="x"), "not a number"),
    "projection batch empty": (_run(pbatch=None), "empty"),
    "unknown evaluation preset": (_run(evaluation="forever"), "not in the list of choices"),
    # /check_recipe
    "check: huge recipe": (("/check_recipe", ("a: " + "x" * 1_000_000, "demo")), "MAX_RECIPE_CHARS"),
    "check: alias bomb": (("/check_recipe", (BOMB, "demo")), "aliases"),
    "check: deep nesting": (("/check_recipe", (DEEP, "demo")), "MAX_RECIPE_DEPTH"),
    "check: catastrophic regex": (("/check_recipe", (SLOW_REGEX, "demo")), "targets"),
    "check: model outside": (("/check_recipe", ("int8", "../../etc")), "outside the allowed folders"),
    "check: targets nothing": (("/check_recipe", ("stages:\n- {method: rtn, targets: 'zzz_none'}\n", "demo")),
                               "match"),
    "check: empty": (("/check_recipe", ("", "demo")), "recipe is empty"),
    # /ask
    "ask: empty prompt": (("/ask", ("",)), "prompt is empty"),
    "ask: huge prompt": (("/ask", ("x" * 2001,)), "limit is 2,000"),
    "ask: no run on show": (("/ask", ("27+58=",)), "run a comparison first"),
    # /show_run
    "open: unknown run": (("/show_run", ("nope", False)), "yours or shared"),
    "open: huge id": (("/show_run", ("x" * 5000, False)), "yours or shared"),
    "open: sql": (("/show_run", ("'; DROP TABLE runs; --", False)), "yours or shared"),
    "open: path": (("/show_run", ("../../etc/passwd", False)), "yours or shared"),
    "open: empty": (("/show_run", ("", False)), "yours or shared"),
    # /compare
    "compare: too many": (("/compare", ([f"r{i}" for i in range(9)],)), "at most 8"),
    "compare: unknown runs": (("/compare", (["nope", "nada"],)), "yours or shared"),
    # /download_model
    "download: unknown run": (("/download_model", ("nope",)), "yours or shared"),
    "download: path": (("/download_model", ("../../etc",)), "yours or shared"),
    # /history
    "history: unknown axis": (("/history", ("xyz", "Weight memory", "t4")), "not in the list of choices"),
    "history: unknown x": (("/history", ("KL to baseline (lower better)", "abc", "t4")), "not in the list of choices"),
    "history: unknown hardware": (("/history", ("KL to baseline (lower better)", "Weight memory", "zz")),
                                  "not in the list of choices"),
    # /share, /cancel with nothing on show
    "share: nothing on show": (("/share", (True,)), "no run is on show"),
    "cancel: nothing running": (("/cancel", ()), "Nothing is running"),
}


def _answer(c, api: str, args: tuple) -> str:
    """What a script reads back: the error's message, /run's status line, or the output as text."""
    try:
        out = c.predict(*args, api_name=api)
    except gradio_client.exceptions.AppError as e:
        return str(e)
    if api == "/run":
        return out[1]
    return out if isinstance(out, str) else json.dumps(out)


@pytest.fixture(scope="module")
def battery(served):
    """One API session for the whole battery, and the app process's memory before it."""
    return client(served.url), psutil.Process().memory_info().rss


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_answered_clearly(battery, served, name):
    c, _ = battery
    (api, args), expected = CASES[name]
    text = _answer(c, api, args)
    assert expected.lower() in text.lower(), text
    assert "Traceback" not in text and "upstream Gradio app" not in text and text.strip() != "Error", text
    for path in (str(served.data_dir), str(REPO)):
        assert path not in text, text
    assert c.session_hash not in text  # no owner ids either
    assert "Run `" not in text  # nothing was submitted


def test_after_the_battery_the_app_answers_and_did_not_grow(battery, served):
    c, rss_before = battery
    assert "Recipe is valid for **demo**" in c.predict("int8", "demo", api_name="/check_recipe")
    grown = psutil.Process().memory_info().rss - rss_before
    assert grown < 200 * 2**20, f"the app's process grew by {grown / 2**20:.0f} MiB during the battery"
    assert not served.manager.list_runs(owner=f"s-{c.session_hash}", include_report=False)  # nothing queued
