"""Every kind of model spec: bundled, local folder, hub id offline, pickle refused, remote code refused."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from compressor.errors import ModelLoadError
from compressor.models.loading import DEMO_DIR, check_fits, load_model, resolve
from tests.helpers import tiny_llama


@pytest.fixture(scope="module")
def demo():
    return load_model("demo")


def _save_tiny(folder, safe=True):
    model = tiny_llama()
    model.save_pretrained(folder)
    if not safe:  # a pickle-only checkpoint, as older repositories ship
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()
    # Any tokenizer will do for loading; reuse the bundled one.
    AutoTokenizer.from_pretrained(DEMO_DIR).save_pretrained(folder)
    return model


def test_demo_loads_with_plain_transformers_and_through_loader(demo):
    model, tok = demo
    plain = AutoModelForCausalLM.from_pretrained(DEMO_DIR, dtype=torch.float32).eval()
    ids = tok("In the beginning", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, plain(ids).logits)
    assert type(model).__name__ == "LlamaForCausalLM"
    cfg = model.config
    assert cfg.hidden_size % 128 == 0 and cfg.intermediate_size % 128 == 0


def test_demo_generates_deterministically(demo):
    model, tok = demo
    ids = tok("The king said to his servants,", return_tensors="pt").input_ids
    outs = [model.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tok.pad_token_id)
            for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    text = tok.decode(outs[0][0, ids.shape[1]:], skip_special_tokens=True)
    assert len(text.split()) >= 3, f"demo model produced too little text: {text!r}"


def test_local_folder_loads(tmp_path):
    ref = _save_tiny(tmp_path / "m")
    model, _ = load_model(str(tmp_path / "m"), roots=[tmp_path])
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_local_folder_outside_allowed_roots_is_refused(tmp_path):
    _save_tiny(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="outside the allowed folders"):
        load_model(str(tmp_path / "m"), roots=[tmp_path / "elsewhere"])


def test_hub_id_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as e:
        load_model("Qwen/Qwen2.5-0.5B")
    msg = str(e.value)
    assert "Qwen/Qwen2.5-0.5B" in msg and "demo" in msg and "offline" in msg


def test_pickle_weights_refused_unless_opted_in(tmp_path):
    ref = _save_tiny(tmp_path / "m", safe=False)
    assert not list((tmp_path / "m").glob("*.safetensors"))
    with pytest.raises(ModelLoadError, match="pickle"):
        load_model(str(tmp_path / "m"), roots=[tmp_path])
    model, _ = load_model(str(tmp_path / "m"), roots=[tmp_path], allow_pickle=True)
    ids = torch.tensor([[5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, ref(ids).logits)


def test_remote_code_refused(tmp_path):
    _save_tiny(tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="trust_remote_code"):
        load_model(str(tmp_path / "m"), roots=[tmp_path])


@pytest.mark.parametrize("spec, match", [
    ("", "No model given"),
    ("not a valid id!", "neither"),
    ("./does/not/exist", "outside the allowed folders|does not exist"),
])
def test_bad_specs_name_the_problem(spec, match):
    with pytest.raises(ModelLoadError, match=match):
        resolve(spec)


def test_model_too_large_for_free_memory_is_refused():
    info = resolve("demo")
    assert info.n_params > 1_000_000  # counted from the config on the meta device
    with pytest.raises(ModelLoadError, match="GiB"):
        check_fits(info, available=info.weight_bytes_at_dtype // 2)
    check_fits(info, available=info.weight_bytes_at_dtype * 4)


def test_demo_arithmetic_above_recorded_floor(demo):
    # Measured once for the model card: 79.8% on the 400 plain 2-digit additions
    # (scripts/demo_model_card.py). The floor leaves room for BLAS rounding across machines.
    from compressor.measure.evaldata import load_arithmetic
    from compressor.measure.evaluate import evaluate_arithmetic

    model, tok = demo
    problems = [p for p in load_arithmetic(kinds=("add2",)) if p["style"] == "plain"][:200]
    result = evaluate_arithmetic(model, tok, problems)
    assert result["accuracy"] >= 0.70, result["examples"]


def test_a_bare_folder_name_in_the_working_directory_is_a_local_folder(tmp_path, monkeypatch):
    """'mymodel' looks like a hub id, but transformers would load ./mymodel: it must pass the folder check."""
    _save_tiny(tmp_path / "mymodel")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("compressor.models.loading.hub_reachable", lambda: True)  # the online case
    with pytest.raises(ModelLoadError, match="outside the allowed folders"):
        resolve("mymodel", roots=[tmp_path / "elsewhere"])
    assert resolve("mymodel", roots=[tmp_path]).source == "local"


@pytest.mark.parametrize("device, match", [("cuda", "no CUDA GPU|CUDA GPU"), ("banana", "not a device"),
                                           ("meta", "not supported"), (None, "not a device")])
def test_a_device_this_machine_cannot_use_is_refused_before_loading(device, match):
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelLoadError, match=match):
        load_model("demo", device=device)


def test_a_non_string_model_spec_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="must be a string"):
        load_model(42)
