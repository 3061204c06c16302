"""Recovery distillation: a short logit distillation of the compressed student against the original.

Hinton, Vinyals & Dean, "Distilling the Knowledge in a Neural Network" (2015),
https://arxiv.org/abs/1503.02531 : the student minimises T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
on the teacher's logits z_t; optionally plus the MSE between the two models' hidden states
(as in TinyBERT / MiniLLM-style layer matching; Sun et al. "Patient Knowledge Distillation",
https://arxiv.org/abs/1908.09355). Used after pruning it is the "recovery" step of e.g. Sheared-LLaMA
and Minitron, here only a few steps on the calibration tokens, feasible on a CPU for the demo model.

Only what the compression left trainable is trained: the float nn.Linear weights the stage targets
(remaining dense weights, the two factors of a low-rank layer). Pruned weights stay zero (their mask
is re-applied after every step), packed quantized weights are buffers and never change, embeddings,
norms and lm_head are frozen unless targeted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from compressor.engine.calibration import DEFAULT_SEQ_LEN
from compressor.engine.registry import register
from compressor.engine.stage import StageConfig
from compressor.errors import RecipeError

# Linears with at least this fraction of exact zeros are treated as pruned: their zeros stay zero.
PRUNED_ZERO_FRACTION = 1e-3
# For plan_warnings: the training throughput of a 2-core CPU (fp32, order of magnitude) and what counts as
# long (about 3 minutes there).
CPU_FLOPS = 50e9
LONG_FLOPS = 1e13


@dataclass
class DistillConfig(StageConfig):
    """Recovery distillation against the uncompressed model, on the calibration tokens.

    Args:
        steps: optimizer steps (each on `batch_size` calibration sequences).
        lr: AdamW learning rate.
        temperature: softmax temperature T of the KL (the loss is scaled by T^2).
        hidden_mse: weight of the hidden-state MSE term (0 = logits only); needs equal hidden sizes.
        batch_size: sequences per step.
        seq_len: tokens per sequence (calibration windows are cut to this length).
        targets / ignore / overrides: which linear layers are trained (default all but lm_head).
    """

    kind: ClassVar[str] = "distill"
    needs_teacher: ClassVar[bool] = True

    steps: int = 100
    lr: float = 1e-4
    temperature: float = 2.0
    hidden_mse: float = 0.0
    batch_size: int = 4
    seq_len: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        stage = self.method or "distill"
        for name, lo, hi in (("steps", 1, 100_000), ("batch_size", 1, 1024), ("seq_len", 8, 32_768)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise RecipeError(name, v, f"use an integer in [{lo}, {hi}]", stage)
        if not (isinstance(self.lr, (int, float)) and 0 < self.lr <= 1):
            raise RecipeError("lr", self.lr, "use a learning rate in (0, 1], e.g. 1e-4", stage)
        if not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise RecipeError("temperature", self.temperature, "use a positive temperature, e.g. 2.0", stage)
        if not (isinstance(self.hidden_mse, (int, float)) and self.hidden_mse >= 0):
            raise RecipeError("hidden_mse", self.hidden_mse, "use a weight >= 0 (0 turns it off)", stage)

    def plan_warnings(self, model: nn.Module) -> list[str]:
        """An estimate of the cost when it is long: a step runs the teacher forward and the student
        forward and backward, about 8 x parameters FLOPs per token."""
        n_params = sum(p.numel() for p in model.parameters())
        tokens = self.steps * self.batch_size * min(self.seq_len, DEFAULT_SEQ_LEN)
        flops = 8 * n_params * tokens
        if flops < LONG_FLOPS:
            return []
        minutes = flops / CPU_FLOPS / 60
        return [f"distillation trains through {n_params / 1e6:.0f}M parameters for {self.steps} steps of "
                f"{self.batch_size} x {min(self.seq_len, DEFAULT_SEQ_LEN)} tokens: about {flops / 1e12:.0f} TFLOP, "
                f"roughly {minutes:.0f} minutes on a 2-core CPU (estimated at {CPU_FLOPS / 1e9:.0f} GFLOP/s); fewer "
                "steps, a smaller batch_size or seq_len cut it in proportion"]

    def check_stack(self, earlier: list[StageConfig], where: str) -> None:
        quantized = [j for j, cfg in enumerate(earlier) if cfg.kind == "quantize"]
        if quantized:
            j = quantized[0]
            raise RecipeError("method", self.method, f"cannot follow stage {j} ({earlier[j].method}): "
                              "distillation backpropagates through every layer and packed low-bit layers "
                              "have no backward pass; put distill before quantization (prune -> distill "
                              "-> quantize)", where)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(teacher || student) of the temperature-softened distributions, mean over tokens."""
    V = student_logits.shape[-1]
    log_q = F.log_softmax(student_logits.reshape(-1, V).float() / temperature, dim=-1)  # (tokens, V)
    log_p = F.log_softmax(teacher_logits.reshape(-1, V).float() / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


@torch.no_grad()
def kl_to_teacher(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor, batch_size: int = 8) -> float:
    """Mean per-token KL(teacher || student) at temperature 1 over `tokens` [n, L]."""
    total, count = 0.0, 0
    for i in range(0, tokens.shape[0], batch_size):
        ids = tokens[i:i + batch_size]
        kl = kd_loss(student(ids).logits, teacher(ids).logits, 1.0)
        total += kl.item() * ids.numel()
        count += ids.numel()
    return total / count


def trainable_linears(student: nn.Module, cfg: StageConfig) -> dict[str, nn.Linear]:
    """The float nn.Linear modules the stage trains (targeted by cfg, weights a floating Parameter)."""
    return {n: m for n, m in cfg.resolve(student).items()
            if isinstance(m.weight, nn.Parameter) and m.weight.is_floating_point()}


def distill(student: nn.Module, teacher: nn.Module, tokens: torch.Tensor, cfg: DistillConfig,
            progress: Callable[[int, float], None] | None = None) -> dict:
    """Train `student` toward `teacher` on `tokens` [n, L] for cfg.steps steps, in place.

    Returns metrics: kl_before / kl_after (temperature 1, on `tokens`), loss per step, the number of
    trained parameters, pruned masks kept, seconds. `progress(step, loss)` is called after each step.
    """
    if tokens.dim() != 2 or tokens.shape[1] < 2:
        raise RecipeError("calibration", tuple(tokens.shape), "distillation needs token windows [n, L>=2]", "distill")
    device = next(student.parameters()).device
    tokens = tokens[:, :cfg.seq_len].to(device)  # calibration tokens come on the CPU; the model may not be
    linears = trainable_linears(student, cfg)
    if not linears:
        raise RecipeError("targets", cfg.targets, "matches no float nn.Linear left to train (quantized layers "
                          "are frozen): put distill before quantization, or widen targets", "distill")
    params = [m.weight for m in linears.values()] + [m.bias for m in linears.values() if m.bias is not None]
    masks = {}
    for name, m in linears.items():
        zero = m.weight.detach() == 0
        if zero.float().mean().item() >= PRUNED_ZERO_FRACTION:
            masks[name] = ~zero
    use_hidden = cfg.hidden_mse > 0
    if use_hidden and student.config.hidden_size != teacher.config.hidden_size:
        raise RecipeError("hidden_mse", cfg.hidden_mse, "student and teacher hidden sizes differ; use 0", "distill")

    was_grad = {p: p.requires_grad for p in student.parameters()}
    was_training = student.training
    t0 = time.perf_counter()
    kl_before = kl_to_teacher(student, teacher, tokens)
    losses = []
    try:
        for p in student.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
        student.train()  # Llama has no dropout; train() only matters for models that do
        g = torch.Generator().manual_seed(0)
        for step in range(cfg.steps):
            idx = torch.randint(0, tokens.shape[0], (min(cfg.batch_size, tokens.shape[0]),), generator=g).to(device)
            ids = tokens[idx]  # (B, L)
            with torch.no_grad():
                t_out = teacher(ids, output_hidden_states=use_hidden)
            s_out = student(ids, output_hidden_states=use_hidden)
            loss = kd_loss(s_out.logits, t_out.logits, cfg.temperature)
            if use_hidden:
                # hidden_states[0] is the shared embedding output: match the decoder layers' outputs.
                mse = sum(F.mse_loss(s.float(), t.float()) for s, t in
                          zip(s_out.hidden_states[1:], t_out.hidden_states[1:], strict=True))
                loss = loss + cfg.hidden_mse * mse / (len(s_out.hidden_states) - 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, keep in masks.items():
                    linears[name].weight.mul_(keep)
            losses.append(loss.item())
            if progress is not None:
                progress(step + 1, losses[-1])
    finally:
        for p, flag in was_grad.items():
            p.requires_grad_(flag)
        student.train(was_training)
        for p in params:
            p.grad = None
    kl_after = kl_to_teacher(student, teacher, tokens)
    return {"kl_before": kl_before, "kl_after": kl_after, "loss_first": losses[0], "loss_last": losses[-1],
            "losses": losses, "trained_params": sum(p.numel() for p in params), "trained_modules": len(linears),
            "masked_modules": len(masks), "seconds": time.perf_counter() - t0}


@register("distill", DistillConfig)
def apply(cfg: DistillConfig, ctx) -> None:
    """Recipe stage: `compress` hands it `ctx.teacher` (a frozen copy of the model taken before the
    first stage, as the config `needs_teacher`) and `ctx.calibration` (token ids [n, L])."""
    teacher, tokens = getattr(ctx, "teacher", None), getattr(ctx, "calibration", None)
    if teacher is None or tokens is None:
        raise RecipeError("method", "distill", "a distill stage runs inside compressor.compress(), which gives it "
                          "the original model and calibration tokens; outside it call "
                          "compressor.engine.methods.distill.distill(student, teacher, tokens, DistillConfig(...))")
    for warning in cfg.plan_warnings(ctx.model):  # a long run says so in its report
        ctx.warn(warning)

    def progress(step: int, loss: float) -> None:
        ctx.progress(step, cfg.steps, f"step {step}/{cfg.steps}, loss {loss:.4f}")

    with torch.enable_grad():  # the engine runs stages under no_grad
        out = distill(ctx.model, teacher, tokens, cfg, progress)
    ctx.record("distill", **{k: v for k, v in out.items() if k != "losses"}, loss_curve=out["losses"][::10])
