"""The sensitivity map: for every quantizable module and candidate format, the KL it is predicted to
cost the model, and the bytes it stores.

Estimator ("fisher-diagonal"): with F the diagonal of the model's Fisher information on calibration
text (compressor/fit/stats.py: one backward pass per sequence, labels sampled from the model) and
E = RTN(W) - W the module's quantization error in a format,

    predicted KL (nats per token) = 1/(2 L) * sum_ij F_ij E_ij**2            (L tokens per sequence)

the second-order term of the KL to the unchanged model (the first-order term is zero at the model's
own distribution). It weighs each weight's error by how much the model's *output distribution*
depends on it, which a layer's own output error cannot see (a down_proj whose output the residual
stream dwarfs, a head whose errors hit the logits directly). A recipe's predicted KL is the sum over
its modules: errors of different modules are independent, so the cross terms vanish in expectation.
HAWQ-V2 (arXiv:1911.03852) and ModelOpt's AutoQuantize use the same kind of Fisher/gradient score.

Why not the alternatives: the KL of the model with only one module compressed is exact but costs one
evaluation per (module, format), ~2,500 for SmolLM2; the layer-Hessian error tr(E H E^T) costs a
K x K product per (module, format) and still needs an output sensitivity. Here the statistics take
n_sequences backward passes whatever the palette, and each (module, format) is one quantization
of its weight and a weighted sum. Two cheaper scores are kept beside it for comparison (`alt`):
"act" (output error with the inputs' mean squares, no downstream sensitivity) and "mse" (weight
error alone); benchmarks/fit_smollm2.py reports how well each one ranks real recipes.

Maps are cached as JSON in <data>/fit/, keyed by the weights, the calibration tokens, the palette and
the estimator's version.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from compressor.engine.quant import fake_quant
from compressor.fit.formats import FP, Format, format_bytes, palette
from compressor.fit.stats import collect_fisher

ESTIMATOR = "fisher-diagonal"
VERSION = 1  # bump when what a map holds, or how a cost is computed, changes
# A tied head can only be quantized together with its embedding, by the stage that shares their storage.
TIED_METHOD = "embedding"
TIED_NOTE = ("tied to the input embedding: quantizing the head alone keeps the float embedding beside it and "
             "stores more bytes, so it stays float unless the recipe quantizes both together")
_LAYER = re.compile(r"\.(\d+)\.")


@dataclass
class ModuleCost:
    """One candidate module: its shape, predicted KL per format (`costs`, nats per token), the other
    scores (`alt`: estimator -> format -> score) and the formats the allocator may give it."""

    name: str
    layer: int | None
    role: str  # the name without its layer: "self_attn.q_proj", "mlp.down_proj", "lm_head"
    out_features: int
    in_features: int
    bias: bool
    tied: bool
    costs: dict[str, float]
    alt: dict[str, dict[str, float]] = field(default_factory=dict)
    allowed: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def params(self) -> int:
        return self.out_features * self.in_features

    def bytes(self, fmt: str, float_bytes: int) -> int:
        return format_bytes(Format.parse(fmt), self.out_features, self.in_features, float_bytes=float_bytes,
                            bias=self.bias)


@dataclass
class SensitivityMap:
    """What the allocator needs, without the model: costs and shapes of every candidate module, the float
    elements outside them (norms, an untied embedding), and the KV cache's size per token."""

    model: str
    key: str
    calibration: dict
    formats: list[str]
    modules: list[ModuleCost]
    fixed_float_params: int
    model_float_bytes: int
    kv_values_per_token: int  # keys + values of one token, all layers (x bytes per element = KV bytes)
    n_layers: int
    seconds: dict = field(default_factory=dict)
    estimator: str = ESTIMATOR
    version: int = VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> SensitivityMap:
        d = dict(d)
        d["modules"] = [ModuleCost(**m) for m in d["modules"]]
        return cls(**d)

    def by_name(self) -> dict[str, ModuleCost]:
        return {m.name: m for m in self.modules}


# --- which modules are candidates -----------------------------------------------------------------


def tied_head(model: nn.Module) -> bool:
    """True when the output head and the input embedding share one weight tensor."""
    out, inp = model.get_output_embeddings(), model.get_input_embeddings()
    return out is not None and inp is not None and out.weight is inp.weight


def candidate_modules(model: nn.Module) -> dict[str, nn.Linear]:
    """Every nn.Linear of the model, the output head included, by qualified name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}


def _tied_allowed() -> bool:
    from compressor.engine.registry import load_methods

    return TIED_METHOD in load_methods()


# --- cache ----------------------------------------------------------------------------------------


def weights_digest(model: nn.Module, samples: int = 4096) -> str:
    """sha256 of every parameter's name, shape, dtype and `samples` evenly spaced values: two models that
    differ anywhere in a tensor (a fine-tune, another quantization) differ in its samples."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // samples)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(flat[::step].float().cpu().numpy().tobytes())
    return h.hexdigest()


