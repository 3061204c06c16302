"""What a compressed lab model holds, read once into typed weights that every export format consumes.

Each linear layer of the model becomes one of

    IntWeight     the lab's canonical packed format (docs/architecture.md): q [N, K] in [0, 2**b - 1],
                  scales/zeros fp16 [N, K // G], W = (q - zeros) * scales, optional act-order perm [K];
    ScaledWeight  int8 (W8A8, LLM.int8) or float8_e4m3fn (FP8) [N, K] with one fp32 scale per row;
    DenseWeight   a float matrix: an nn.Linear (pruned or not), a low-rank pair folded back (up @ down),
                  a compact 2:4 layer expanded, or a bitsandbytes 4-bit layer dequantized by bitsandbytes.

`lab_dense()` of any of them is the weight the lab computes with, fp32, in the original column order:
the reference every export is measured against. Model-level facts a format may refuse (a KV-cache stage,
per-layer shapes from structured pruning) are read by `model_facts`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn


@dataclass
class IntWeight:
    """The lab's integer weight format. q is in stored column order (permuted when perm is set)."""

    q: torch.Tensor  # uint8 [N, K]
    scales: torch.Tensor  # fp16 [N, K // G]
    zeros: torch.Tensor  # fp16 [N, K // G]
    bits: int
    group_size: int  # columns per group; K for per channel
    perm: torch.Tensor | None = None  # int64 [K]: stored column j is original column perm[j]
    bias: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.q.shape)

    @property
    def symmetric(self) -> bool:
        return bool((self.zeros.float() == 2 ** (self.bits - 1)).all())

    @property
    def integer_zeros(self) -> bool:
        z = self.zeros.float()
        return bool((z == z.round()).all() and (z >= 0).all() and (z <= 2**self.bits - 1).all())

    def describe(self) -> str:
        g = "per channel" if self.group_size == self.q.shape[1] else f"g{self.group_size}"
        kind = "sym" if self.symmetric else ("asym" if self.integer_zeros else "fractional zeros")
        return f"int{self.bits} {g} {kind}" + (" act-order perm" if self.perm is not None else "")

    def stored_dense(self) -> torch.Tensor:
        """(q - zeros) * scales in fp32, in stored (possibly permuted) column order: [N, K]."""
        n, k = self.q.shape
        qg = self.q.float().reshape(n, -1, self.group_size)  # (N, K/G, G)
        w = (qg - self.zeros.float().unsqueeze(-1)) * self.scales.float().unsqueeze(-1)
        return w.reshape(n, k)

    def lab_dense(self) -> torch.Tensor:
        w = self.stored_dense()
        return w if self.perm is None else w[:, torch.argsort(self.perm)]


@dataclass
class ScaledWeight:
    """W = weight * scale[:, None]: int8 in [-127, 127] or float8_e4m3fn, scale fp32 [N]."""

    weight: torch.Tensor  # int8 or float8_e4m3fn [N, K]
    scale: torch.Tensor  # fp32 [N]
    dynamic_int8_inputs: bool  # W8A8: activations quantized per token at run time
    bias: torch.Tensor | None = None
    origin: str = ""

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    @property
    def is_fp8(self) -> bool:
        return self.weight.dtype == torch.float8_e4m3fn

    def describe(self) -> str:
        return self.origin or ("fp8 e4m3 per channel" if self.is_fp8 else "int8 per channel sym")

    def lab_dense(self) -> torch.Tensor:
        return self.weight.float() * self.scale.float().reshape(-1, 1)


