"""A visitor's session on the page: who they are (ui.visitors), which run is on show, and what comes back
after a reload or from a shared link.

- On load: the browser's stored visitor id (a new one on a first visit), then the run the address names
  (`?run=<id>`, theirs or shared) or else their newest run, shown with its settings restored; a run
  still going is followed again. `?compare=a,b` fills the Compare tab.
- Opening a run (History, or /show_run): its report in every panel and the settings it ran with.
- Changing the hardware profile, projection context or batch: the run on show is projected again from
  its stored report (no new run).
- The address follows the run on show, so a reload or a copied link opens the same thing.
"""

from __future__ import annotations

from collections.abc import Iterator

import gradio as gr

from compressor.errors import LabError
from compressor.runs.store import FINAL_STATUSES, SUCCEEDED
from ui.messages import guarded, public
from ui.records import visible_run
from ui.run import Follow
from ui.settings import SettingsPanel, progress_html, restore_values
from ui.visitors import Sessions, is_visitor_id, new_visitor_id, owner_of

PRESENCE_TICK_S = 20  # an open tab says it is still here this often
# Keeps the address bar in step with the run on show (the query the server sets), and gives the full link.
LINK_JS = """(query) => {
  if (!query) return "";
  const url = new URL(window.location.href);
  url.search = query;
  window.history.replaceState(null, "", url);
  return url.toString();
}"""


def query_param(request: gr.Request | None, name: str) -> str | None:
    params = getattr(request, "query_params", None) if request is not None else None
    value = params.get(name) if params is not None else None
    return value[:400] if isinstance(value, str) and value.strip() else None


def wire_session(demo: gr.Blocks, manager, settings: SettingsPanel, follow: Follow, visitor: gr.State,
                 stored: gr.BrowserState, open_run: gr.Dropdown, compare_pick: gr.Dropdown,
                 projected: gr.Checkbox, share_link: gr.Textbox, sessions: Sessions) -> gr.events.Dependency:
    """The load, open and re-projection events; returns the load chain (the history redraws after it)."""
    restorable = settings.restorable
    blank_settings = [gr.update()] * len(restorable)

    def opened(owner: str, rid: str, show_projected: bool) -> Iterator[list]:
        """Outputs of opening run `rid` for `owner`: followed while it goes on (theirs only), then shown."""
        run = visible_run(manager, rid, owner)
        settings_values = restore_values(run)
        if run.status not in FINAL_STATUSES and run.owner == owner:
            first = True
            for out in follow.follow(manager, run.id, show_projected):
                yield out + (settings_values if first else blank_settings)
                first = False
            return
        if run.status != SUCCEEDED:
            yield [run.id, progress_html(0, f"{run.status.title()}.", "failed"),
                   f"Run `{run.id}` {run.status}: {public(run.error or '')}", public(run.log), f"?run={run.id}"] \
                + follow.views.unchanged() + settings_values
            return
        yield ([run.id, progress_html(1, "Opened from history.", "done"), f"Showing run `{run.id}`.", public(run.log),
                f"?run={run.id}"] + follow.views.show(run, show_projected) + settings_values)

    def on_visitor(saved: object, request: gr.Request = None):
        vid = saved if is_visitor_id(saved) else new_visitor_id()
        sessions.opened(request, vid)
        manager.touch(vid)  # back within the grace period: their runs are kept
        return vid, vid

    def on_unload(request: gr.Request = None):
        owner = sessions.closed(request)
        if owner is not None and not sessions.is_open(owner):  # the visitor's last tab: let go after the grace
            manager.left(owner)

    demo.unload(on_unload)

    def on_tick(vid: str | None, request: gr.Request = None):
        if is_visitor_id(vid):
            manager.touch(vid)  # a sign of life from an open tab (for LAB_VISITOR_IDLE_S)

    gr.Timer(PRESENCE_TICK_S).tick(on_tick, visitor, None, api_visibility="private", show_progress="hidden")

    @guarded
    def on_open_initial(vid: str | None, show_projected: bool, request: gr.Request = None):
        owner = owner_of(vid, request)
        compare = query_param(request, "compare")
        picks = [c for c in (compare or "").split(",") if c.strip()][:8]
        rid = query_param(request, "run")
        if rid is None:
            mine = manager.list_runs(owner=owner, limit=1, include_report=False)
            rid = mine[0].id if mine else None
        if rid is None:
            yield [gr.update()] * len(follow.outputs) + blank_settings + [gr.update(value=picks)]
            return
        try:
            for out in opened(owner, rid, show_projected):
                yield out + [gr.update(value=picks)]
        except LabError as e:
            yield ([gr.update(), progress_html(0, "Ready.", "idle"), f"**Cannot open the linked run:** {public(e)}",
                    gr.update(), ""] + follow.views.unchanged() + blank_settings + [gr.update(value=picks)])

    load = demo.load(on_visitor, stored, [visitor, stored], api_visibility="private")
    load = load.then(on_open_initial, [visitor, projected], follow.outputs + restorable + [compare_pick],
                     api_visibility="private", concurrency_limit=None, show_progress="hidden")

    @guarded
    def on_open(rid: str | None, show_projected: bool, vid: str | None, request: gr.Request = None):
        yield from opened(owner_of(vid, request), rid, show_projected)

    open_run.input(on_open, [open_run, projected, visitor], follow.outputs + restorable, api_name="show_run",
                   concurrency_limit=None, show_progress="hidden")

    @guarded
    def on_reproject(rid: str | None, hardware: str | None, context, batch, show_projected: bool, vid: str | None,
                     request: gr.Request = None):
        if not rid:
            return follow.views.unchanged()
        run = visible_run(manager, rid, owner_of(vid, request))
        if run.status != SUCCEEDED:
            return follow.views.unchanged()
        return follow.views.show(run, show_projected, hardware, context, batch)

    gr.on([settings.hardware.input, settings.projection_context.submit, settings.projection_context.blur,
           settings.projection_batch.submit, settings.projection_batch.blur, projected.input], on_reproject,
          [follow.run_id, settings.hardware, settings.projection_context, settings.projection_batch, projected,
           visitor], follow.views.outputs, api_visibility="private", show_progress="hidden")

    follow.link.change(None, follow.link, share_link, js=LINK_JS)
    return load
