"""Stacked recipes: a stage never silently skips the modules an earlier stage turned into a final format.

Recipe.check refuses such stacks from the configs alone (StageConfig.final_format / linear_children),
before any work; the engine refuses a weight stage that finds no nn.Linear left at run time.
"""

from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from compressor import RecipeError, compress, load_recipe
from compressor.engine.methods.lowrank import LowRankLinear
from compressor.engine.registry import METHODS, MethodSpec
from compressor.engine.stage import StageConfig
from tests.helpers import random_tokens, tiny_llama

COMPACT = {"method": "wanda", "pattern": "2:4", "storage": "compact"}

# (recipe, fragments the message must hold: both stages and the fix). Refused before any work.
REFUSED = [
    ([COMPACT, {"method": "rtn", "bits": 4, "group_size": 32}],
     ["stage 1 (rtn)", "would find no nn.Linear", "stage 0 (wanda)", "compact 2:4", "storage: dense"]),
    # Partial overlap: the compact stage only touches the MLP, gptq would skip those and quantize the rest.
    ([{"method": "magnitude", "pattern": "2:4", "storage": "compact", "targets": r"mlp\."},
      {"method": "gptq", "bits": 4, "group_size": 32}],
     ["stage 1 (gptq)", "stage 0 (magnitude)", "mlp.gate_proj", "put the compact stage last"]),
    ([{"method": "rtn", "bits": 8, "group_size": -1}, {"method": "wanda", "sparsity": 0.5}],
     ["stage 1 (wanda)", "stage 0 (rtn)", "already quantized", "before quantization"]),
    ([{"method": "fp8"}, {"method": "svd", "rank": 16}],
     ["stage 1 (svd)", "stage 0 (fp8)", "already quantized"]),
    # Distillation trains nn.Linear weights: after a final format there is nothing (or less) to train.
    ([{"method": "hqq", "bits": 4, "group_size": 64}, {"method": "distill", "steps": 2}],
     ["stage 1 (distill)", "stage 0 (hqq)", "already quantized"]),
    ([COMPACT, {"method": "distill", "steps": 2}], ["stage 1 (distill)", "stage 0 (wanda)", "storage: dense"]),
    # Low-rank leaves nn.Linear factors named `<name>.down` / `<name>.up`; `q_proj$` matches neither.
    ([{"method": "svd", "rank": 16}, {"method": "rtn", "bits": 4, "group_size": 16, "targets": r"q_proj$"}],
     ["stage 1 (rtn)", "stage 0 (svd)", "self_attn.q_proj.down", "targets"]),
    # Three stages: the check remembers stage 0 at stage 2 too.
    ([COMPACT, {"method": "kivi", "bits": 4, "group_size": 32}, {"method": "rtn", "bits": 4, "group_size": 32}],
     ["stage 2 (rtn)", "stage 0 (wanda)"]),
]


@pytest.mark.parametrize(("recipe", "fragments"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_stack_onto_a_final_format_is_refused_before_any_work(recipe, fragments):
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RecipeError) as info:
        compress(model, recipe)  # no calibration given: the check must fire before it is needed
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)
    after = model.state_dict()
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)


CALIB = random_tokens(4, 32)

# Valid stacks: every stage acts on at least one module, and the modules a weight stage targets
# are of the type the previous stage left.
VALID = [
    [{"method": "wanda", "pattern": "2:4"}, {"method": "rtn", "bits": 4, "group_size": 32}],  # dense storage
    [{"method": "magnitude", "pattern": "2:4", "storage": "compact", "targets": r"mlp\."},
     {"method": "rtn", "bits": 4, "group_size": 32, "targets": r"self_attn\."}],  # no overlap
    [{"method": "smoothquant", "targets": r"self_attn\."}, {"method": "rtn", "bits": 4, "group_size": 32,
                                                              "targets": r"mlp\."}],
    [{"method": "magnitude", "sparsity": 0.5}, {"method": "distill", "steps": 2, "seq_len": 16},
     {"method": "rtn", "bits": 8, "group_size": -1}],
    [{"method": "rtn", "bits": 4, "group_size": 32}, {"method": "kivi", "bits": 4, "group_size": 32}],
    [COMPACT, {"method": "streaming", "window": 16}],
    # Structured pruning leaves smaller nn.Linear: group 32 divides the pruned widths (64, 192).
    [{"method": "structured", "heads_fraction": 0.5, "mlp_fraction": 0.25}, {"method": "rtn", "bits": 4,
                                                                             "group_size": 32}],
    # Low-rank factors are nn.Linear: default targets find `<name>.down` and `<name>.up`.
    [{"method": "svd", "rank": 16}, {"method": "rtn", "bits": 4, "group_size": 16}],
    # ... and a regex may name the factors, which the model does not have before svd runs.
    [{"method": "svd", "rank": 16}, {"method": "rtn", "bits": 4, "group_size": 16, "targets": r"\.(down|up)$"}],
]


