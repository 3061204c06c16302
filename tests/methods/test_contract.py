"""The plugin contract, checked for every registered method: a new method file is tested here as soon as
it registers, once it adds its row to TINY (the smallest settings that run in a second on tiny_llama).

For each method: its config round-trips through JSON, every field is documented in an `Args:`
docstring, its form builds and reproduces the defaults, its declarations are well formed, and a tiny
compress runs and leaves a complete report (the stage, rows with measured bytes for weight methods,
registered module types only, finite logits).
"""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest
import torch
from torch import nn

from compressor import compress
from compressor.engine.fields import KINDS as FIELD_KINDS
from compressor.engine.fields import config_fields, stage_from_values
from compressor.engine.kvcache import make_cache
from compressor.engine.packed import packed_type_of
from compressor.engine.registry import KINDS, load_methods
from compressor.engine.report import CompressionReport
from compressor.engine.stage import WEIGHT_KINDS, StageConfig, stage_from_dict
from tests.helpers import random_tokens, tiny_llama

TRAITS = {"weight-only-int", "int4-weight-only", "int8-dynamic", "fp8", "nf4", "sparse-2:4"}
# One row per method: the stage settings of its tiny compress (group sizes divide tiny_llama's 128/256).
TINY = {
    "rtn": {"bits": 4, "group_size": 64}, "gptq": {"group_size": 64}, "awq": {"group_size": 64, "n_grid": 4},
    "hqq": {"iters": 4}, "smoothquant": {}, "fp8": {}, "bnb-nf4": {}, "bnb-fp4": {}, "llm-int8": {},
    "magnitude": {}, "wanda": {"comparison": "output"}, "sparsegpt": {}, "structured": {},
    "svd": {"rank": 16}, "svd_llm": {"rank": 16},
    "distill": {"steps": 2, "seq_len": 16, "batch_size": 2},
    "kivi": {}, "gear": {}, "streaming": {},
}
METHODS = sorted(load_methods())


def test_every_registered_method_has_a_row():
    assert sorted(TINY) == METHODS


@pytest.mark.parametrize("name", METHODS)
def test_declarations(name):
    spec = load_methods()[name]
    cls = spec.config_cls
    assert issubclass(cls, StageConfig) and dataclasses.is_dataclass(cls) and cls.method == name
    assert cls.kind in KINDS and isinstance(cls.needs_calibration, bool) and isinstance(cls.needs_teacher, bool)
    traits, bits = cls().traits()
    assert traits <= TRAITS and (bits is None or 0 < bits <= 32)
    cfg = cls(**TINY[name])
    assert cfg.label().startswith(name) and "\n" not in cfg.label()
    if cls.kind == "kv":
        assert callable(getattr(cls, "cache_layer", None))
        kept, how = cfg.exact_window()  # the page's note on generations that never reach the compressed part
        assert kept >= 0 and how and cfg.stress_fix(kept + 1)


@pytest.mark.parametrize("name", METHODS)
def test_config_round_trips_through_json(name):
    cls = load_methods()[name].config_cls
    for cfg in (cls(), cls(**TINY[name])):
        again = stage_from_dict(json.loads(json.dumps(cfg.to_dict())))
        assert type(again) is cls and again == cfg


@pytest.mark.parametrize("name", METHODS)
def test_every_field_is_documented_and_the_form_gives_back_the_defaults(name):
    cls = load_methods()[name].config_cls
    specs = config_fields(cls)
    assert [s.name for s in specs if not s.help] == []
    assert {s.name for s in specs} == {f.name for f in dataclasses.fields(cls)}
    assert all(s.kind in FIELD_KINDS and (s.kind != "choice" or s.default in s.choices) for s in specs)
    stage = stage_from_values(name, {s.name: s.initial for s in specs})
    assert stage_from_dict(stage) == cls()


@pytest.mark.parametrize("name", METHODS)
def test_a_tiny_compress_runs_and_its_report_is_complete(name):
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    cls = load_methods()[name].config_cls
    model = tiny_llama()
    model, report = compress(model, [{"method": name, **TINY[name]}], calibration=random_tokens(4, 32))
    (stage,) = report.stages
    assert (stage.method, stage.kind, stage.index) == (name, cls.kind, 0)
    assert report.sanity["finite_logits"] is True and not any("non-finite" in w for w in report.warnings)
    assert (report.calibration is not None) == (cls.needs_calibration or cls.needs_teacher)
    assert CompressionReport.from_dict(json.loads(report.to_json())).to_dict() == report.to_dict()
    rows = [r for r in report.layers if r.stage == 0]
    assert all(r.method == name for r in rows) and stage.n_modules == len(rows)
    modules = dict(model.named_modules())
    if cls.kind in WEIGHT_KINDS:
        assert rows and all(r.bytes_after > 0 and r.n_weights > 0 for r in rows if r.module_type)
        assert report.weight_bytes_after > 0 and report.weight_bytes_before > 0
        for r in rows:  # what a stage leaves is an nn.Linear or a registered packed type
            mod = modules.get(r.name)
            assert mod is None or type(mod) is nn.Linear or packed_type_of(mod) is not None, (r.name, type(mod))
    if cls.kind == "kv":
        assert isinstance(model.kv_cache_config, cls)
        with torch.no_grad():
            out = model(torch.arange(1, 65)[None], past_key_values=make_cache(model), use_cache=True)
        assert torch.isfinite(out.logits).all()
    if cls.needs_teacher:
        assert rows and rows[0].extra["kl_after"] >= 0
