"""The sequential calibration pipeline, as in GPTQ and llm-compressor.

    capture the inputs of decoder layer 0 (hidden states + every other arg: rotary embeddings, masks)
    for i in layers:
        apply(cfg, LayerContext(layer i))   # the method gathers statistics and replaces modules
        outputs = compressed layer i (inputs)   -> inputs of layer i + 1

Peak memory on top of the model: the layer's statistics plus three copies of the hidden states
(inputs, reference outputs, compressed outputs). Errors of earlier layers propagate into the inputs
of later ones, which is what lets GPTQ-style methods correct them.

Decoder layers are found generically: the ModuleList of identical blocks holding the most parameters.
Layer arguments are captured with a forward pre-hook (`with_kwargs=True`) on the first layer and
reused for every layer, which holds for models whose layers share position embeddings and masks
(Llama, Mistral, Qwen, GPT-NeoX, ...); models that give layers different masks (alternating
sliding-window attention) would need per-layer capture.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager

import torch
from torch import nn

from compressor.engine.hessian import STATS_DTYPE, HessianAccumulator
from compressor.engine.quant import sqnr_db
from compressor.errors import RecipeError

# Tokens kept per module by `input_activations` unless the caller asks otherwise.
DEFAULT_MAX_ACTIVATION_TOKENS = 8192
# Calibration rows run through a layer at once: about this many tokens per forward.
TOKENS_PER_BATCH = 2048


class _StopForward(Exception):
    """Raised by the capture hook: nothing after the first decoder layer needs to run."""


def find_decoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """(qualified name, ModuleList) of the decoder layers: the largest ModuleList of identical blocks."""
    best, best_params = None, 0
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and len({type(m) for m in mod}) == 1:
            n = sum(p.numel() for p in mod.parameters())
            if n > best_params:
                best, best_params = (name, mod), n
    if best is None:
        raise ValueError(f"{type(model).__name__} has no ModuleList of identical decoder layers: calibrated "
                         "methods need a transformer with a list of decoder blocks")
    return best


@contextmanager
def hooks(modules: dict[str, nn.Module], fn: Callable[[str, torch.Tensor], None]):
    """Forward hooks calling fn(name, input) on each module; always removed."""
    handles = [m.register_forward_hook(lambda mod, inp, out, n=n: fn(n, inp[0])) for n, m in modules.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, layer: nn.Module, tokens: torch.Tensor
                         ) -> list[tuple[torch.Tensor, tuple, dict]]:
    """Run the model on tokens [n, L] up to `layer`; returns per batch (hidden, other args, kwargs)."""
    captured = []

    def pre_hook(_mod, args, kwargs):
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append((hidden, tuple(args[1:]), dict(kwargs)))
        raise _StopForward

    device = next(model.parameters()).device
    bs = max(1, TOKENS_PER_BATCH // tokens.shape[1])
    handle = layer.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        for batch in tokens.split(bs):
            try:
                model(input_ids=batch.to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return captured


def _run_layer(layer: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict) -> torch.Tensor:
    out = layer(hidden, *args, **kwargs)
    return out[0] if isinstance(out, (tuple, list)) else out


class LayerContext:
    """What a calibrated method (config `needs_calibration`) sees of one decoder layer: the surface of
    compressor/engine/context.py plus the layer's calibration statistics.

    Attributes: `layer` (the module), `index` (0-based), `n_layers`, `prefix` (its qualified name).
    Module names are fully qualified ("model.layers.3.mlp.down_proj").

    Statistics are gathered by running the layer, as it is at the time of the call, on the captured
    calibration inputs. The first full run before any `replace` is kept as the layer's reference
    output, so the pipeline can report the layer's output SQNR without an extra forward.
    """

    def __init__(self, layer: nn.Module, index: int, n_layers: int, prefix: str, cfg, stage_ctx,
                 inputs: list[tuple[torch.Tensor, tuple, dict]]):
        self.layer, self.index, self.n_layers, self.prefix = layer, index, n_layers, prefix
        self.cfg, self._stage, self._inputs = cfg, stage_ctx, inputs
        self._modified = False
        self.reference_outputs: list[torch.Tensor] | None = None

    # --- selection ---------------------------------------------------------------------------------

    def targets(self) -> dict[str, nn.Linear]:
        """The linear layers of this decoder layer the stage acts on (targets, ignore, skip overrides)."""
        return self.cfg.resolve(self.layer, self.prefix)

    def override_for(self, name: str):
        """The stage config with `name`'s overrides applied, or None when the module is skipped."""
        return self.cfg.override_for(name)

    def module(self, name: str) -> nn.Module:
        return self.layer.get_submodule(name[len(self.prefix) + 1:] if self.prefix else name)

    # --- running the layer -------------------------------------------------------------------------

    @property
    def n_tokens(self) -> int:
        return sum(h.shape[0] * h.shape[1] for h, _, _ in self._inputs)

    @torch.no_grad()
    def _run(self) -> list[torch.Tensor]:
        outs = [_run_layer(self.layer, h, a, k) for h, a, k in self._inputs]
        self._keep_reference(outs)
        return outs

    def forward(self) -> torch.Tensor:
        """Run the layer on the captured calibration inputs; returns outputs [n, L, hidden]."""
        return torch.cat(self._run())

    def inputs(self) -> torch.Tensor:
        """The captured hidden-state inputs of this layer [n, L, hidden]."""
        return torch.cat([h for h, _, _ in self._inputs])

    @torch.no_grad()
    def hessians(self, names: list[str] | None = None) -> dict[str, torch.Tensor]:
        """fp32 H = 2/n X^T X [K, K] of each named linear's inputs (compressor.engine.hessian).

        Modules fed the very same tensor (q/k/v, gate/up) share one accumulation; each gets its own
        copy, so a method may modify its H in place.
        """
        names = list(self.targets()) if names is None else list(names)
        mods = {n: self.module(n) for n in names}
        acc: dict[str, HessianAccumulator] = {}
        alias: dict[str, str] = {}
        seen: dict[int, tuple[torch.Tensor, str]] = {}

        def add(name: str, x: torch.Tensor) -> None:
            hit = seen.get(id(x))
            if hit is not None and hit[0] is x and hit[1] != name:
                alias[name] = hit[1]
                return
            seen[id(x)] = (x, name)
            if name not in acc:
                acc[name] = HessianAccumulator(x.shape[-1], x.device)
            acc[name].add(x)

        outs = []
        with hooks(mods, add):
            for h, a, k in self._inputs:
                seen.clear()
                outs.append(_run_layer(self.layer, h, a, k))
        self._keep_reference(outs)
        self._check_reached([n for n in names if n not in acc and n not in alias])
        return {n: (acc[alias[n]].H.clone() if n in alias else acc[n].H) for n in names}

    @torch.no_grad()
    def input_activations(self, names: list[str] | None = None,
                          max_tokens: int | None = DEFAULT_MAX_ACTIVATION_TOKENS) -> dict[str, torch.Tensor]:
        """Inputs of each named linear, fp32 [n_tokens, in_features], evenly subsampled to max_tokens."""
        names = list(self.targets()) if names is None else list(names)
        mods = {n: self.module(n) for n in names}
        chunks: dict[str, list[torch.Tensor]] = {n: [] for n in names}
        total = self.n_tokens
        stride = 1 if max_tokens is None or total <= max_tokens else -(-total // max_tokens)

        def keep(name: str, x: torch.Tensor) -> None:
            chunks[name].append(x.reshape(-1, x.shape[-1])[::stride].to(STATS_DTYPE))  # (n_b, K)

        with hooks(mods, keep):
            outs = [_run_layer(self.layer, h, a, k) for h, a, k in self._inputs]
        self._keep_reference(outs)
        self._check_reached([n for n, c in chunks.items() if not c])
        return {n: torch.cat(c) for n, c in chunks.items()}

    def _check_reached(self, unreached: list[str]) -> None:
        """A calibrated method needs inputs for every module it acts on; a module the calibration
        tokens never reach (an MoE expert no token was routed to) cannot be calibrated."""
        if unreached:
            raise RecipeError("calibration", f"{self.n_tokens} tokens", f"{len(unreached)} targeted module(s) received "
                              f"no calibration input ({', '.join(unreached[:3])}): use more calibration samples, "
                              "or leave those modules out with ignore / a calibration-free method", self.prefix)

    def _keep_reference(self, outs: list[torch.Tensor]) -> None:
        if not self._modified and self.reference_outputs is None:
            self.reference_outputs = outs

    # --- results -----------------------------------------------------------------------------------

    def replace(self, name: str, module: nn.Module) -> None:
        """Put `module` in place of the named submodule (bytes before/after go to the report)."""
        self._modified = True
        self._stage.replace(name, module)

    def record(self, name: str, **metrics) -> None:
        """Per-module report entries: sqnr_db, bits, group_size, seconds, sparsity, anything else."""
        self._stage.record(name, **metrics)

    def warn(self, message: str) -> None:
        """A report warning (see StageContext.warn)."""
        self._stage.warn(message)

    def progress(self, done: float, total: float, message: str = "") -> None:
        """Progress within this layer: `done` of `total` steps."""
        fraction = done / total if total else 1.0
        self._stage.progress(self.index + min(max(fraction, 0.0), 1.0), self.n_layers, message)


@torch.no_grad()
def run_sequential(model: nn.Module, apply: Callable, cfg, tokens: torch.Tensor, stage_ctx) -> list[dict]:
    """`apply(cfg, layer_ctx)` layer by layer; returns one dict per decoder layer (sqnr_db, seconds)."""
    prefix, layers = find_decoder_layers(model)
    for warning in cfg.plan_warnings(model):  # once for the whole model, before any layer changes
        stage_ctx.warn(warning)
    stage_ctx.progress(0, len(layers), "capturing layer inputs")
    inputs = capture_layer_inputs(model, layers[0], tokens)
    summary = []
    for i, layer in enumerate(layers):
        t0 = time.perf_counter()
        lctx = LayerContext(layer, i, len(layers), f"{prefix}.{i}" if prefix else str(i), cfg, stage_ctx, inputs)
        if lctx.targets():
            apply(cfg, lctx)
        outs = lctx._run()
        ref = lctx.reference_outputs
        layer_sqnr = sqnr_db(torch.cat(ref), torch.cat(outs)) if ref is not None and lctx._modified else None
        inputs = [(o, a, k) for o, (_, a, k) in zip(outs, inputs, strict=True)]
        seconds = time.perf_counter() - t0
        summary.append({"index": i, "name": lctx.prefix, "output_sqnr_db": layer_sqnr, "seconds": seconds})
        stage_ctx.progress(i + 1, len(layers), f"layer {i + 1}/{len(layers)}")
    return summary
