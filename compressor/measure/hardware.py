"""Hardware profiles, a short probe of this machine, and roofline projections.

Profiles are data (`assets/hardware/*.json`), each citing its spec source. "this-machine" is measured:
memory bandwidth (a large tensor copy), matmul compute (fp32, bf16), and two decode constants
calibrated by timing greedy decode of small random-weight Llamas built in code:

    seconds per decode step = bytes read per step / (bandwidth x decode_efficiency)
                              + n_layers x layer_overhead

Every number `project` returns is a projection, labelled "projection" in the data and the text;
docs/evaluation.md explains the model, its calibration and how it compares with measurements.
"""

from __future__ import annotations

import json
import os
import platform
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import psutil
import torch

from compressor.errors import LabError
from compressor.paths import ASSETS

HARDWARE_DIR = ASSETS / "hardware"
THIS_MACHINE = "this-machine"
LABEL = "projection"
PROBE_VERSION = 1


# --- profiles -----------------------------------------------------------------------------------


@dataclass
class HardwareProfile:
    """One machine: capacities from a spec sheet (or a probe) and the modelling constants."""

    id: str
    name: str
    kind: str  # "gpu", "cpu" or "apple"
    memory_bytes: int
    memory_bandwidth_gb_s: float
    peak_tflops: dict[str, float]
    features: dict[str, bool]
    default_compute_dtype: str
    decode_efficiency: float
    prefill_efficiency: float
    layer_overhead_us: float
    runtime_overhead_bytes: int
    usable_memory_fraction: float
    source: str
    notes: str = ""
    assumptions: str = ""
    measured: dict = field(default_factory=dict)  # probe details for "this-machine"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> HardwareProfile:
        """A profile from JSON; keys this version does not know (a newer writer's) are left out."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def list_profiles() -> list[HardwareProfile]:
    """The bundled profiles, sorted by id ("this-machine" is not listed: it needs a probe)."""
    return [load_profile_file(p) for p in sorted(HARDWARE_DIR.glob("*.json"))]


def load_profile_file(path: Path) -> HardwareProfile:
    return HardwareProfile.from_dict(json.loads(path.read_text()))


_PROFILE_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


def get_profile(profile_id: str) -> HardwareProfile:
    """A bundled profile by id, or "this-machine" (probed, see `this_machine`)."""
    if profile_id == THIS_MACHINE:
        return this_machine()
    path = HARDWARE_DIR / f"{profile_id}.json" if isinstance(profile_id, str) and _PROFILE_ID.match(profile_id) \
        else None  # ids are file stems: no paths, so '../x' cannot name another JSON file
    if path is None or not path.is_file():
        ids = ", ".join([THIS_MACHINE] + [p.stem for p in sorted(HARDWARE_DIR.glob("*.json"))])
        raise LabError(f"hardware={profile_id!r} is not a known profile: use one of {ids}.")
    return load_profile_file(path)


# --- probe --------------------------------------------------------------------------------------


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def probe_bandwidth(n_bytes: int = 256 * 2**20, repeats: int = 5) -> float:
    """Bytes/s of a large copy (each byte read once and written once), well beyond the caches."""
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    t = _median_time(lambda: dst.copy_(src), repeats)
    return 2 * n_bytes / t


def probe_compute(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    """FLOP/s of an n x n x n matmul."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = _median_time(lambda: a @ b, repeats)
    return 2 * n**3 / t


# Random-weight Llamas for calibration: widths and depths chosen so the small one is dominated by
# per-layer overhead and the large one (~240 MB fp32, beyond the caches) by weight traffic.
CALIBRATION_SHAPES = ((128, 384, 8), (512, 1536, 4), (1024, 2816, 4))  # (hidden, intermediate, layers)


