"""The deployment's settings from the environment (LAB_* variables), read once, each checked.

    config = ServerConfig.from_env()          # ConfigError naming every bad value and the fix
    manager = JobManager(data_dir, **config.run_manager_options())

A bad value stops start-up with one message that lists every bad variable, its value and what would
work (never a traceback); "off" switches an optional bound off. Standard library only.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from compressor.errors import LabError
from compressor.runs.artifacts import ArtifactPolicy
from compressor.runs.retention import Retention

OFF = ("off", "none", "")


class ConfigError(LabError):
    """One or more LAB_* environment variables hold values that cannot work."""


@dataclass(frozen=True)
class Setting:
    env: str
    kind: type  # int or float
    default: float | None
    low: float  # smallest accepted value
    optional: bool = False  # "off" accepted (None)
    help: str = ""


SETTINGS = {
    "time_limit_s": Setting("LAB_TIME_LIMIT_S", float, 900, 1, help="seconds one run may take"),
    "ask_time_limit_s": Setting("LAB_ASK_TIME_LIMIT_S", float, 180, 1, help="seconds one prompt-box answer may take"),
    "zero_gpu_duration_s": Setting("LAB_ZERO_GPU_DURATION_S", int, 240, 1, help="seconds of GPU per ZeroGPU run"),
    "max_queued_per_visitor": Setting("LAB_MAX_QUEUED_PER_VISITOR", int, 3, 1, help="runs one visitor may queue"),
    "max_queued": Setting("LAB_MAX_QUEUED", int, 24, 1, help="runs queued or running for everyone"),
    "visitor_grace_s": Setting("LAB_VISITOR_GRACE_S", float, 60, 0, optional=True,
                               help="seconds before a departed visitor's runs are cancelled"),
    "visitor_idle_s": Setting("LAB_VISITOR_IDLE_S", float, None, 10, optional=True,
                              help="seconds of silence after which a visitor's runs are cancelled"),
    "keep_runs": Setting("LAB_KEEP_RUNS", int, 2000, 1, optional=True, help="finished runs kept"),
    "keep_run_days": Setting("LAB_KEEP_RUN_DAYS", float, 90, 0.01, optional=True, help="days a finished run is kept"),
    "cache_entries": Setting("LAB_CACHE_ENTRIES", int, 200, 1, optional=True, help="baseline cache entries kept"),
    "cache_days": Setting("LAB_CACHE_DAYS", float, 30, 0.01, optional=True, help="days a baseline entry is kept"),
    "keep_models": Setting("LAB_KEEP_MODELS", int, 5, 0, help="compressed models kept for download"),
}


@dataclass(frozen=True)
class ServerConfig:
    """The deployment's settings; defaults as in SETTINGS (each field's environment variable)."""

    time_limit_s: float = 900
    ask_time_limit_s: float = 180
    zero_gpu_duration_s: int = 240
    max_queued_per_visitor: int = 3
    max_queued: int = 24
    visitor_grace_s: float | None = 60
    visitor_idle_s: float | None = None
    keep_runs: int | None = 2000
    keep_run_days: float | None = 90
    cache_entries: int | None = 200
    cache_days: float | None = 30
    keep_models: int = 5

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerConfig:
        """Reads every LAB_* setting; ConfigError listing all the bad ones."""
        env = os.environ if environ is None else environ
        values, problems = {}, []
        for name, s in SETTINGS.items():
            raw = env.get(s.env)
            if raw is None:
                continue
            try:
                values[name] = _parse(s, raw)
            except ValueError as e:
                problems.append(str(e))
        if problems:
            raise ConfigError("bad environment setting(s): " + "; ".join(problems))
        return cls(**values)

    def run_manager_options(self) -> dict:
        """Keyword arguments of the compression JobManager."""
        return {"time_limit_s": self.time_limit_s, "max_queued_per_owner": self.max_queued_per_visitor,
                "max_queued": self.max_queued, "owner_grace_s": self.visitor_grace_s,
                "owner_idle_s": self.visitor_idle_s, "retention": self.retention(),
                "artifacts": ArtifactPolicy(keep_last=self.keep_models)}

    def ask_manager_options(self) -> dict:
        """Keyword arguments of the prompt box's JobManager (its own small store)."""
        return {"time_limit_s": self.ask_time_limit_s, "max_queued_per_owner": self.max_queued_per_visitor,
                "max_queued": self.max_queued, "owner_grace_s": self.visitor_grace_s,
                "owner_idle_s": self.visitor_idle_s, "retention": self.retention()}

    def retention(self) -> Retention:
        return Retention(keep_runs=self.keep_runs, run_days=self.keep_run_days, cache_entries=self.cache_entries,
                         cache_days=self.cache_days)

    def describe(self) -> list[tuple[str, str, str]]:
        """(variable, value in effect, what it sets) for the docs and the start-up log."""
        return [(SETTINGS[f.name].env, "off" if getattr(self, f.name) is None else f"{getattr(self, f.name):g}",
                 SETTINGS[f.name].help) for f in fields(self)]


def _parse(s: Setting, raw: str) -> float | int | None:
    text = raw.strip()
    if s.optional and text.lower() in OFF:
        return None
    unit = "a whole number" if s.kind is int else "a number"
    fix = f"use {unit} >= {s.low:g}" + (" or 'off'" if s.optional else "") + f" ({s.help}; default "
    fix += ("off" if s.default is None else f"{s.default:g}") + ")"
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{s.env}={raw[:40]!r} is not {unit}: {fix}") from None
    if not math.isfinite(value) or value < s.low or (s.kind is int and value != int(value)):
        raise ValueError(f"{s.env}={raw[:40]!r} is out of range: {fix}")
    return int(value) if s.kind is int else value
