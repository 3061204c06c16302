"""Recovery distillation: KL to the teacher falls, pruned zeros stay zero, frozen parts stay frozen."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor.engine.methods.distill import DistillConfig, distill
from compressor.engine.methods.prune_magnitude import magnitude_mask
from compressor.errors import RecipeError
from tests.helpers import random_tokens, tiny_llama


def _pruned_pair():
    teacher = tiny_llama(hidden=128, intermediate=256, layers=2)
    with torch.no_grad():  # a random model is nearly uniform: sharpen it so there is something to match
        teacher.lm_head.weight.mul_(20)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for layer in student.model.layers:
            for lin in (layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj, layer.self_attn.o_proj):
                lin.weight.masked_fill_(magnitude_mask(lin.weight, 0.6), 0)
    return student, teacher


@pytest.mark.parametrize("hidden_mse", [0.0, 1.0])
def test_distillation_lowers_kl_and_keeps_masks(hidden_mse):
    student, teacher = _pruned_pair()
    tokens = random_tokens(8, 32)
    zeros_before = student.model.layers[0].mlp.up_proj.weight == 0
    emb_before = student.model.embed_tokens.weight.clone()
    out = distill(student, teacher, tokens, DistillConfig(steps=20, lr=1e-4, batch_size=4, hidden_mse=hidden_mse))
    assert out["kl_after"] < 0.5 * out["kl_before"]
    assert out["masked_modules"] == 8
    assert (student.model.layers[0].mlp.up_proj.weight[zeros_before] == 0).all()
    assert torch.equal(student.model.embed_tokens.weight, emb_before)
    assert out["losses"][-1] < out["losses"][0]
    assert all(p.grad is None for p in student.parameters())


def test_distill_config_errors_name_the_value():
    with pytest.raises(RecipeError, match="steps=0"):
        DistillConfig(steps=0)
    with pytest.raises(RecipeError, match="temperature"):
        DistillConfig(temperature=-1.0)


def test_prune_distill_quantize_runs_as_one_recipe():
    """The engine hands the distill stage a frozen copy of the model from before stage 0."""
    from compressor.engine.compress import compress
    from kernels.modules import QuantLinear

    _, model = _pruned_pair()  # the unpruned, sharpened model
    teacher = copy.deepcopy(model)
    tokens = random_tokens(8, 32)
    recipe = [{"method": "magnitude", "sparsity": 0.5, "targets": r"mlp\."},
              {"method": "distill", "steps": 15, "lr": 3e-5, "batch_size": 4},
              {"method": "rtn", "bits": 8, "group_size": -1}]
    _, report = compress(model, recipe, calibration=tokens)
    row = next(r for r in report.layers if r.name == "distill")
    assert row.extra["kl_after"] < row.extra["kl_before"]
    assert isinstance(model.model.layers[0].mlp.up_proj, QuantLinear)
    # the teacher was the unpruned model: the stack ends closer to it than pruning alone left it
    from compressor.engine.methods.distill import kl_to_teacher

    assert kl_to_teacher(model, teacher, tokens) < row.extra["kl_before"]