@pytest.mark.parametrize("recipe", VALID, ids=lambda r: "->".join(s["method"] for s in r))
def test_valid_stacks_run_every_stage(recipe):
    model = tiny_llama()
    load_recipe(recipe).check(model)
    model, report = compress(model, recipe, calibration=CALIB)
    assert len(report.stages) == len(recipe)
    for stage in report.stages:
        if stage.kind != "kv":
            assert stage.n_modules > 0, f"stage {stage.index} ({stage.method}) acted on nothing"


def test_low_rank_factors_are_the_declared_linear_children():
    """Recipe.check predicts `<name>.down` / `<name>.up` from the config, without running svd."""
    from compressor.engine.methods.lowrank import SVDConfig

    assert SVDConfig().linear_children("lowrank") == ("down", "up")
    mod = LowRankLinear(up=nn.Linear(4, 8).weight.detach(), down=nn.Linear(16, 4).weight.detach())
    assert {n for n, m in mod.named_children() if isinstance(m, nn.Linear)} == {"down", "up"}


@pytest.mark.parametrize(("stage", "final"), [
    ({"method": "rtn", "bits": 4, "group_size": 32}, True),
    ({"method": "hqq", "bits": 4, "group_size": 32}, True),
    ({"method": "fp8"}, True),
    ({"method": "magnitude", "sparsity": 0.5}, False),
    ({"method": "magnitude", "pattern": "2:4", "storage": "compact"}, True),
    ({"method": "svd", "rank": 16}, False),
])
def test_declared_final_format_matches_what_the_stage_leaves(stage, final):
    """The declaration Recipe.check reads agrees with the module types a real run leaves behind."""
    model = tiny_llama()
    recipe = load_recipe([stage])
    cfg, kind = recipe.stages[0], METHODS[stage["method"]].kind
    targets = list(cfg.resolve(model))
    compress(model, recipe)
    left = {n: model.get_submodule(n) for n in targets}
    assert (cfg.final_format(kind) is not None) == final
    if final:
        assert not any(isinstance(m, nn.Linear) for m in left.values())
    elif cfg.linear_children(kind):
        for m in left.values():
            assert isinstance(m, nn.Linear) or all(isinstance(getattr(m, c), nn.Linear)
                                                   for c in cfg.linear_children(kind))
    else:
        assert all(isinstance(m, nn.Linear) for m in left.values())


# --- the run-time guard: a method that does not declare its final format ---------------------------