def _calibration_model(hidden: int, intermediate: int, layers: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
                      max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@torch.no_grad()
def _decode_seconds_per_token(model, prompt: int = 32, steps: int = 8, repeats: int = 3) -> float:
    ids = torch.randint(1, model.config.vocab_size, (1, prompt))  # (1, P)

    def run():
        out = model(input_ids=ids, use_cache=True)
        cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        t0 = time.perf_counter()
        for _ in range(steps):
            out = model(input_ids=tok, past_key_values=cache, use_cache=True)
            cache, tok = out.past_key_values, out.logits[:, -1:].argmax(-1)
        return (time.perf_counter() - t0) / steps

    run()
    return float(np.median([run() for _ in range(repeats)]))


def fit_decode_constants(points: list[tuple[float, int, float]], bandwidth: float) -> tuple[float, float]:
    """Least-squares fit of t = bytes / (bandwidth * eff) + layers * overhead over (bytes, layers, t)
    points. Returns (decode_efficiency, layer_overhead_s)."""
    a = np.array([[b / bandwidth, n] for b, n, _ in points])
    y = np.array([t for _, _, t in points])
    (inv_eff, overhead), *_ = np.linalg.lstsq(a, y, rcond=None)
    if inv_eff <= 0:  # every point overhead-bound: fall back to a pure-bandwidth fit
        inv_eff, overhead = float(np.median(y / a[:, 0])), 0.0
    return 1.0 / float(inv_eff), max(0.0, float(overhead))


def probe_this_machine() -> dict:
    """Measure bandwidth, compute and the decode constants (a few seconds). Returns a dict."""
    from compressor.engine.report import weight_bytes
    from compressor.measure.speed import kv_bytes_per_token_from_config

    t0 = time.perf_counter()
    bw = probe_bandwidth()
    flops = {"fp32": probe_compute(torch.float32), "bf16": probe_compute(torch.bfloat16)}
    points = []
    for hidden, inter, layers in CALIBRATION_SHAPES:
        model = _calibration_model(hidden, inter, layers)
        t = _decode_seconds_per_token(model)
        kv = kv_bytes_per_token_from_config(model.config) * 36  # ~36 cached positions during the timing
        points.append((weight_bytes(model) + kv, layers, t))
        del model
    eff, overhead = fit_decode_constants(points, bw)
    return {
        "probe_version": PROBE_VERSION, "bandwidth_bytes_per_s": bw, "flops_per_s": flops,
        "decode_efficiency": eff, "layer_overhead_s": overhead,
        "calibration_points": [{"bytes_per_step": b, "layers": n, "seconds_per_token": t} for b, n, t in points],
        "threads": torch.get_num_threads(), "probe_seconds": time.perf_counter() - t0,
    }


# The probe is kept in this process for PROBE_TTL_S only: on a shared machine the load changes, and a
# calibration taken under another load would misstate the efficiency (measured: up to 3x).
PROBE_TTL_S = 600.0
_PROBE_MEMO: dict[str, tuple[float, dict]] = {}


def probe_key() -> str:
    return (f"probe:v{PROBE_VERSION}:{platform.node()}:{platform.machine()}:{os.cpu_count()}:"
            f"{torch.get_num_threads()}:{torch.__version__}")


def this_machine(max_age_s: float = PROBE_TTL_S) -> HardwareProfile:
    """A profile of the machine this runs on, from a probe taken in this process within max_age_s."""
    key = probe_key()
    taken, probe = _PROBE_MEMO.get(key, (0.0, None))
    if probe is None or time.time() - taken > max_age_s:
        probe = probe_this_machine()
        _PROBE_MEMO[key] = (time.time(), probe)
    cuda = torch.cuda.is_available()
    return HardwareProfile(
        id=THIS_MACHINE, name=f"this machine ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads)", kind="cpu", memory_bytes=psutil.virtual_memory().total,
        memory_bandwidth_gb_s=probe["bandwidth_bytes_per_s"] / 1e9,
        peak_tflops={k: v / 1e12 for k, v in probe["flops_per_s"].items()},
        features={"fp8": False, "sparse_2_4": False, "int4_kernels": True, "bf16": True},
        default_compute_dtype="fp32", decode_efficiency=probe["decode_efficiency"],
        prefill_efficiency=1.0,  # compute was measured on a real matmul: already an achieved rate
        layer_overhead_us=probe["layer_overhead_s"] * 1e6,
        runtime_overhead_bytes=int(0.6 * 2**30), usable_memory_fraction=0.8,
        source="measured by compressor.measure.hardware.probe_this_machine (CPU only"
        + ("; a GPU is present but the probe measures the CPU)" if cuda else ")"),
        measured=probe,
    )


# --- projection ---------------------------------------------------------------------------------


@dataclass
class ModelFacts:
    """What the projection needs to know about one model (baseline or compressed).

    Args:
        weight_bytes: exact bytes of parameters and buffers (what one decode step reads).
        n_params: logical parameter count (FLOPs per token are ~2 x n_params).
        n_layers: decoder layers (per-layer overhead).
        kv_bytes_per_token: KV-cache bytes for one token of context.
        max_context: the model's maximum positions.
        traits: formats that change how kernels behave: "nf4", "int4-weight-only",
            "weight-only-int", "sparse-2:4", "fp8", "int8-dynamic".
        weight_bits: the lowest weight bit width in the model (16/32 when uncompressed).
    """

    weight_bytes: int
    n_params: int
    n_layers: int
    kv_bytes_per_token: float
    max_context: int
    hidden_size: int = 0
    traits: list[str] = field(default_factory=list)
    weight_bits: float = 32.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelFacts:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# Profile compute dtypes that hold floats in 16 bits, by torch's name.
FLOAT16_DTYPES = {"fp16": "float16", "bf16": "bfloat16"}


def run_float_dtype(profile: HardwareProfile) -> str | None:
    """The 16-bit float dtype a profile runs models in (GPUs and Apple chips: fp16 or bf16), or None
    when it computes in fp32 (CPU profiles, "this machine"), where the measured bytes stand."""
    return FLOAT16_DTYPES.get(profile.default_compute_dtype)


def _compute_flops(profile: HardwareProfile, dtype: str | None = None) -> float:
    dtype = dtype or profile.default_compute_dtype
    tflops = profile.peak_tflops.get(dtype) or profile.peak_tflops.get("fp16") or profile.peak_tflops["fp32"]
    return tflops * 1e12


def decode_breakdown(profile: HardwareProfile, m: ModelFacts, batch: int, context: int) -> dict[str, float]:
    """Projected seconds of one decode step of `batch` sequences at `context` tokens of context, by
    term: memory (weights once + every sequence's KV), compute, fixed per-layer overhead."""
    bw = profile.memory_bandwidth_gb_s * 1e9 * profile.decode_efficiency
    return {"memory_s": (m.weight_bytes + batch * context * m.kv_bytes_per_token) / bw,
            "compute_s": batch * 2 * m.n_params / (_compute_flops(profile) * profile.prefill_efficiency),
            "overhead_s": m.n_layers * profile.layer_overhead_us * 1e-6}


def decode_seconds(profile: HardwareProfile, m: ModelFacts, batch: int, context: int) -> float:
    """max(memory, compute) + overhead: the roofline plus a fixed cost per layer."""
    d = decode_breakdown(profile, m, batch, context)
    return max(d["memory_s"], d["compute_s"]) + d["overhead_s"]


def prefill_seconds(profile: HardwareProfile, m: ModelFacts, batch: int, prompt: int) -> float:
    """Projected seconds to prefill `batch` prompts of `prompt` tokens: linear-layer FLOPs plus
    causal attention FLOPs over achieved compute, or one read of the weights if that is longer."""
    flops = batch * prompt * 2 * m.n_params + batch * m.n_layers * 2 * prompt * prompt * m.hidden_size
    t_compute = flops / (_compute_flops(profile) * profile.prefill_efficiency)
    t_mem = m.weight_bytes / (profile.memory_bandwidth_gb_s * 1e9 * profile.decode_efficiency)
    return max(t_compute, t_mem) + m.n_layers * profile.layer_overhead_us * 1e-6


def memory_needed(profile: HardwareProfile, m: ModelFacts, batch: int, context: int) -> int:
    return int(m.weight_bytes + batch * context * m.kv_bytes_per_token + profile.runtime_overhead_bytes)


def warnings_for(profile: HardwareProfile, m: ModelFacts, batch: int) -> list[str]:
    """Cautions from published measurements that a bandwidth roofline cannot see."""
    w, traits = [], set(m.traits)
    if "nf4" in traits and profile.kind == "gpu":
        w.append("NF4 (bitsandbytes) dequantizes to fp16/bf16 before each matmul: published runs show it "
                 "decoding slower than bf16 at batch 1 on A100/H100-class GPUs despite 4x fewer bytes "
                 "(bitsandbytes issues #611, #712). The bandwidth projection is an upper bound here.")
    if "sparse-2:4" in traits:
        extra = "" if profile.features.get("sparse_2_4") else f" {profile.name} has no 2:4 sparse tensor cores."
        w.append("2:4 sparsity: no decode speed-up is projected. Decode is memory-bound and the pruned "
                 "weights are still stored dense unless a sparse low-bit kernel packs them; 2:4 tensor "
                 "cores (cuSPARSELt, Ampere and newer) speed up large GEMMs (prefill, big batches) only."
                 + extra)
    if traits & {"int4-weight-only", "weight-only-int"}:
        if not profile.features.get("int4_kernels"):
            w.append(f"{profile.name} has no fast low-bit weight kernel: weights are dequantized before the "
                     "matmul and decode may be slower than fp16.")
        if batch >= 16:
            kind = "int4" if "int4-weight-only" in traits else "low-bit"
            w.append(f"Weight-only {kind} at batch {batch}: many low-bit kernels lose their advantage over fp16 "
                     "beyond batch ~8-16 as decode turns compute-bound; Marlin keeps near-ideal speed-ups "
                     "to batch 16-32 (Frantar et al. 2024, arXiv:2408.11743).")
    if "fp8" in traits and not profile.features.get("fp8"):
        w.append(f"{profile.name} has no FP8 tensor cores: FP8 weights save memory but compute upcasts to "
                 "fp16/bf16.")
    if profile.kind == "gpu" and profile.layer_overhead_us >= 50:
        w.append("Per-layer overhead assumes eager PyTorch; CUDA graphs or torch.compile cut it ~10x, which "
                 "matters most for small models.")
    return w


def project(profile: HardwareProfile, m: ModelFacts, context: int = 2048, batch: int = 1,
            prompt: int = 512, large_batch: int = 16) -> dict:
    """Fit, capacity and speed of model `m` on `profile`. Everything returned is a projection."""
    if context < 1 or batch < 1:
        raise LabError(f"context={context}, batch={batch}: both must be >= 1.")
    usable = int(profile.memory_bytes * profile.usable_memory_fraction)
    need = memory_needed(profile, m, batch, context)
    room = usable - m.weight_bytes - profile.runtime_overhead_bytes
    max_tokens = int(room // m.kv_bytes_per_token) if room > 0 and m.kv_bytes_per_token > 0 else 0
    parts = decode_breakdown(profile, m, batch, context)
    dec = decode_seconds(profile, m, batch, context)
    dec_big = decode_seconds(profile, m, large_batch, context)
    pre = prefill_seconds(profile, m, 1, prompt)
    return {
        "label": LABEL,
        "hardware": profile.id,
        "hardware_name": profile.name,
        "context": context, "batch": batch, "prompt_tokens": prompt,
        "fits": need <= usable,
        "memory_needed_bytes": need, "memory_usable_bytes": usable,
        "max_context_at_batch_1": min(max_tokens, m.max_context),
        "max_batch_at_context": max_tokens // context,
        "decode_tokens_per_s": batch / dec,
        f"decode_tokens_per_s_batch_{large_batch}": large_batch / dec_big,
        "prefill_tokens_per_s": prompt / pre,
        "time_to_first_token_s": pre,
        "decode_bound": max(parts, key=parts.get).removesuffix("_s"),
        "decode_breakdown_s": parts,
        "constants": {"decode_efficiency": profile.decode_efficiency,
                      "prefill_efficiency": profile.prefill_efficiency,
                      "layer_overhead_us": profile.layer_overhead_us,
                      "bandwidth_gb_s": profile.memory_bandwidth_gb_s},
        "warnings": warnings_for(profile, m, large_batch if large_batch > batch else batch),
    }


def projection_text(p: dict) -> str:
    """One line a person can read, which says it is a projection."""
    fit = "fits" if p["fits"] else "does NOT fit"
    return (f"projection for {p['hardware_name']}: {fit} at context {p['context']} x batch {p['batch']} "
            f"({p['memory_needed_bytes'] / 2**30:.2f} of {p['memory_usable_bytes'] / 2**30:.1f} GiB); "
            f"decode ~{p['decode_tokens_per_s']:.0f} tok/s, prefill ~{p['prefill_tokens_per_s']:.0f} tok/s; "
            f"max context {p['max_context_at_batch_1']} at batch 1")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"

