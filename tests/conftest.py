"""Test settings: offline hub, Triton's interpreter on CPU, quiet libraries.

Environment variables are set here, before any test module imports torch, transformers or kernels.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

if not torch.cuda.is_available():
    # Triton kernels run under the interpreter on CPU; must be set before they are decorated.
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.set_num_threads(min(2, torch.get_num_threads()))

import pytest  # noqa: E402


@pytest.fixture
def tiny_folder(tmp_path, monkeypatch):
    """A 2-layer Llama with 256 positions and the demo's tokenizer, in the data folder."""
    from tests.helpers import tiny_model_folder

    return tiny_model_folder(tmp_path, monkeypatch)
