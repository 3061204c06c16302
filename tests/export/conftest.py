"""Fixtures for export tests: tiny Llamas compressed once per recipe, the demo tokenizer, independent references."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

# name -> recipe stages. Tiny Llama shapes (hidden 128, MLP 256) split into GGUF's blocks of 32.
RECIPES = {
    "int4-g32-sym": [{"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True}],
    "int4-g32-asym": [{"method": "rtn", "bits": 4, "group_size": 32}],
    "int8-channel": [{"method": "rtn", "bits": 8, "group_size": -1, "symmetric": True}],
    "int3-g32": [{"method": "rtn", "bits": 3, "group_size": 32}],
    "hqq-g32": [{"method": "hqq", "bits": 4, "group_size": 32}],
    "gptq-actorder-group": [{"method": "gptq", "bits": 4, "group_size": 32, "actorder": "group"}],
    "smoothquant": [{"method": "smoothquant"}],
    "fp8": [{"method": "fp8"}],
    "sparsegpt-50": [{"method": "sparsegpt", "sparsity": 0.5}],
    "svd": [{"method": "svd", "rank": 32}],
    "structured-half": [{"method": "structured", "heads_fraction": 0.5, "mlp_fraction": 0.25}],
    "structured-quarter": [{"method": "structured", "heads_fraction": 0.25, "mlp_fraction": 0.25}],
    "kivi": [{"method": "kivi"}],
    # mixed precision: 4-bit groups, 8-bit per channel down_proj (two compressed-tensors schemes)
    "mixed-sym": [{"method": "rtn", "bits": 4, "group_size": 32, "symmetric": True,
                   "overrides": [{"pattern": "down_proj", "bits": 8, "group_size": -1}]}],
    "mixed-asym": [{"method": "rtn", "bits": 4, "group_size": 32,
                    "overrides": [{"pattern": "down_proj", "bits": 8, "group_size": -1}]}],
}
VOCAB = 4096  # the demo tokenizer's


@pytest.fixture(scope="session")
def demo_tokenizer():
    from transformers import AutoTokenizer

    from compressor.models.loading import DEMO_DIR

    return AutoTokenizer.from_pretrained(DEMO_DIR)


@pytest.fixture(scope="session")
def compressed_tiny():
    """compressed_tiny(name) -> a tiny Llama compressed with RECIPES[name], built once per session."""
    import compressor
    from tests.helpers import random_tokens, tiny_llama

    cache: dict[str, nn.Module] = {}

    def get(name: str) -> nn.Module:
        if name not in cache:
            model, _ = compressor.compress(tiny_llama(vocab=VOCAB), {"stages": RECIPES[name]},
                                           calibration=random_tokens(4, 64, vocab=VOCAB))
            cache[name] = model
        return cache[name]

    return get


def lab_weight(module: nn.Module) -> torch.Tensor | None:
    """The weight the lab computes with, fp32, original column order, from kernels' reference dequantizer
    (independent of compressor.export's own reading); None for module types this does not cover."""
    from kernels.modules import FP8Linear, Int8DynamicLinear, QuantLinear
    from kernels.reference import dequantize

    if isinstance(module, QuantLinear):
        sd = module.state_dict()
        w = dequantize(sd["qweight"], sd["scales"], sd["zeros"], bits=module.bits, group_size=module.group_size,
                       in_features=module.in_features)
        return w if sd.get("perm") is None else w[:, torch.argsort(sd["perm"].long())]
    if isinstance(module, (Int8DynamicLinear, FP8Linear)):
        return module.weight.float() * module.weight_scale.float()[:, None]
    if type(module) is nn.Linear:
        return module.weight.detach().float()
    if type(module).__name__ == "LowRankLinear":
        return lab_weight(module.up) @ lab_weight(module.down)
    return None


def lab_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, module in model.named_modules():
        if any(name.startswith(f"{done}.") for done in out):  # factors of a low-rank layer
            continue
        w = lab_weight(module)
        if w is not None:
            out[name] = w
    return out


def dense_reference(model: nn.Module) -> nn.Module:
    """A plain fp32 copy of `model` with every packed linear replaced by nn.Linear(lab weight)."""
    ref = copy.deepcopy(model)
    for name, w in lab_weights(model).items():
        parent, _, child = name.rpartition(".")
        old = model.get_submodule(name)
        lin = nn.Linear(w.shape[1], w.shape[0], bias=getattr(old, "bias", None) is not None)
        lin.weight.data.copy_(w)
        if lin.bias is not None:
            lin.bias.data.copy_(old.bias.float())
        setattr(ref.get_submodule(parent), child, lin)
    return ref.float().eval()