def cache_key(model: nn.Module, tokens: torch.Tensor, formats: list[Format], seed: int) -> str:
    h = hashlib.sha256(json.dumps({"v": VERSION, "estimator": ESTIMATOR, "formats": [f.name for f in formats],
                                   "seed": seed, "tied_method": _tied_allowed()}).encode())
    h.update(weights_digest(model).encode())
    h.update(tokens.to(torch.int64).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def cache_path(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"sensitivity-{key}.json"


def save_map(smap: SensitivityMap, cache_dir: Path) -> Path:
    """Writes the map as JSON (a temporary file renamed into place, so readers never see half a file)."""
    path = cache_path(cache_dir, smap.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(smap.to_dict()))
    tmp.replace(path)
    return path


def load_map(cache_dir: Path, key: str) -> SensitivityMap | None:
    path = cache_path(cache_dir, key)
    if not path.is_file():
        return None
    try:
        smap = SensitivityMap.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError):  # damaged or from another version: measure again
        return None
    return smap if smap.version == VERSION and smap.key == key else None


# --- scoring --------------------------------------------------------------------------------------


@torch.no_grad()
def score_formats(W: torch.Tensor, fisher: torch.Tensor, act_sq: torch.Tensor, formats: list[Format],
                  seq_len: int) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """(predicted KL per format, {"act": ..., "mse": ...}) for a weight W [N, K] with Fisher diagonal
    `fisher` [N, K] and input mean squares `act_sq` [K]. fp costs 0 in every score."""
    W = W.detach().float()
    costs, act, mse = {FP: 0.0}, {FP: 0.0}, {FP: 0.0}
    for fmt in formats:
        E2 = (fake_quant(W, fmt.bits, fmt.group_for(W.shape[1])) - W).pow_(2)  # (N, K)
        costs[fmt.name] = 0.5 * float((fisher * E2).sum()) / seq_len
        act[fmt.name] = 0.5 * float((E2 * act_sq).sum())  # output error per token, inputs as independent
        mse[fmt.name] = float(E2.mean())
    return costs, {"act": act, "mse": mse}


def _role(name: str) -> tuple[int | None, str]:
    m = _LAYER.search(name)
    return (int(m.group(1)), name[m.end():]) if m else (None, name)


def _float_bytes(model: nn.Module) -> int:
    return next(p for p in model.parameters() if p.is_floating_point()).element_size()


def sensitivity_map(model: nn.Module, tokens: torch.Tensor, *, name: str = "", formats: list[Format] | None = None,
                    seed: int = 0, cache_dir: Path | None = None, calibration: dict | None = None,
                    progress: Callable[[float, str], None] | None = None) -> SensitivityMap:
    """The map of `model` on calibration `tokens` [n, L]; read from `cache_dir` when measured before.

    `progress(fraction, message)` hears about the statistics pass (the slow part: one forward and backward
    per sequence) and the scoring. The model is left as it was.
    """
    from compressor.measure.speed import kv_bytes_per_token_from_config

    formats = palette() if formats is None else sorted(formats)
    say = progress or (lambda _f, _m: None)
    key = cache_key(model, tokens, formats, seed)
    if cache_dir is not None and (cached := load_map(cache_dir, key)) is not None:
        say(1.0, "sensitivity map read from the cache")
        return cached
    modules = candidate_modules(model)
    stats = collect_fisher(model, modules, tokens, seed=seed,
                           progress=lambda i, n: say(0.8 * i / n, f"Fisher statistics: sequence {i}/{n}"))
    t0 = time.perf_counter()
    tied, tied_ok = tied_head(model), _tied_allowed()
    head = model.get_output_embeddings()
    rows = []
    for i, (qname, mod) in enumerate(modules.items()):
        layer, role = _role(qname)
        is_tied = tied and mod is head
        fits = sorted({f.for_module(mod.in_features) for f in formats if f.fits(mod.in_features)})
        costs, alt = score_formats(mod.weight, stats.fisher[qname], stats.act_sq[qname], fits, stats.seq_len)
        allowed = [FP] if is_tied and not tied_ok else [FP, *(f.name for f in fits)]
        rows.append(ModuleCost(qname, layer, role, mod.out_features, mod.in_features, mod.bias is not None,
                               is_tied, costs, alt, allowed, TIED_NOTE if is_tied and not tied_ok else ""))
        say(0.8 + 0.2 * (i + 1) / len(modules), f"scoring formats: {qname}")
    weights = {id(m.weight) for m in modules.values()} | {id(m.bias) for m in modules.values() if m.bias is not None}
    fixed = sum(p.numel() for p in model.parameters() if id(p) not in weights and p.is_floating_point())
    cfg = model.config
    smap = SensitivityMap(
        model=name or getattr(cfg, "_name_or_path", "") or type(model).__name__, key=key,
        calibration={**(calibration or {}), "n_samples": tokens.shape[0], "seq_len": tokens.shape[1], "seed": seed},
        formats=[FP, *(f.name for f in formats)], modules=rows, fixed_float_params=fixed,
        model_float_bytes=_float_bytes(model),
        kv_values_per_token=kv_bytes_per_token_from_config(cfg, torch.float16) // 2,
        n_layers=cfg.num_hidden_layers,
        seconds={"statistics": round(stats.seconds, 2), "scoring": round(time.perf_counter() - t0, 2)})
    if cache_dir is not None:
        save_map(smap, cache_dir)
    return smap
