"""Limits on what a visitor can send, checked at the edge before anything is expanded or stored.

Every refusal is a LabError that names the limit and its number. The recipe's own bounds (text size,
YAML aliases, nodes, nesting, stages, regex patterns) live with the recipe parser
(`compressor.engine.bounds`); `LIMITS` lists them all, for the docs and the page.

    check_prompt(text)                      the prompt box
    check_upload(owner, path_or_size)       one uploaded file: its size, and the visitor's quota
    check_payload_size(payload_json)        a job payload before the store keeps it
    check_model_spec(spec)                  a model name, hub id or folder as a request gives it
    check_hardware_id(profile_id)           a hardware profile id's length (get_profile says if it exists)
    check_projection(context, batch)        where a request asks the hardware projection to be made

Standard library only: the job manager imports this module before torch.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from compressor.errors import LabError

MAX_PAYLOAD_BYTES = 256 * 1024  # a run request's JSON as stored (a recipe is at most 32 KiB of it)
MAX_PROMPT_CHARS = 2000  # the prompt box
MAX_UPLOAD_BYTES = 256 * 1024  # one uploaded file (recipes are YAML or JSON text)
UPLOAD_QUOTA_BYTES = 4 * 2**20  # what one visitor may upload per window
UPLOAD_QUOTA_FILES = 50  # files one visitor may upload per window
UPLOAD_WINDOW_S = 3600.0
MAX_MODEL_CHARS = 200  # hub ids are at most 96 characters; a folder path a little more
MAX_HARDWARE_CHARS = 64  # profile ids are file stems ("a100-80gb"); a longer one is no file name
PROJECTION_CONTEXTS = (16, 1_048_576)  # tokens (lowest, highest); the projection clamps to the model's positions
PROJECTION_BATCHES = (1, 4096)


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 2**20 else f"{n / 2**20:,.1f} MiB"


def check_payload_size(payload_json: str) -> None:
    n = len(payload_json.encode())
    if n > MAX_PAYLOAD_BYTES:
        raise LabError(f"the run request is {_kib(n)} of JSON; the limit is {_kib(MAX_PAYLOAD_BYTES)} "
                       f"(MAX_PAYLOAD_BYTES={MAX_PAYLOAD_BYTES}): send a preset name or a shorter recipe")


def check_model_spec(spec: str) -> str:
    """`spec` unless it is longer than MAX_MODEL_CHARS or holds control characters (a NUL ends a path
    early in C): LabError naming the limit."""
    if len(spec) > MAX_MODEL_CHARS:
        raise LabError(f"the model name has {len(spec):,} characters; the limit is {MAX_MODEL_CHARS} "
                       "(MAX_MODEL_CHARS): give a hub id (org/name), a catalog name or a local folder")
    if any(ord(c) < 32 or ord(c) == 127 for c in spec):
        raise LabError(f"the model name {spec[:60]!r} holds control characters: give a hub id (org/name), a "
                       "catalog name or a local folder")
    return spec


def check_hardware_id(profile_id: str) -> str:
    """`profile_id` unless it is longer than MAX_HARDWARE_CHARS (LabError naming the limit); whether
    such a profile exists is `compressor.measure.hardware.get_profile`'s to say."""
    if len(profile_id) > MAX_HARDWARE_CHARS:
        raise LabError(f"the hardware id has {len(profile_id):,} characters; the limit is {MAX_HARDWARE_CHARS} "
                       "(MAX_HARDWARE_CHARS): use a profile id from `python -m compressor hardware`, e.g. t4")
    return profile_id


def check_projection(context: int, batch: int) -> None:
    """LabError unless the projection's context and batch are within PROJECTION_CONTEXTS and
    PROJECTION_BATCHES (a batch of a billion would only make the arithmetic's figures meaningless)."""
    for name, value, (lo, hi) in (("projection_context", context, PROJECTION_CONTEXTS),
                                  ("projection_batch", batch, PROJECTION_BATCHES)):
        if not lo <= value <= hi:
            raise LabError(f"request '{name}'={value:,} is out of range: use {lo:,} to {hi:,} "
                           f"({'PROJECTION_CONTEXTS' if name == 'projection_context' else 'PROJECTION_BATCHES'})")


def check_prompt(prompt: object) -> str:
    """The prompt as text, or LabError: empty, not text, or over MAX_PROMPT_CHARS characters."""
    if not isinstance(prompt, str):
        raise LabError(f"the prompt must be text, got {type(prompt).__name__}")
    if not prompt.strip():
        raise LabError("the prompt is empty: type a few words for both models to continue")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise LabError(f"the prompt has {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,} "
                       "(MAX_PROMPT_CHARS): shorten it")
    return prompt


