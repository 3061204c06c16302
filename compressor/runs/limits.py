"""Limits on what a visitor can send, checked at the edge before anything is expanded or stored.

Every refusal is a LabError that names the limit and its number. The recipe's own bounds (text size,
YAML aliases, nodes, nesting, stages, regex patterns) live with the recipe parser
(`compressor.engine.bounds`); `LIMITS` lists them all, for the docs and the page.

    check_prompt(text)                      the prompt box
    check_upload(owner, path_or_size)       one uploaded file: its size, and the visitor's quota
    check_payload_size(payload_json)        a job payload before the store keeps it

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


def _kib(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n < 2**20 else f"{n / 2**20:,.1f} MiB"


def check_payload_size(payload_json: str) -> None:
    n = len(payload_json.encode())
    if n > MAX_PAYLOAD_BYTES:
        raise LabError(f"the run request is {_kib(n)} of JSON; the limit is {_kib(MAX_PAYLOAD_BYTES)} "
                       f"(MAX_PAYLOAD_BYTES={MAX_PAYLOAD_BYTES}): send a preset name or a shorter recipe")


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
            "MAX_UPLOAD_BYTES": (MAX_UPLOAD_BYTES, "bytes of one uploaded file"),
            "UPLOAD_QUOTA_BYTES": (UPLOAD_QUOTA_BYTES, f"bytes one visitor may upload per {UPLOAD_WINDOW_S:g} s"),
            "UPLOAD_QUOTA_FILES": (UPLOAD_QUOTA_FILES, f"files one visitor may upload per {UPLOAD_WINDOW_S:g} s")}
