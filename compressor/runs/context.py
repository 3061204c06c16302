"""What a job target sees: `target(payload, ctx) -> dict`, with `ctx` a `JobContext`.

The context carries the run's id, a folder for its artifacts, the baseline cache, and three callbacks
(progress, log, partial report) that the caller wires: the worker process sends them over its pipe
(`compressor.runs.worker`), the job manager's inline path records them directly
(`JobManager.run_inline`), the CLI prints them (`JobContext.local`). This module also holds the
rules every side applies to what crosses a process boundary: progress events become plain JSON
values (`progress_dict`), reports are JSON dicts (`dict_json`), and a failure is told the same way
wherever the target ran (`failure_message`).

Only the standard library and light `compressor` modules are imported: the worker imports this
module before torch.
"""

from __future__ import annotations

import contextlib
import functools
import json
import shutil
import tempfile
import weakref
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from compressor.errors import LabError
from compressor.paths import scrub_paths
from compressor.progress import Progress
from compressor.runs.store import RunStore, default_data_dir

TEMP_PREFIX = "lab-run-"  # a context's temporary artifact folder, in the system's temp folder
_PROGRESS_FIELDS = {f.name for f in fields(Progress)}
# Progress's annotations ("int | None", ...) as (plain type, None allowed), to check each value.
_PROGRESS_TYPES = {f.name: ({"str": str, "int": int, "float": float}[f.type.split(" |")[0]], "None" in f.type)
                   for f in fields(Progress)}


def _plain_field(name: str, value: object) -> object:
    """One progress value as the plain Python type its Progress field names. numpy and 0-d torch
    scalars are unwrapped (`.item()`): the store writes JSON, which knows neither."""
    kind, optional = _PROGRESS_TYPES[name]
    if value is None and optional:
        return None
    if hasattr(value, "item") and not isinstance(value, str):
        with contextlib.suppress(ValueError, RuntimeError, TypeError):  # several values: refused below
            value = value.item()
    if kind is str:
        ok = isinstance(value, str)
    else:  # an int is a fine float; a bool is neither
        ok = isinstance(value, int | float) if kind is float else isinstance(value, int)
        ok = ok and not isinstance(value, bool)
    if not ok:
        raise ValueError(f"progress field {name}={value!r} ({type(value).__name__}) must be a {kind.__name__}"
                         + (" or None" if optional else ""))
    return float(value) if kind is float else value


def progress_dict(event: Progress | dict) -> dict:
    """A Progress (or a dict of its fields) as a dict of plain Python values (JSON-ready); names
    unknown or missing fields and values of the wrong type."""
    if isinstance(event, Progress):
        d = event.to_dict()
    elif not isinstance(event, dict):
        raise TypeError(f"progress event must be a Progress or a dict, got {type(event).__name__}")
    else:
        unknown = set(event) - _PROGRESS_FIELDS
        if unknown:
            raise ValueError(f"progress event has unknown fields {sorted(unknown)}; known: {sorted(_PROGRESS_FIELDS)}")
        try:
            d = Progress(**event).to_dict()
        except TypeError as e:
            raise ValueError(f"progress event {event!r} is incomplete: {e} (stage and fraction are required)") from e
    return {k: _plain_field(k, v) for k, v in d.items()}


def dict_json(value: object, what: str) -> str:
    """`value` as JSON text; a LabError names `what` unless it is a JSON-serialisable dict."""
    if not isinstance(value, dict):
        raise LabError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return json.dumps(value)
    except (TypeError, ValueError) as e:
        raise LabError(f"{what} is not JSON ({e}); use plain dicts, lists, strings and numbers") from e


def failure_message(e: BaseException) -> str:
    """The run's error for an exception its target raised: a LabError's own message (written for
    the user); anything else with its type, since `str()` alone can be empty or cryptic. The server's
    own folders are shortened (`compressor.paths.scrub_paths`): a visitor reads this."""
    if isinstance(e, LabError):
        return scrub_paths(str(e))
    if isinstance(e, MemoryError):  # str(MemoryError()) is empty: say what happened and what to change
        return (f"the job ran out of memory (MemoryError{f': {e}' if str(e) else ''}); "
                "try a smaller model, a shorter context or fewer samples")
    return scrub_paths(f"{type(e).__name__}: {e}") if str(e) else type(e).__name__