class UploadQuota:
    """Bytes and files each visitor uploaded in the last `window_s`; thread-safe, in memory.

    `charge(owner, n_bytes)` records one upload or raises LabError naming the limit that would be
    passed (the upload is then not recorded).
    """

    def __init__(self, max_bytes: int = UPLOAD_QUOTA_BYTES, max_files: int = UPLOAD_QUOTA_FILES,
                 window_s: float = UPLOAD_WINDOW_S):
        self.max_bytes, self.max_files, self.window_s = max_bytes, max_files, window_s
        self._lock = threading.Lock()
        self._log: dict[str, list[tuple[float, int]]] = {}

    def used(self, owner: str) -> tuple[int, int]:
        """(bytes, files) uploaded by `owner` within the window."""
        with self._lock:
            entries = self._recent(owner)
        return sum(n for _, n in entries), len(entries)

    def charge(self, owner: str, n_bytes: int) -> None:
        with self._lock:
            entries = self._recent(owner)
            used, files = sum(n for _, n in entries), len(entries)
            window = f"per {self.window_s / 60:g} minutes"
            if files + 1 > self.max_files:
                raise LabError(f"you uploaded {files} files in the last {self.window_s / 60:g} minutes; the limit "
                               f"is {self.max_files} {window} (UPLOAD_QUOTA_FILES): wait, or paste the recipe")
            if used + n_bytes > self.max_bytes:
                raise LabError(f"this upload ({_kib(n_bytes)}) would bring your uploads to {_kib(used + n_bytes)}; "
                               f"the limit is {_kib(self.max_bytes)} {window} (UPLOAD_QUOTA_BYTES)")
            entries.append((time.monotonic(), n_bytes))
            self._log[owner] = entries
            if len(self._log) > 100_000:  # bounded memory: forget the oldest visitors
                self._log.pop(next(iter(self._log)))

    def _recent(self, owner: str) -> list[tuple[float, int]]:
        cutoff = time.monotonic() - self.window_s
        return [e for e in self._log.get(owner, []) if e[0] >= cutoff]


def check_upload(owner: str, file: str | os.PathLike | int, quota: UploadQuota | None = None) -> int:
    """The size of one uploaded file (a path, or its size in bytes), checked against MAX_UPLOAD_BYTES
    and charged to `owner`'s quota; LabError naming the limit otherwise."""
    size = file if isinstance(file, int) else Path(file).stat().st_size
    if size > MAX_UPLOAD_BYTES:
        raise LabError(f"the file is {_kib(size)}; an upload is at most {_kib(MAX_UPLOAD_BYTES)} "
                       f"(MAX_UPLOAD_BYTES={MAX_UPLOAD_BYTES}): a recipe is a few lines of YAML")
    if quota is not None:
        quota.charge(owner, size)
    return size


def limits_table() -> dict[str, tuple[int | float, str]]:
    """Every input limit: name -> (value, what it bounds), for the docs and the page."""
    from compressor.engine import bounds

    return {**bounds.limits_table(),
            "MAX_PAYLOAD_BYTES": (MAX_PAYLOAD_BYTES, "bytes of one run request's JSON"),
            "MAX_PROMPT_CHARS": (MAX_PROMPT_CHARS, "characters of a prompt-box prompt"),
            "MAX_MODEL_CHARS": (MAX_MODEL_CHARS, "characters of a model name, hub id or folder in a request"),
            "MAX_HARDWARE_CHARS": (MAX_HARDWARE_CHARS, "characters of a hardware profile id in a request"),
            "PROJECTION_CONTEXTS": (PROJECTION_CONTEXTS, "lowest and highest projection context, tokens"),
            "PROJECTION_BATCHES": (PROJECTION_BATCHES, "lowest and highest projection batch"),
            "MAX_UPLOAD_BYTES": (MAX_UPLOAD_BYTES, "bytes of one uploaded file"),
            "UPLOAD_QUOTA_BYTES": (UPLOAD_QUOTA_BYTES, f"bytes one visitor may upload per {UPLOAD_WINDOW_S:g} s"),
            "UPLOAD_QUOTA_FILES": (UPLOAD_QUOTA_FILES, f"files one visitor may upload per {UPLOAD_WINDOW_S:g} s")}
