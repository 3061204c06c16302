"""Sweeps without models: reading recipes and settings, the grid of cells, progress and ETA, the sweep
tables, and the local executor (the job manager's workers running tests/runs/sweep_targets.py): the
baseline measured once, every cell a run tagged with its sweep, cancel, and Ray asked for without Ray."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from compressor.errors import LabError
from compressor.runs import sweep as sw
from compressor.runs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, RunStore
from compressor.runs.sweep import CellState, SweepSpec, parse_evals, parse_recipes, sweep_progress
from compressor.runs.sweep_exec import local_slots
from compressor.runs.sweep_store import SweepStore
from tests.runs import sweep_targets

TARGETS = "tests.runs.sweep_targets:"
YAML_LIST = """
- w4-g128
- {method: hqq, bits: 4, group_size: 64}
- name: rtn-w4-g64
  stages: [{method: rtn, bits: 4, group_size: 64}]
"""


@pytest.mark.parametrize("text,labels", [
    ("w4-g128,int8", ["w4-g128", "int8"]),
    (" int8 ", ["int8"]),
    ("[int8, w3-g128]", ["int8", "w3-g128"]),
    (YAML_LIST, ["w4-g128", "hqq w4 g64", "rtn-w4-g64"]),
    ("- {budget: 300MiB}", ["budget 300MiB"]),
])
def test_recipes_read_from_names_and_yaml_lists(text, labels):
    assert [e.label for e in parse_recipes(text)] == labels


@pytest.mark.parametrize("text,says", [
    ("w4-g128,nope", "'nope' is not a preset"),
    ("int8,int8", "listed twice"),
    ("- [{method: rtn, bits: 4}]", "give a preset name or a mapping"),
    ("- {method: rtn, bits: 5}", "recipe 1"),
    ("- {budget: 1GiB, method: rtn}", "holds only budget"),
    ("", "no recipes"),
])
def test_bad_recipe_lists_are_refused_naming_the_entry(text, says):
    with pytest.raises(LabError, match=says):
        parse_recipes(text)


@pytest.mark.parametrize("text,expected", [
    (None, [("quick", {"preset": "quick"})]),
    ("quick,standard", [("quick", {"preset": "quick"}), ("standard", {"preset": "standard"})]),
    ("{preset: quick, ppl_tokens: 1024}", [("quick (ppl_tokens=1024)", {"preset": "quick", "ppl_tokens": 1024})]),
])
def test_evaluation_settings_read_as_presets_or_mappings(text, expected):
    assert parse_evals(text) == expected


def test_cells_are_the_grid_model_major_with_checked_payloads():
    spec = SweepSpec.build("demo, other-model", "int8,w4-g128", "quick,standard", hardware="t4")
    cells = spec.cells()
    assert [(c.model, c.recipe_label, c.eval_label) for c in cells[:3]] == [
        ("demo", "int8", "quick"), ("demo", "int8", "standard"), ("demo", "w4-g128", "quick")]
    assert len(cells) == 8 and [c.index for c in cells] == list(range(8))
    assert cells[0].payload == {"model": "demo", "recipe": "int8", "hardware": "t4", "eval": {"preset": "quick"},
                                "device": "cpu"}
    assert cells[0].group == cells[2].group != cells[1].group  # one baseline per model and evaluation setting
    assert SweepSpec.from_dict(spec.to_dict()) == spec


def test_a_bad_setting_names_its_cell_and_a_grid_too_large_is_refused():
    with pytest.raises(LabError, match="sweep cell demo x int8 x custom"):
        SweepSpec.build("demo", "int8", [{"ppl_tokens": 1}]).cells()
    with pytest.raises(LabError, match="the limit is 64"):
        SweepSpec.build(",".join(f"m{i}" for i in range(5)), ",".join(list(sw.list_presets())[:13]), "quick,standard")


def test_budgets_need_the_allocator_and_use_it_when_registered():
    spec = SweepSpec.build("demo", "- {budget: 12MiB}")
    with pytest.raises(LabError, match="python -m compressor sweep"):
        spec.cells()
    asked = []
    sw.register_budget_resolver(lambda model, budget, hardware: asked.append((model, budget, hardware)) or "int8")
    try:
        assert spec.cells()[0].payload["recipe"] == "int8" and asked == [("demo", "12MiB", "this-machine")]
    finally:
        sw.register_budget_resolver(None)


NOW = 1000.0


@pytest.mark.parametrize("states,slots,counts,eta", [
    ([], 1, (0, 0, 0, 0, 0), None),
    # nothing has told its duration yet
    ([CellState(RUNNING, NOW - 5, fraction=0.05), CellState(sw.WAITING)], 1, (0, 1, 1, 0, 0), None),
    # a running cell 40 % done after 20 s takes ~50 s: 30 s left, plus a queued 50 s, on one slot
    ([CellState(RUNNING, NOW - 20, fraction=0.4), CellState(QUEUED)], 1, (0, 1, 1, 0, 0), 80.0),
    # finished cells took 10 and 30 s (mean 20); one running for 5 s, two queued, over two slots
    ([CellState(SUCCEEDED, NOW - 50, NOW - 40), CellState(SUCCEEDED, NOW - 40, NOW - 10),
      CellState(RUNNING, NOW - 5), CellState(sw.WAITING), CellState(QUEUED), CellState(FAILED)],
     2, (2, 1, 2, 1, 0), (15 + 2 * 20) / 2),
    ([CellState(SUCCEEDED, NOW - 9, NOW - 1), CellState(CANCELLED)], 1, (1, 0, 0, 0, 1), 0.0),
])
def test_progress_counts_cells_and_estimates_the_time_left(states, slots, counts, eta):
    p = sweep_progress(states, slots, now=NOW)
    assert (p.done, p.running, p.queued, p.failed, p.cancelled) == counts and p.total == len(states)
    assert p.eta_s == (None if eta is None else pytest.approx(eta))
    assert ("left" in p.line()) == (not p.finished)


@pytest.mark.parametrize("requested,per_cell,cores,available,slots", [
    (None, None, 2, 10, 2), (4, None, 2, 10, 2), (1, None, 8, 10, 1),
    (None, 3 * 2**30, 8, 7 * 2**30, 2), (None, 3 * 2**30, 8, 2**30, 1),
])
def test_the_local_pool_is_bounded_by_cores_and_memory(requested, per_cell, cores, available, slots):
    assert local_slots(requested, per_cell, cores=cores, available_bytes=available) == slots


def test_sweep_tables_tag_runs_and_a_dead_process_sweep_ends_interrupted(tmp_path):
    runs = RunStore(tmp_path)
    store = SweepStore(runs)
    cells = SweepSpec.build("demo", "int8,w4-g128").cells()
    sweep_id = store.create("me", {"models": ["demo"]}, cells, "local (1 at once)", 1)
    run_id = runs.create_run("me", cells[0].payload)
    store.submitted(sweep_id, 0, run_id)
    listed = store.cells(sweep_id)
    assert [(c.status, c.run_id) for c in listed] == [(QUEUED, run_id), (sw.WAITING, None)]
    assert store.sweep_of(run_id) == (sweep_id, 0) and store.sweep_of("other") is None
    assert store.list("me")[0].id == sweep_id and store.list("you") == []
    with store._lock, store._db:  # the process that drove it is gone
        store._db.execute("UPDATE sweeps SET process = ?", (f"{socket.gethostname()}:999999999",))
    assert store.mark_orphans("app stopped") == [sweep_id]
    assert store.get(sweep_id).status == "interrupted" and store.cells(sweep_id)[1].status == CANCELLED


@pytest.fixture
def pool(tmp_path):
    """`pool(target, concurrency)`: a JobManager running tests/runs/sweep_targets.py's `target`."""
    from compressor.runs.manager import JobManager

    managers = []

    def make(target="phased", concurrency=2):
        managers.append(JobManager(tmp_path / "data", target=TARGETS + target, concurrency=concurrency))
        return managers[-1]

    yield make
    for m in managers:
        m.shutdown()