class BaselineCache:
    """Baseline measurements keyed by the caller (model + evaluation settings), stored as JSON."""

    def __init__(self, store: RunStore | Callable[[], RunStore]):
        # A callable opens the store on first use: a worker whose target never caches opens nothing.
        self._store = store

    def _open(self) -> RunStore:
        return self._store if isinstance(self._store, RunStore) else self._store()

    def get(self, key: str) -> dict | None:
        return self._open().cache_get(key)

    def put(self, key: str, value: dict) -> None:
        self._open().cache_put(key, value)

    @classmethod
    def local(cls, data_dir: str | Path | None = None) -> BaselineCache:
        """The cache of the data folder's store (default `compressor.paths.default_data_dir()`), opened
        on first use: what the CLI reads and fills."""
        store_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        return cls(functools.cache(lambda: RunStore(store_dir)))


class JobContext:
    """What a job target receives beside its payload.

    Attributes:
        run_id: the run's id in the store.
        artifact_dir: a folder of this run's own; files saved here (a compressed model) are kept for
            download when the run succeeds, subject to the manager's `ArtifactPolicy`. Built with
            `artifact_dir=None`, a temporary folder (`lab-run-*`) is made on first use and removed by
            `close()`, when the context is garbage-collected, or when the interpreter exits: a run
            refused before it saves anything makes none, and a context nobody closes leaves none.
        cache: `BaselineCache` with `get(key) -> dict | None` and `put(key, dict)`.

    `partial(report_dict)` hands over a report measured so far (a `Report.to_dict()` whose `pending`
    names what is still to come); the manager keeps the latest for the page (`partial_report`).
    """

    def __init__(
        self,
        *,
        run_id: str,
        artifact_dir: Path | None,
        cache: BaselineCache,
        on_progress: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = None,
        on_partial: Callable[[str], None] | None = None,
    ):
        self.run_id = run_id
        self._artifact_dir = Path(artifact_dir) if artifact_dir is not None else None
        self.cache = cache
        self._on_progress = on_progress or (lambda _: None)
        self._on_log = on_log or (lambda _: None)
        self._on_partial = on_partial
        self._remove_temporary: weakref.finalize | None = None  # set once a temporary folder exists

    @property
    def artifact_dir(self) -> Path:
        if self._artifact_dir is None:
            folder = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
            # runs once: on close(), when this context is collected, or at interpreter exit
            self._remove_temporary = weakref.finalize(self, shutil.rmtree, str(folder), True)
            self._artifact_dir = folder
        return self._artifact_dir

    def progress(self, event: Progress | dict) -> None:
        """Reports stage, layer i/n, fraction, ETA and message; a non-empty message is logged too."""
        self._on_progress(progress_dict(event))

    def log(self, message: str) -> None:
        """A line for the run's log, which visitors read: the server's own folders are shortened."""
        self._on_log(scrub_paths(str(message)))

    @property
    def wants_partial(self) -> bool:
        """True when someone reads partial reports (a runner skips building them otherwise)."""
        return self._on_partial is not None

    def partial(self, report: dict) -> None:
        """A report measured so far, as a JSON dict (`Report.to_dict()`); sent as JSON text."""
        if self._on_partial is not None:
            self._on_partial(dict_json(report, "a partial report"))

    def close(self) -> None:
        """Removes the temporary artifact folder, with what is in it (a given folder is left alone)."""
        if self._remove_temporary is not None:
            self._remove_temporary()
            self._remove_temporary, self._artifact_dir = None, None

    def __enter__(self) -> JobContext:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @classmethod
    def local(
        cls,
        data_dir: str | Path | None = None,
        *,
        artifact_dir: str | Path | None = None,
        on_progress: Callable[[dict], None] | None = None,
        on_log: Callable[[str], None] | None = print,
    ) -> JobContext:
        """A context for running a target in this process without a manager: cache in the data folder's
        store, artifacts in `artifact_dir` or a temporary folder made on first use, which `close()` (or
        leaving a `with` block, or the context's collection) removes. Nothing is recorded in the run history; `JobManager.run_inline` runs a target
        here and records it."""
        if artifact_dir is not None:
            Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        return cls(run_id="local", artifact_dir=artifact_dir, cache=BaselineCache.local(data_dir),
                   on_progress=on_progress, on_log=on_log)
