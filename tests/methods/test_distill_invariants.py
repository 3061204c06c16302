"""Distillation invariants: the loss is Hinton's T^2 * KL, hidden_mse counts, and only the targeted
linears change; the student's mode and requires_grad flags, the teacher, norms and pruned zeros do not."""

from __future__ import annotations

import copy

import pytest
import torch

from compressor.engine.methods.distill import DistillConfig, distill, kd_loss
from tests.helpers import random_tokens
from tests.methods.test_distill import _pruned_pair

# the linears test_distill._pruned_pair prunes to 60% in each layer of its student
PRUNED = ("self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def _cfg(**kw) -> DistillConfig:
    return DistillConfig(**{"steps": 8, "lr": 1e-3, "batch_size": 4, "seq_len": 32, **kw})


@pytest.mark.parametrize("temperature", [1.0, 2.0, 3.5])
def test_kd_loss_is_t_squared_kl_teacher_to_student(temperature):
    g = torch.Generator().manual_seed(0)
    zs, zt = torch.randn(2, 5, 11, generator=g) * 3, torch.randn(2, 5, 11, generator=g) * 3  # (B, L, V)
    p = torch.softmax(zt.double() / temperature, dim=-1)
    q = torch.softmax(zs.double() / temperature, dim=-1)
    kl = (p * (p.log() - q.log())).sum(dim=-1).mean()  # mean over the 10 tokens
    expected = temperature**2 * kl
    torch.testing.assert_close(kd_loss(zs, zt, temperature).double(), expected, rtol=1e-5, atol=1e-7)
    assert kd_loss(zt, zt, temperature).abs().item() < 1e-6


def test_hidden_mse_changes_the_loss_and_the_trained_weights():
    tokens = random_tokens(8, 32)
    runs = {}
    for w in (0.0, 1.0):
        student, teacher = _pruned_pair()
        out = distill(student, teacher, tokens, _cfg(hidden_mse=w))
        runs[w] = (out, student)
    (out0, s0), (out1, s1) = runs[0.0], runs[1.0]
    # same seed, same first batch, same untrained student: the hidden term only adds to the loss
    assert out1["losses"][0] > out0["losses"][0] + 1e-4
    changed = [n for (n, a), b in zip(s0.named_parameters(), s1.parameters(), strict=True) if not torch.equal(a, b)]
    assert any("layers.0.mlp" in n for n in changed)


@pytest.mark.parametrize("training", [False, True])
def test_student_mode_and_requires_grad_flags_are_restored(training):
    student, teacher = _pruned_pair()
    student.train(training)
    params = dict(student.named_parameters())
    for i, p in enumerate(params.values()):  # a mixture, so "all True" or "all False" afterwards is caught
        p.requires_grad_(i % 2 == 0)
    flags = {n: p.requires_grad for n, p in params.items()}
    modes = {n: m.training for n, m in student.named_modules()}
    distill(student, teacher, random_tokens(8, 32), _cfg(steps=2))
    assert {n: p.requires_grad for n, p in student.named_parameters()} == flags
    assert {n: m.training for n, m in student.named_modules()} == modes
    assert all(p.grad is None for p in student.parameters())


def test_only_targeted_linears_change_and_every_pruned_zero_stays_zero():
    student, teacher = _pruned_pair()
    tokens = random_tokens(8, 32)
    before = copy.deepcopy(student.state_dict())
    teacher_before = copy.deepcopy(teacher.state_dict())
    teacher_flags = {n: p.requires_grad for n, p in teacher.named_parameters()}
    out = distill(student, teacher, tokens, _cfg())
    assert out["masked_modules"] == 2 * len(PRUNED)
    after = student.state_dict()
    for i in range(len(student.model.layers)):
        for name in PRUNED:
            key = f"model.layers.{i}.{name}.weight"
            zeros = before[key] == 0
            assert zeros.float().mean().item() == pytest.approx(0.6, abs=0.01), key
            assert (after[key][zeros] == 0).all(), key
            assert not torch.equal(after[key], before[key]), key  # trained
    for key, value in before.items():
        if "norm" in key or "embed" in key or "lm_head" in key:
            assert torch.equal(after[key], value), key
    for key, value in teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), key
    assert {n: p.requires_grad for n, p in teacher.named_parameters()} == teacher_flags
    assert not teacher.training


def test_distill_targets_limit_what_is_trained():
    student, teacher = _pruned_pair()
    before = copy.deepcopy(student.state_dict())
    out = distill(student, teacher, random_tokens(8, 32), _cfg(targets=r"layers\.1\.mlp\."))
    assert out["trained_modules"] == 3 and out["masked_modules"] == 3
    for key, value in student.state_dict().items():
        trained = key.startswith("model.layers.1.mlp.")
        assert torch.equal(value, before[key]) != trained, key