def _local(pool, target, concurrency=2):
    from compressor.runs.sweep_run import Sweeps

    return Sweeps(pool(target, concurrency), check_models=False)


def test_local_sweep_runs_every_cell_as_a_run_and_measures_the_baseline_once(pool):
    sweeps = _local(pool, "phased")
    try:
        sweep_id = sweeps.start(SweepSpec.build("demo", "int8,w4-g128,w3-g128,hqq-w4-g64"), "me")
        progress = sweeps.wait(sweep_id, timeout=120)
    finally:
        sweeps.shutdown()
    assert (progress.done, progress.total, progress.eta_s is not None) == (4, 4, True)
    cells = sweeps.cells(sweep_id)
    results = [c.run.report for c in cells]
    assert [r["recipe"] for r in results] == ["int8", "w4-g128", "w3-g128", "hqq-w4-g64"]
    assert [r["baseline_cached"] for r in results] == [False, True, True, True]
    leader_end = results[0]["started"] + sweep_targets.BASELINE_S
    assert all(r["started"] >= leader_end for r in results[1:])  # the others waited for the baseline
    assert len({r["pid"] for r in results}) == 2  # two workers shared the cells
    assert sweeps.get(sweep_id).status == "finished" and sweeps.get(sweep_id, viewer="someone else") is None
    assert all(sweeps.manager.get_run(c.run_id).owner == "me" for c in cells)  # ordinary runs in the history


