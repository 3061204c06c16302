"""`compress(model, recipe)`: validate the recipe against the model, run its stages in order, report.

Every method is `apply(cfg, ctx)` (compressor/engine/context.py). Calibration-free stages run once, with
a StageContext over the whole model; stages whose config says `needs_calibration` run in the sequential
pipeline (compressor/engine/sequential.py), once per decoder layer, with a LayerContext. Every run ends
with a sanity report: measured bytes, effective bits, per-module error, and a forward pass checked for
non-finite logits.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compressor.engine.calibration import DEFAULT_N_SAMPLES, DEFAULT_SEQ_LEN, calibration_batches
from compressor.engine.context import StageContext
from compressor.engine.packed import packed_type_of
from compressor.engine.recipe import Recipe, load_recipe
from compressor.engine.registry import MethodSpec, get_method
from compressor.engine.report import CompressionReport, StageReport, weight_bytes
from compressor.engine.sequential import find_decoder_layers, run_sequential
from compressor.engine.stage import WEIGHT_KINDS, StageConfig
from compressor.errors import RecipeError
from compressor.progress import EtaClock, Progress, ProgressFn, null_progress

# A module whose SQNR falls below this gets a warning in the report.
LOW_SQNR_DB = 10.0


def _resolve_calibration(model: nn.Module, calibration: Any, tokenizer) -> torch.Tensor:
    if isinstance(calibration, torch.Tensor):
        if calibration.dim() != 2 or calibration.dtype not in (torch.int64, torch.int32):
            raise RecipeError("calibration", f"{calibration.dtype} {tuple(calibration.shape)}",
                              "give integer token ids shaped [n_samples, seq_len]")
        return calibration.long()
    source = "builtin" if calibration is None else calibration
    if not isinstance(source, str):
        raise RecipeError("calibration", type(calibration).__name__,
                          "give a token tensor [n, L], 'builtin', text, or 'hub:<dataset id>'")
    if tokenizer is None:
        tokenizer = _tokenizer_for(model)
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None) or DEFAULT_SEQ_LEN
    return calibration_batches(tokenizer, source, DEFAULT_N_SAMPLES, min(DEFAULT_SEQ_LEN, max_pos))


def _tokenizer_for(model: nn.Module):
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except Exception as e:
        raise RecipeError("calibration", None, "this recipe needs calibration data: pass calibration=<token tensor "
                          f"[n, L]> or tokenizer=... (no tokenizer found for {path!r}: {type(e).__name__})") from None


@torch.no_grad()
def _sanity(model: nn.Module, tokens: torch.Tensor | None, report: CompressionReport) -> None:
    """One small forward: logits must be finite; records which kernel paths ran and the packed module
    types the model now holds (compressor/engine/packed.py), by count."""
    vocab = getattr(getattr(model, "config", None), "vocab_size", 2)
    probe = tokens[:1, :32] if tokens is not None else torch.arange(1, 33).remainder(vocab - 1).add(1)[None]
    device = next(model.parameters()).device
    logits = model(input_ids=probe.to(device), use_cache=False).logits
    finite = bool(torch.isfinite(logits).all())
    paths = sorted({m.kernel_path for m in model.modules() if getattr(m, "kernel_path", None)})
    packed = Counter(t.name for t in map(packed_type_of, model.modules()) if t is not None)
    report.sanity = {"finite_logits": finite, "kernel_paths": paths, "packed_modules": dict(sorted(packed.items()))}
    if not finite:
        report.warnings.append("the compressed model produced non-finite logits on a probe input")
    for r in report.layers:
        if r.sqnr_db is not None and r.sqnr_db < LOW_SQNR_DB:
            report.warnings.append(f"{r.name}: SQNR {r.sqnr_db:.1f} dB ({r.sqnr_basis}) is below {LOW_SQNR_DB} dB")


def _check_shapes_now(targets: dict[str, nn.Module], cfg: StageConfig, spec: MethodSpec, index: int) -> None:
    """Run each target's check_module on the module as earlier stages left it.

    Recipe.check sees the original shapes; structured pruning and low-rank change in_features (a
    group size of 128 cannot divide the 64 channels a pruned down_proj keeps), and without this the
    stage would fail deep in a kernel with a bare ValueError.
    """
    if index == 0 or spec.kind not in WEIGHT_KINDS:
        return
    for name, module in targets.items():
        c = cfg.override_for(name)
        if c is None:
            continue
        try:
            c.check_module(name, module)
        except RecipeError as e:
            raise RecipeError(e.field, e.value, f"{e.hint} (after the earlier stages changed its shape)",
                              f"stage {index} ({cfg.method})") from None


def _check_inside_decoder(model: nn.Module, targets: dict[str, nn.Module], cfg: StageConfig, ctx: StageContext,
                          index: int) -> None:
    """Calibrated stages run layer by layer inside the decoder layers and cannot reach other modules:
    a RecipeError when every target is outside them, a report warning naming the skipped ones otherwise."""
    prefix, _ = find_decoder_layers(model)
    outside = [n for n in targets if not n.startswith(f"{prefix}.")]
    if not outside:
        return
    fix = ("calibrated methods work layer by layer inside the decoder layers; quantize it in its own stage with "
           "a calibration-free method (rtn, hqq), or leave it out with ignore")
    if len(outside) == len(targets):
        raise RecipeError("targets", cfg.targets, f"selects only modules outside the decoder layers "
                          f"({', '.join(outside[:3])}): {fix}", f"stage {index} ({cfg.method})")
    ctx.warn(f"{len(outside)} targeted module(s) outside the decoder layers were left as they are "
             f"({', '.join(outside[:3])}): {fix}")


def _check_targets_left(model: nn.Module, targets: dict[str, nn.Module], cfg: StageConfig, spec: MethodSpec,
                        index: int, report: CompressionReport) -> None:
    """RecipeError when a weight stage is about to find no nn.Linear at all, instead of reporting success.

    Recipe.check refuses the stacks it can foresee from the configs' declarations (final_format,
    linear_children); this catches what it cannot: a method whose output format is undeclared.
    """
    if spec.kind not in WEIGHT_KINDS or targets:
        return
    modules = dict(model.named_modules())
    gone = [(r.name, r.stage, r.method) for r in report.layers if r.stage < index and r.name in modules
            and not isinstance(modules[r.name], nn.Linear) and cfg.override_for(r.name) is not None]
    seen = "earlier stages replaced them"
    if gone:
        name, stage, method = gone[0]
        more = f" (and {len(gone) - 1} more)" if len(gone) > 1 else ""
        seen = f"{name} is a {type(modules[name]).__name__} made by stage {stage} ({method}){more}"
    raise RecipeError("targets", cfg.targets, f"finds no nn.Linear left to act on: {seen}; put this stage before "
                      "that one or remove it (the earlier stages have already changed the model in place)",
                      f"stage {index} ({cfg.method})")


def compress(model: nn.Module, recipe: Any, calibration: Any = None, progress: ProgressFn | None = None, *,
             tokenizer=None, after_stage: Callable[[int, nn.Module], dict] | None = None
             ) -> tuple[nn.Module, CompressionReport]:
    """Compress `model` in place with `recipe`; returns (model, CompressionReport).

    Args:
        model: a causal LM (calibrated stages need a list of decoder layers, e.g. model.model.layers).
        recipe: anything `load_recipe` accepts: a preset name, YAML/JSON text, a path, a dict, a list,
            a stage config or a Recipe.
        calibration: token ids [n_samples, seq_len]; or "builtin" / text / "hub:<id>" tokenized with
            `tokenizer` (default: the model's own, found from its config); None = "builtin" when a
            stage needs calibration (32 x 256 tokens).
        progress: called with compressor.progress.Progress events (stage, layer i/n, fraction, ETA).
        after_stage: called as `after_stage(index, model)` once each stage is done; the dict it returns
            is kept as `report.stages[index].quality`, so a stacked recipe's quality change can be
            attributed to its stages (compressor.runs.runner measures perplexity, KL and arithmetic).

    A recipe with a stage whose config `needs_teacher` (distill) keeps a frozen copy of the model as it
    was before stage 0 (the teacher) until compress returns: weight memory doubles while it runs.
    """
    t_start = time.perf_counter()
    recipe: Recipe = load_recipe(recipe)
    recipe.check(model)
    progress = progress or null_progress
    specs = [get_method(s.method, f"stage {i}") for i, s in enumerate(recipe.stages)]
    report = CompressionReport(recipe=recipe.to_dict(), weight_bytes_before=weight_bytes(model))
    tokens = None
    wants_teacher = any(s.needs_teacher for s in specs)
    if wants_teacher or any(s.needs_calibration for s in specs):
        tokens = _resolve_calibration(model, calibration, tokenizer)
        report.calibration = {"n_samples": tokens.shape[0], "seq_len": tokens.shape[1],
                              "source": "tokens" if isinstance(calibration, torch.Tensor) else (calibration or "builtin")}
    clock = EtaClock()
    n_stages = len(recipe.stages)

    def emit(index: int, stage_fraction: float, message: str, done: float, total: float) -> None:
        fraction = (index + min(max(stage_fraction, 0.0), 1.0)) / n_stages
        layered = specs[index].needs_calibration and total
        progress(Progress(stage=specs[index].name, fraction=fraction, message=message, stage_index=index,
                          n_stages=n_stages, layer=int(done) if layered else None,
                          n_layers=int(total) if layered else None, eta_s=clock.eta(fraction)))

    # A stage that learns from the model as it was before stage 0 (distillation) gets a frozen copy.
    teacher = None
    if wants_teacher:
        teacher = copy.deepcopy(model).eval().requires_grad_(False)
    was_training = model.training
    model.eval()
    try:
        for i, (cfg, spec) in enumerate(zip(recipe.stages, specs, strict=True)):
            ctx = StageContext(model, cfg, spec, i, report, emit, teacher=teacher if spec.needs_teacher else None,
                               calibration=tokens)
            stage = StageReport(index=i, method=spec.name, kind=spec.kind, config=cfg.to_dict())
            report.stages.append(stage)
            emit(i, 0.0, "starting", 0, 0)
            t0 = time.perf_counter()
            # as the earlier stages left the model (kv and distill stages do not act on targets here)
            targets = cfg.resolve(model) if spec.kind in WEIGHT_KINDS else {}
            _check_targets_left(model, targets, cfg, spec, i, report)
            _check_shapes_now(targets, cfg, spec, i)
            with torch.no_grad():
                if spec.needs_calibration:
                    _check_inside_decoder(model, targets, cfg, ctx, i)
                    stage.decoder_layers = run_sequential(model, spec.apply, cfg, tokens, ctx)
                else:
                    spec.apply(cfg, ctx)
            stage.seconds = time.perf_counter() - t0
            stage.n_modules = ctx.n_modules
            if after_stage is not None:
                emit(i, 1.0, "measuring the model after this stage", 0, 0)
                stage.quality = after_stage(i, model) or {}
            emit(i, 1.0, "done", 0, 0)
        _sanity(model, tokens, report)
        # After the probe forward: kernels may adopt a runtime layout lazily, and that is what is held.
        report.weight_bytes_after = weight_bytes(model)
    finally:
        model.train(was_training)
    report.wall_s = time.perf_counter() - t_start
    return model, report