@dataclass
class DenseWeight:
    """A float weight [N, K] (kept in its own dtype) and what it came from."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    origin: str = "dense"
    sparsity: float = 0.0  # fraction of exact zeros
    nominal_bits: int | None = None  # a non-integer 4-bit code (NF4, FP4) the lab holds; None for floats
    nominal_group: int | None = None  # its block size

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.weight.shape)

    def describe(self) -> str:
        return self.origin

    def lab_dense(self) -> torch.Tensor:
        return self.weight.float()


LabWeight = IntWeight | ScaledWeight | DenseWeight
# A dense layer counts as pruned from this fraction of exact zeros (trained fp16 weights hold a few by chance).
SPARSE_MIN = 0.01


@dataclass
class ModelFacts:
    """Model-level properties that decide whether a format can hold the model at all."""

    model_type: str
    hidden_size: int = 0
    kv_cache_method: str | None = None  # a KV-cache stage's method name
    pruned_layout: dict | None = None  # structured pruning's per-layer counts
    uniform_layout: dict | None = None  # {config key: value} when every layer has the same counts
    sparsity: dict[str, float] = field(default_factory=dict)  # {linear name: zero fraction} where > 0


def _zero_fraction(w: torch.Tensor) -> float:
    return float((w == 0).float().mean()) if w.numel() else 0.0


def _bias(module: nn.Module) -> torch.Tensor | None:
    b = getattr(module, "bias", None)
    return None if b is None else b.detach().clone()


def _bnb_dense(module: nn.Module) -> DenseWeight | ScaledWeight | None:
    """bitsandbytes layers: LLM.int8 rows (int8 CB, fp32 SCB / 127) or a 4-bit layer dequantized by bnb itself."""
    cls = type(module).__name__
    if not type(module).__module__.startswith("bitsandbytes"):
        return None
    w = module.weight
    if cls == "Linear8bitLt":
        # bitsandbytes 0.50 keeps the int8 rows as the weight's data and the row absmax as a saved "SCB"
        scb = module.state_dict().get("SCB", getattr(w, "SCB", None))
        cb = w.data if w.dtype == torch.int8 else getattr(w, "CB", None)
        if cb is None or scb is None:
            return DenseWeight(w.detach().float(), _bias(module), origin="LLM.int8 (unquantized fp weights)")
        return ScaledWeight(cb.detach().to(torch.int8), scb.detach().float() / 127.0, False, _bias(module),
                            origin="LLM.int8 int8 rows (outlier columns run in fp16 at run time)")
    if cls.startswith("Linear4bit") or cls in ("LinearNF4", "LinearFP4"):
        import bitsandbytes.functional as bnbf

        state = w.quant_state
        dense = bnbf.dequantize_4bit(w.data, state).float()
        return DenseWeight(dense.reshape(module.out_features, module.in_features), _bias(module),
                           origin=f"bitsandbytes {state.quant_type.upper()} (blocks of {state.blocksize})",
                           nominal_bits=4, nominal_group=state.blocksize)
    return None


def read_linear(module: nn.Module) -> LabWeight | None:
    """The typed weight of one linear-like module, or None when `module` is not one."""
    from kernels.modules import FP8Linear, Int8DynamicLinear, QuantLinear

    if isinstance(module, QuantLinear):
        from kernels.pack import unpack

        sd = module.state_dict()  # canonical layout whatever the runtime one
        q = unpack(sd["qweight"], module.bits, module.in_features)
        perm = sd.get("perm")
        return IntWeight(q, sd["scales"].clone(), sd["zeros"].clone(), module.bits, module.group_size,
                         None if perm is None else perm.long(), _bias(module))
    if isinstance(module, (Int8DynamicLinear, FP8Linear)):
        w8a8 = isinstance(module, Int8DynamicLinear)
        return ScaledWeight(module.weight.detach().clone(), module.weight_scale.detach().float().clone(), w8a8,
                            _bias(module), origin="W8A8 int8 (dynamic per-token activations)" if w8a8 else "")
    if type(module) is nn.Linear:
        w = module.weight.detach()
        return DenseWeight(w, _bias(module), sparsity=_zero_fraction(w))
    name = type(module).__name__
    if name == "LowRankLinear":
        # Fold y = up(down(x)) back to one weight; quantized factors are dequantized first.
        up, down = read_linear(module.up), read_linear(module.down)
        w = up.lab_dense() @ down.lab_dense()  # (N, r) @ (r, K)
        return DenseWeight(w, _bias(module.up), origin=f"low-rank r={module.rank} folded back (up @ down)")
    if name == "Sparse24Linear":
        w = module.dense_weight().detach()
        return DenseWeight(w, _bias(module), origin="compact 2:4 expanded", sparsity=_zero_fraction(w))
    return _bnb_dense(module)


def read_linears(model: nn.Module) -> dict[str, LabWeight]:
    """{qualified name: weight} for every linear-like module, outermost first (children of a folded
    low-rank layer are not listed on their own)."""
    out: dict[str, LabWeight] = {}
    for name, module in model.named_modules():
        if any(name.startswith(f"{done}.") for done in out):
            continue
        weight = read_linear(module)
        if weight is not None:
            out[name] = weight
    return out


def model_facts(model: nn.Module, weights: dict[str, LabWeight]) -> ModelFacts:
    config = model.config
    kv = getattr(model, "kv_cache_config", None)
    layout = getattr(config, "pruned_layout", None) or None
    uniform = None
    if layout:
        if all(len(set(v)) == 1 for v in layout.values()):
            uniform = {k: v[0] for k, v in layout.items()}
    sparsity = {n: w.sparsity for n, w in weights.items() if isinstance(w, DenseWeight) and w.sparsity >= SPARSE_MIN}
    return ModelFacts(model_type=getattr(config, "model_type", ""), hidden_size=getattr(config, "hidden_size", 0),
                      kv_cache_method=getattr(kv, "method", None) if kv
                      else None, pruned_layout=layout, uniform_layout=uniform, sparsity=sparsity)