class _Opaque(nn.Module):
    """Holds a linear's weight without being (or containing) an nn.Linear, and declares nothing."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.weight = nn.Parameter(linear.weight.detach().clone(), requires_grad=False)

    def forward(self, x):  # x: [..., K] -> [..., N]
        return nn.functional.linear(x, self.weight)


@dataclass
class _OpaqueConfig(StageConfig):
    kind: ClassVar[str] = "prune"


def _apply_opaque(cfg, ctx) -> None:
    for name, linear in ctx.targets().items():
        ctx.replace(name, _Opaque(linear))


def test_a_weight_stage_that_finds_no_linear_at_run_time_fails_loudly(monkeypatch):
    _OpaqueConfig.method = "opaque-test"
    monkeypatch.setitem(METHODS, "opaque-test", MethodSpec("opaque-test", _OpaqueConfig, _apply_opaque))
    recipe = [{"method": "opaque-test"}, {"method": "rtn", "bits": 4, "group_size": 32}]
    model = tiny_llama()
    load_recipe(recipe).check(model)  # undeclared: the check cannot see it coming
    with pytest.raises(RecipeError) as info:
        compress(model, recipe)
    msg = str(info.value)
    assert "stage 1 (rtn)" in msg and "no nn.Linear" in msg
    assert "_Opaque" in msg and "stage 0 (opaque-test)" in msg


def test_distill_after_quantization_of_other_modules_is_refused_before_any_work():
    """Distillation backpropagates through the packed layers too (no backward there), so even a
    non-overlapping quantize stage before it cannot work: refused by Recipe.check, not mid-run."""
    model = tiny_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recipe = [{"method": "rtn", "bits": 4, "group_size": 32, "targets": r"mlp\."},
              {"method": "distill", "steps": 2, "seq_len": 16, "targets": r"self_attn\."}]
    with pytest.raises(RecipeError, match=r"stage 1 \(distill\).*cannot follow stage 0 \(rtn\).*before quantization"):
        compress(model, recipe, calibration=random_tokens(4, 32))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("recipe, where", [
    ([{"method": "structured", "heads_fraction": 0.0, "mlp_fraction": 0.25},
      {"method": "rtn", "group_size": 128, "group_fallback": False}], "down_proj"),
    ([{"method": "svd", "rank": 32, "targets": r"mlp\.up_proj"}, {"method": "rtn", "group_size": 64,
                                                                 "group_fallback": False}], "up_proj.up"),
])
def test_a_group_size_that_no_longer_divides_after_a_shape_change_names_the_module(recipe, where):
    with pytest.raises(RecipeError, match=rf"stage 1 \(rtn\).*{where}.*after the earlier stages changed its shape"):
        compress(tiny_llama(), recipe, calibration=random_tokens(4, 32))


def test_a_calibrated_stage_cannot_reach_modules_outside_the_decoder_layers():
    calib = random_tokens(4, 32)
    with pytest.raises(RecipeError, match=r"stage 0 \(gptq\).*only modules outside the decoder layers.*lm_head"):
        compress(tiny_llama(), [{"method": "gptq", "targets": "lm_head", "ignore": []}], calibration=calib)
    model, report = compress(tiny_llama(), [{"method": "wanda", "sparsity": 0.5, "ignore": [r"embed"]}],
                             calibration=calib)
    assert any("outside the decoder layers were left as they are (lm_head)" in w for w in report.warnings)
    assert float((model.lm_head.weight == 0).float().mean()) == 0.0  # untouched, and the report says so


def test_structured_pruning_refuses_projections_an_earlier_stage_replaced():
    recipe = [{"method": "svd", "rank": 16, "targets": r"q_proj"}, {"method": "structured", "heads_fraction": 0.5}]
    with pytest.raises(RecipeError, match=r"q_proj is a LowRankLinear: structured pruning slices plain nn.Linear"):
        compress(tiny_llama(kv_heads=2), recipe, calibration=random_tokens(4, 32))


def test_structured_rounding_that_misses_the_fraction_is_reported():
    _, report = compress(tiny_llama(heads=4, kv_heads=2), [{"method": "structured", "heads_fraction": 0.25,
                                                              "mlp_fraction": 0.0}], calibration=random_tokens(4, 32))
    assert any("heads_fraction 0.25 removed 0 of 2 KV groups (0%)" in w for w in report.warnings)


def test_structured_pruning_names_fused_projections_instead_of_crashing():
    from transformers import Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    model = Phi3ForCausalLM(Phi3Config(vocab_size=256, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                                       pad_token_id=0, bos_token_id=0, eos_token_id=0)).eval()
    with pytest.raises(RecipeError, match=r"fuses its projections \(qkv_proj\).*use unstructured or N:M"):
        compress(model, [{"method": "structured", "heads_fraction": 0.5}], calibration=random_tokens(4, 32))


def test_a_module_the_calibration_never_reaches_is_a_clear_error():
    from torch import nn as tnn

    model = tiny_llama()
    model.model.layers[0].mlp.unused_expert = tnn.Linear(128, 128)  # never called in forward, like a cold MoE expert
    with pytest.raises(RecipeError, match=r"received no calibration input \(model\.layers\.0\.mlp\.unused_expert\)"):
        compress(model, [{"method": "gptq", "bits": 4, "group_size": 32}], calibration=random_tokens(4, 32))