def _first_cell_running(sweeps, recipes: str) -> str:
    """Starts a sweep of `recipes` and waits until its first cell runs; its id."""
    sweep_id = sweeps.start(SweepSpec.build("demo", recipes), "me")
    deadline = time.monotonic() + 60
    while sweeps.cells(sweep_id)[0].status != RUNNING and time.monotonic() < deadline:
        time.sleep(0.1)
    return sweep_id


def test_cancelling_a_local_sweep_cancels_running_and_waiting_cells(pool):
    sweeps = _local(pool, "hang", concurrency=1)
    try:
        sweep_id = _first_cell_running(sweeps, "int8,w4-g128,w3-g128")
        with pytest.raises(LabError, match="no sweep"):
            sweeps.cancel(sweep_id, owner="someone else")
        assert sweeps.cancel(sweep_id, owner="me")
        progress = sweeps.wait(sweep_id, timeout=30)
    finally:
        sweeps.shutdown()
    assert (progress.cancelled, progress.done, progress.finished) == (3, 0, True)
    assert sweeps.get(sweep_id).status == "cancelled"


def test_a_cell_cancelled_from_outside_stops_the_sweep(pool):
    sweeps = _local(pool, "hang", concurrency=1)
    try:
        sweep_id = _first_cell_running(sweeps, "int8,w4-g128")
        sweeps.manager.cancel(sweeps.cells(sweep_id)[0].run_id, owner="me")  # e.g. the visitor left the page
        sweeps.wait(sweep_id, timeout=30)
    finally:
        sweeps.shutdown()
    assert [c.status for c in sweeps.cells(sweep_id)] == [CANCELLED, CANCELLED]
    assert "cancelled from outside the sweep" in sweeps.get(sweep_id).error


def test_asking_for_ray_without_ray_installed_says_how_to_install_it(pool, monkeypatch):
    from compressor.runs.sweep_exec import make_executor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as it does where it is not installed
    with pytest.raises(LabError, match=r"pip install 'ray"):
        make_executor(pool("phased"), "auto")
    monkeypatch.setenv("LAB_RAY_ADDRESS", "auto")
    with pytest.raises(LabError, match="Ray is not installed"):
        make_executor(pool("phased"))
    monkeypatch.setenv("LAB_RAY_ADDRESS", " ")
    assert make_executor(pool("phased")).name.startswith("local")


def test_cells_are_checked_as_a_submission_is_before_the_sweep_starts():
    """A projection batch the job manager would refuse at submit fails the whole sweep up front, naming the
    cell (RunRequest.from_dict alone let it through to the middle of the sweep)."""
    spec = SweepSpec.build("demo", "w4-g128", projection_batch=10**6)
    with pytest.raises(LabError, match=r"sweep cell demo x w4-g128 x quick: .*projection_batch"):
        spec.cells()
