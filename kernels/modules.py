"""Packed linear modules whose forward is one call into kernels.dispatch.

    QuantLinear        weight-only integer (2/3/4/8-bit, group-wise, optional act-order), canonical packed format
    Int8DynamicLinear  W8A8: int8 weight [N, K] + per-channel scales, activations quantized per token at run time
    FP8Linear          float8_e4m3fn weight [N, K] + per-channel scales

Each has `from_quantized(...)` (build from tensors) and `empty(...)` (allocate from metadata, then
`load_state_dict`), so a saved model is rebuilt from its state dict plus a few integers.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels import cpu_native, dispatch
from kernels.cpu_native import NativeWeight
from kernels.cpu_plan import CpuPlan
from kernels.pack import pack, packed_cols
from kernels.reference import check_qweight


def _keep_stored_dtypes(module: nn.Module, names: tuple[str, ...], fn, apply):
    """Run nn.Module._apply (`.to`, `.half`, `.cuda`, ...) but keep the named buffers in their format's dtype.

    `model.to(torch.bfloat16)` would otherwise cast every floating buffer: fp16 scales/zeros to bf16 (HQQ's
    fractional zeros lose most of their bits), fp32 per-channel scales to bf16, FP8 weights to bf16 (no
    longer FP8 at all). The named buffers sit out the cast and only follow the device `fn` moves to
    (read off an empty slice); the bias follows the model's dtype as any parameter does.
    """
    held = {n: module._buffers.pop(n) for n in names if module._buffers.get(n) is not None}
    try:
        return apply()
    finally:
        for n, t in held.items():
            module._buffers[n] = t.to(fn(t[:0]).device)


# non-persistent buffers of the CPU runtime layout: counted by weight_bytes (held), never saved
_RUNTIME_BUFFERS = ("native_qweight", "native_scale", "native_offset", "native_row_sum", "native_perm")


class QuantLinear(nn.Module):
    """Weight-only quantized linear: W[n, k] = (q[n, k] - zeros[n, k // G]) * scales[n, k // G].

    State dict (always canonical, whatever the runtime layout):
        qweight uint8 [N, packed_cols(K, bits)], scales fp16 [N, K // G], zeros fp16 [N, K // G],
        perm int32 [K] (only with act-order), bias [N] (only with bias).

    Runtime layout on CUDA (kernels/triton_layout.py): the first CUDA forward replaces qweight by the GPU words
    (int32 [W, N], the same bytes bar padding to whole words) and makes scales / zeros strided views of one
    int32 [K // G, N] scale-and-zero word per group and column (the same bytes), then runs a
    kernels.triton_ops.TritonPlan.

    Runtime layout on CPU (kernels/cpu_plan.py): the first CPU forward builds a plan that every later call runs.
    A 4-bit or per-channel 8-bit `qweight` is replaced by its native kernel's layout (same bytes); 2- and
    3-bit weights keep their canonical bytes and hold the int4 layout beside them (`native_qweight`, more
    bytes than stored: weight_bytes counts them). Native scales, int8 zero terms and the int64
    permutation are non-persistent buffers `native_*`; fp16 scales/zeros stay for the state dict.
    Moving the module (`.to`, `.cuda`, `.half`) or loading a state dict drops the runtime layout.
    """

    def __init__(self, in_features: int, out_features: int, bits: int, group_size: int, *, bias: bool = False,
                 has_perm: bool = False, dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.bits, self.group_size = bits, group_size
        n_groups = in_features // group_size if group_size > 0 else 0
        self.register_buffer("qweight", torch.zeros(out_features, packed_cols(in_features, bits),
                                                    dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=torch.float16, device=device))
        self.register_buffer("zeros", torch.zeros(out_features, n_groups, dtype=torch.float16, device=device))
        self.register_buffer("perm", torch.arange(in_features, dtype=torch.int32, device=device) if has_perm else None)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None
        self.native: NativeWeight | None = None
        self.gpu_layout = False  # qweight/scales/zeros in the Triton runtime layout (kernels/triton_layout.py)
        self._run: CpuPlan | _CanonicalRun | None = None  # built by the first forward (_prepare)
        self._last_path: str | None = None  # kernel_path once the runtime is dropped
        check_qweight(self.qweight, self.scales, self.zeros, bits=bits, group_size=group_size,
                      in_features=in_features, perm=self.perm)

    @classmethod
    def empty(cls, in_features: int, out_features: int, bits: int, group_size: int, bias: bool = False,
              has_perm: bool = False, dtype: torch.dtype = torch.float16, device=None) -> QuantLinear:
        """Allocate a module from its metadata; fill it with `load_state_dict`."""
        return cls(in_features, out_features, bits, group_size, bias=bias, has_perm=has_perm, dtype=dtype,
                   device=device)

    @classmethod
    def from_quantized(cls, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, *, bits: int,
                       group_size: int, bias: torch.Tensor | None = None,
                       perm: torch.Tensor | None = None) -> QuantLinear:
        """Build from unpacked integers q [N, K] in [0, 2**bits - 1] and scales/zeros [N, K // G].

        With act-order, q/scales/zeros describe the columns in permuted order and perm [K] maps them.
        """
        n, k = q.shape
        mod = cls(k, n, bits, group_size, bias=bias is not None, has_perm=perm is not None,
                  dtype=bias.dtype if bias is not None else torch.float16, device=q.device)
        mod.qweight.copy_(pack(q, bits))
        mod.scales.copy_(scales.to(torch.float16))
        mod.zeros.copy_(zeros.to(torch.float16))
        if perm is not None:
            mod.perm.copy_(perm.to(torch.int32))
        if bias is not None:
            mod.bias.data.copy_(bias)
        return mod

    def metadata(self) -> dict:
        """The integers `empty` needs to rebuild this module before `load_state_dict`."""
        return {"in_features": self.in_features, "out_features": self.out_features, "bits": self.bits,
                "group_size": self.group_size, "bias": self.bias is not None, "has_perm": self.perm is not None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N]
        return (self._run or self._prepare(x.device))(x)

    @property
    def kernel_path(self) -> str | None:
        """The path the last forward took (kernels.dispatch names), None before the first."""
        return self._run.path if self._run is not None else self._last_path

    # --- runtime layout ---------------------------------------------------------------------------

    @torch.no_grad()
    def _prepare(self, device: torch.device):
        """Build what every later call runs: a CPU plan (native layout adopted), the Triton plan on CUDA, or
        the canonical dispatch (the reference)."""
        if device.type == "cuda" and self.qweight.device == device and dispatch.gpu_kind(
                device, bits=self.bits, group_size=self.group_size, in_features=self.in_features):
            return self._prepare_gpu()
        if device.type != "cpu" or self.qweight.device.type != "cpu":
            self._run = _CanonicalRun(self)
            return self._run
        kind = dispatch.native_kind(device, bits=self.bits, group_size=self.group_size,
                                    in_features=self.in_features, out_features=self.out_features)
        weight, nw = self.qweight, None
        if kind == cpu_native.INT4PACK:
            out = cpu_native.to_int4pack(self.qweight, self.scales, self.zeros, group_size=self.group_size,
                                         in_features=self.in_features, bits=self.bits)
            if out is None:  # layout inverse did not hold: stay canonical (reference path)
                kind = None
            elif self.bits == 4:  # same bytes as the canonical layout: it replaces qweight
                self.qweight, nw = out
                weight = self.qweight
            else:  # 2/3-bit: the int4 layout is held beside the canonical bytes (the state dict and a GPU need those)
                weight, nw = out
                self.register_buffer("native_qweight", weight, persistent=False)
        elif kind == cpu_native.INT8PACK:
            self.qweight, nw = cpu_native.to_int8pack(self.qweight, self.scales, self.zeros)
            weight = self.qweight
        if nw is not None:
            self.native = nw
            self.register_buffer("native_scale", nw.scale, persistent=False)
            for name, t in (("native_offset", nw.offset), ("native_row_sum", nw.row_sum)):
                if t is not None:
                    self.register_buffer(name, t, persistent=False)
        if self.perm is not None:
            self.register_buffer("native_perm", self.perm.long(), persistent=False)
        self._run = CpuPlan(kind, weight, nw, in_features=self.in_features, out_features=self.out_features,
                            bits=self.bits, group_size=self.group_size, scales=self.scales, zeros=self.zeros,
                            perm_index=getattr(self, "native_perm", None), bias=self.bias)
        return self._run

    def _prepare_gpu(self):
        from kernels import triton_layout
        from kernels.triton_ops import TritonPlan

        # the GPU words and the packed scale/zero words replace the canonical bytes (the same count, bar
        # padding to whole words); scales / zeros stay as strided fp16 views of sz
        self.qweight = triton_layout.to_gpu_words(self.qweight, self.bits, self.in_features)  # (W, N) int32
        sz = triton_layout.pack_scales(self.scales, self.zeros)  # (K // G, N) int32
        self.scales, self.zeros = triton_layout.scale_views(sz)
        self.gpu_layout = True
        self._run = TritonPlan(self.qweight, sz, self.perm, self.bias, bits=self.bits, group_size=self.group_size,
                               in_features=self.in_features, out_features=self.out_features)
        return self._run

    @torch.no_grad()
    def _to_canonical(self) -> None:
        """Drop the runtime layout (back to the canonical qweight); the next forward prepares again."""
        if self._run is not None:
            self._last_path, self._run = self._run.path, None
        for name in _RUNTIME_BUFFERS:
            self._buffers.pop(name, None)
        if self.gpu_layout:
            self.qweight = self._canonical_qweight()
            self.scales, self.zeros = self.scales.contiguous(), self.zeros.contiguous()
            self.gpu_layout = False
        if self.native is None:
            return
        if self.native.kind == cpu_native.INT4PACK:
            if self.bits == 4:
                self.qweight = cpu_native.from_int4pack(self.qweight, self.in_features)
        else:
            self.qweight = cpu_native.from_int8pack(self.qweight)
        self.native = None

    def _canonical_qweight(self) -> torch.Tensor:
        if self.qweight.dtype == torch.int32:  # the GPU words replaced the bytes
            from kernels.triton_layout import from_gpu_words

            return from_gpu_words(self.qweight, self.bits, self.in_features)
        if self.native is None or (self.native.kind == cpu_native.INT4PACK and self.bits != 4):
            return self.qweight
        if self.native.kind == cpu_native.INT4PACK:
            return cpu_native.from_int4pack(self.qweight, self.in_features)
        return cpu_native.from_int8pack(self.qweight)

    def _apply(self, fn, recurse=True):
        self._to_canonical()
        return _keep_stored_dtypes(self, ("scales", "zeros"), fn, lambda: super(QuantLinear, self)._apply(fn, recurse))

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "qweight"] = self._canonical_qweight()
        if self.gpu_layout:  # transposed views on CUDA: the state dict holds contiguous [N, K // G]
            destination[prefix + "scales"] = self.scales.contiguous()
            destination[prefix + "zeros"] = self.zeros.contiguous()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._to_canonical()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bits={self.bits}, "
                f"group_size={self.group_size}, bias={self.bias is not None}, act_order={self.perm is not None}")


class _CanonicalRun:
    """QuantLinear's runtime off CPU: kernels.dispatch.qmatmul on the canonical tensors (Triton or reference)."""

    def __init__(self, module: QuantLinear):
        self.module, self.path = module, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        y, self.path = dispatch.qmatmul(x, m.qweight, m.scales, m.zeros, bits=m.bits, group_size=m.group_size,
                                        in_features=m.in_features, perm=m.perm, bias=m.bias)
        return y


class _ScaledWeightLinear(nn.Module):
    """Shared body of the per-channel scaled linears: weight [N, K] in WEIGHT_DTYPE, weight_scale fp32 [N]."""

    WEIGHT_DTYPE: torch.dtype
    CAST_HINT: str

    def __init__(self, in_features: int, out_features: int, *, bias: bool = False,
                 dtype: torch.dtype = torch.float16, device=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=self.WEIGHT_DTYPE, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, dtype=torch.float32, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) \
            if bias else None
        self.kernel_path: str | None = None

    @classmethod
    def empty(cls, in_features: int, out_features: int, bias: bool = False, dtype: torch.dtype = torch.float16,
              device=None):
        """Allocate a module from its metadata; fill it with `load_state_dict`."""
        return cls(in_features, out_features, bias=bias, dtype=dtype, device=device)

    @classmethod
    def from_quantized(cls, weight: torch.Tensor, weight_scale: torch.Tensor, *, bias: torch.Tensor | None = None):
        """weight [N, K] in WEIGHT_DTYPE and weight_scale [N] (or [N, 1]): W = weight * weight_scale[:, None]."""
        if weight.dtype != cls.WEIGHT_DTYPE:
            raise TypeError(f"weight must be {cls.WEIGHT_DTYPE}, got {weight.dtype}: {cls.CAST_HINT}")
        n, k = weight.shape
        mod = cls(k, n, bias=bias is not None, dtype=bias.dtype if bias is not None else torch.float16,
                  device=weight.device)
        mod.weight.copy_(weight)
        mod.weight_scale.copy_(weight_scale.reshape(n).float())
        if bias is not None:
            mod.bias.data.copy_(bias)
        return mod

    def metadata(self) -> dict:
        return {"in_features": self.in_features, "out_features": self.out_features, "bias": self.bias is not None}

    def _apply(self, fn, recurse=True):
        return _keep_stored_dtypes(self, ("weight", "weight_scale"), fn,
                                   lambda: super(_ScaledWeightLinear, self)._apply(fn, recurse))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Int8DynamicLinear(_ScaledWeightLinear):
    """W8A8 linear: y = (q8(x) @ W8.T) * x_scale[m] * w_scale[n] + bias.

    weight int8 [N, K] (symmetric, in [-127, 127]); weight_scale fp32 [N]; activations are quantized
    per token (absmax / 127) inside forward.
    """

    WEIGHT_DTYPE = torch.int8
    CAST_HINT = "quantize with torch.round(W / scale[:, None]).clamp(-127, 127).to(torch.int8)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N]
        y, path = dispatch.int8_dynamic_matmul(x, self.weight, self.weight_scale, bias=self.bias)
        if path is not self.kernel_path:  # an nn.Module attribute write costs ~2 us: only on a change
            self.kernel_path = path
        return y


class FP8Linear(_ScaledWeightLinear):
    """FP8 weight linear: W = weight.float() * weight_scale[:, None], weight float8_e4m3fn [N, K], scale fp32 [N].

    On CPU the first forward adds the runtime copy kernels.cpu_native.fp8_to_fp16 makes (`native_weight` fp16
    [N, K], the FP8 values exactly, and `native_scale` fp32 [N]; non-persistent, counted by weight_bytes as
    held): 2 bytes a weight beside the stored 1, so decode reads half the fp32 baseline's bytes. The state
    dict stays FP8; moving the module or loading a state dict drops the copy.
    """

    WEIGHT_DTYPE = torch.float8_e4m3fn
    CAST_HINT = "cast (W / scale[:, None]).clamp(-448, 448).to(torch.float8_e4m3fn)"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., K] -> [..., N]
        if x.device.type != "cpu" or self.weight.device.type != "cpu" or x.numel() == 0:
            y, path = dispatch.fp8_matmul(x, self.weight, self.weight_scale, bias=self.bias)
        else:
            w16 = self._buffers.get("native_weight")
            if w16 is None:
                w16 = self._prepare_cpu()
            y, path = cpu_native.fp8_fp16_mm(x.reshape(-1, self.in_features), w16, self.native_scale)
            y = y.to(x.dtype).view(*x.shape[:-1], self.out_features)
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
        if path is not self.kernel_path:  # an nn.Module attribute write costs ~2 us: only on a change
            self.kernel_path = path
        return y

    @torch.no_grad()
    def _prepare_cpu(self) -> torch.Tensor:
        w16, scale = cpu_native.fp8_to_fp16(self.weight, self.weight_scale)
        self.register_buffer("native_weight", w16, persistent=False)
        self.register_buffer("native_scale", scale, persistent=False)
        return w16

    def _drop_runtime(self) -> None:
        self._buffers.pop("native_weight", None)
        self._buffers.pop("native_scale", None)

    def _apply(self, fn, recurse=True):
        self._drop_runtime()
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self._drop_runtime()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
