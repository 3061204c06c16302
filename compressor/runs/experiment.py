"""One experiment: load, measure the baseline, compress, measure again, project onto hardware.

`run_experiment(...)` returns a `Report`; `run_job(payload, ctx)` is the same for the background
worker and returns `Report.to_dict()`. Baseline and compressed models are measured the same way on
the same tokens (compressor.measure.evaluate, compressor.measure.speed); the baseline's measurements (its top-k
reference for KL included) are cached through `ctx.cache`, keyed by the model's file contents (or hub
revision), the evaluation data and settings, device and library versions, so a second recipe on the
same model skips them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from compressor.engine.kvcache import kv_cache_in_generate, model_kv_bytes_per_token
from compressor.engine.report import weight_bytes_at
from compressor.errors import LabError
from compressor.measure import evaluate as ev
from compressor.measure import hardware as hw
from compressor.measure.evaldata import held_out_text, load_arithmetic, load_prompts
from compressor.measure.speed import kernel_paths, kv_bytes_per_token_from_config, measure_speed, weight_bytes
from compressor.progress import Progress

CACHE_VERSION = 3  # bump when evaluation changes what it measures (3: file contents and eval data in the key)
# Held-out characters tokenized for perplexity: ~4 characters per token with room to spare.
CHARS_PER_TOKEN = 6
# Fraction of the whole job each phase covers, for progress events.
PHASES = {"load": (0.0, 0.05), "evaluate-baseline": (0.05, 0.3), "compress": (0.3, 0.7),
          "evaluate-compressed": (0.7, 0.95), "project": (0.95, 1.0)}
PROJECTION_CONTEXT = 2048


@dataclass
class Report:
    """Everything one run measured and projected; `to_dict()` is the JSON the UI and CLI read.

    `baseline` and `compressed` hold the headline metrics under the same keys (weight_bytes,
    perplexity, arithmetic_accuracy, prefill_tokens_per_s, decode_tokens_per_s, peak_memory_bytes,
    kv_bytes_per_token, ...) plus their details; `compressed` adds kld and top1_agreement.
    """

    model: dict
    recipe: dict
    hardware: str
    settings: dict
    baseline: dict
    compressed: dict
    compress_seconds: float
    samples: list[dict]
    projection: dict
    stages: list[dict] = field(default_factory=list)
    layers: list[dict] = field(default_factory=list)
    compression: dict = field(default_factory=dict)
    attribution: list[dict] = field(default_factory=list)  # stacked recipes: quality change per stage
    environment: dict = field(default_factory=dict)
    online: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _jsonable(dataclasses.asdict(self))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _jsonable(x):
    """NaN/inf become None so the JSON is strict; tuples become lists."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    return x


# --- helpers ------------------------------------------------------------------------------------


class _Phases:
    """Maps a phase's own 0..1 progress onto the job's fraction and forwards Progress events."""

    def __init__(self, progress: Callable[[Progress], None] | None):
        self.progress = progress

    def emit(self, phase: str, within: float = 0.0, message: str = "", **kw) -> None:
        if self.progress is None:
            return
        lo, hi = PHASES[phase]
        self.progress(Progress(stage=phase, fraction=lo + (hi - lo) * min(max(within, 0.0), 1.0),
                               message=message, **kw))

    def engine_callback(self) -> Callable[[Progress], None]:
        def forward(p: Progress) -> None:
            if self.progress is not None:
                lo, hi = PHASES["compress"]
                self.progress(dataclasses.replace(p, fraction=lo + (hi - lo) * p.fraction, eta_s=None))
        return forward


# Model files up to this size are hashed whole; larger ones by sampled chunks (see _file_digest).
FULL_HASH_MAX_BYTES = 256 * 2**20
SAMPLE_CHUNKS = 64
SAMPLE_CHUNK_BYTES = 2**20
# Files of a model folder that cannot change a measurement (a model card, its pictures).
DOC_SUFFIXES = (".md", ".png", ".jpg", ".jpeg", ".gif", ".svg")
_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime_ns, ctime_ns, inode) -> digest, for this process


def _file_digest(path: Path, st: os.stat_result) -> str:
    """sha256 of a model file: of all of it up to FULL_HASH_MAX_BYTES, else of its size, mtime_ns and
    SAMPLE_CHUNKS evenly spaced chunks of SAMPLE_CHUNK_BYTES.

    The trade-off for large files: 64 MiB are read (well under a second) instead of the whole
    checkpoint (a minute for 14 GB on a slow disk), and an edit that keeps the size and the mtime and
    touches only bytes between the chunks goes unseen. A re-quantized, fine-tuned or rescaled
    checkpoint changes nearly every chunk, and a rewrite sets a new mtime unless it is copied back
    with cp -p / rsync -a, which is what the content hash of smaller files guards against.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_MAX_BYTES:
            for block in iter(lambda: f.read(SAMPLE_CHUNK_BYTES), b""):
                h.update(block)
            return h.hexdigest()
        h.update(f"sampled:{st.st_size}:{st.st_mtime_ns}".encode())
        last = st.st_size - SAMPLE_CHUNK_BYTES
        for i in range(SAMPLE_CHUNKS):
            f.seek(last * i // (SAMPLE_CHUNKS - 1))  # first and last chunk included
            h.update(f.read(SAMPLE_CHUNK_BYTES))
    return "sampled-" + h.hexdigest()


def file_digest(path: Path) -> str:
    """`_file_digest`, memoised in this process. The memo key holds ctime and inode besides size and
    mtime: a rewrite whose mtime was set back (os.utime, cp -p) still changes ctime, so it is hashed again."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if key not in _DIGESTS:
        _DIGESTS[key] = _file_digest(path, st)
    return _DIGESTS[key]


def hub_revision(model, repo_id: str) -> str | None:
    """The commit a hub model was loaded from: config._commit_hash (transformers 4), else the
    snapshot the local hub cache's ref "main" points at (transformers 5 keeps no commit on the
    config; `from_pretrained` without a revision loads that ref, and updates it when online)."""
    commit = getattr(model.config, "_commit_hash", None)
    if isinstance(commit, str) and commit:
        return commit
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(repo_id, "config.json")
    except (ImportError, ValueError, OSError):  # no hub library, or not a valid repo id
        return None
    if not isinstance(found, str):
        return None
    snapshot = Path(found).parent  # <cache>/models--org--name/snapshots/<commit>/config.json
    return snapshot.name if snapshot.parent.name == "snapshots" else None


def model_fingerprint(model, spec: str) -> dict:
    """Which weights were measured: the content digest of every file of a local model's folder (but
    its card), or a hub model's revision. `identified` is False when neither is known (a hub model
    missing from the local cache): its baseline must not come from the cache."""
    path = getattr(getattr(model, "config", None), "_name_or_path", "") or ""
    p = Path(path)
    files, revision = [], None
    if p.is_dir():
        for f in sorted(p.iterdir()):
            if f.is_file() and not f.name.startswith(".") and f.suffix.lower() not in DOC_SUFFIXES:
                files.append([f.name, f.stat().st_size, file_digest(f)])
    elif path:
        revision = hub_revision(model, path)
    # "folder", not "path": Gradio's API client treats a dict with a "path" key as a file to download
    return {"spec": spec, "folder": path, "files": files, "revision": revision,
            "identified": bool(files) or revision is not None}


def eval_data_digest(tokens: torch.Tensor, problems: list[dict], prompts: list[str]) -> str:
    """sha256 of what the baseline is measured on: the held-out tokens, the arithmetic problems and
    the sample prompts. Bundled data changes with an app update while a Space's cache persists."""
    h = hashlib.sha256(str(tokens.dtype).encode())
    h.update(tokens.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([problems, prompts], sort_keys=True).encode())
    return h.hexdigest()


def environment(device: str) -> dict:
    import transformers

    env = {"device": device, "python": platform.python_version(), "torch": torch.__version__,
           "transformers": transformers.__version__, "platform": platform.platform(),
           "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def baseline_cache_key(fingerprint: dict, settings: ev.EvalSettings, env: dict, data: str) -> str:
    """The baseline's cache key; `data` is `eval_data_digest` of the tokens, problems and prompts."""
    blob = json.dumps({"v": CACHE_VERSION, "model": fingerprint, "settings": settings.to_dict(), "data": data,
                       "device": env["device"], "python": env["python"], "torch": env["torch"],
                       "transformers": env["transformers"], "threads": env["threads"]}, sort_keys=True)
    return "baseline:" + hashlib.sha256(blob.encode()).hexdigest()


def _n_params(model) -> int:
    """Logical parameter count of the uncompressed model."""
    return sum(p.numel() for p in model.parameters())


def _model_facts(model, n_params: int, w_bytes: int, kv_per_token: float, traits: list[str],
                 bits: float) -> hw.ModelFacts:
    cfg = model.config
    return hw.ModelFacts(weight_bytes=w_bytes, n_params=n_params, n_layers=cfg.num_hidden_layers,
                         kv_bytes_per_token=kv_per_token, max_context=getattr(cfg, "max_position_embeddings", 2048),
                         hidden_size=cfg.hidden_size, traits=traits, weight_bits=bits)


def recipe_traits(stages: list[dict]) -> tuple[list[str], float]:
    """Formats in a recipe that change kernel behaviour (see hardware.warnings_for), and the lowest
    weight bit width."""
    from compressor.engine.registry import load_methods

    methods = load_methods()
    traits, bits = set(), 32.0
    for s in stages:
        method = s.get("method", "")
        if method in methods and methods[method].kind == "kv":
            continue  # bits of a KV stage are the cache's, counted in kv_bytes_per_token
        if method in ("bnb-nf4", "bnb-fp4"):
            traits.add("nf4")
            bits = min(bits, 4)
        elif method == "fp8":
            traits.add("fp8")
            bits = min(bits, 8)
        elif method in ("llm-int8", "smoothquant"):
            traits.add("int8-dynamic")
            bits = min(bits, 8)
        elif isinstance(s.get("bits"), int):
            traits.add("weight-only-int")
            if s["bits"] <= 4:
                traits.add("int4-weight-only")
            bits = min(bits, s["bits"])
        n, m = s.get("prune_n") or s.get("n"), s.get("prune_m") or s.get("m")
        if (n, m) == (2, 4) or s.get("pattern") == "2:4" or s.get("sparsity") == "2:4":
            traits.add("sparse-2:4")
    return sorted(traits), bits


def check_positions(model, tokenizer, settings: ev.EvalSettings, n_tokens: int, prompts: list[str]) -> None:
    """Refuse evaluation lengths beyond the positions the model was trained for, whose numbers would
    measure extrapolation (RoPE) or fail (learned positions), not the model.

    Checked: the longest perplexity window (min(context, n_tokens) tokens, plus the BOS that
    window_logprobs prepends when the tokenizer leads with one), the speed test's prompt + new
    tokens, and the longest sample prompt + max_new_tokens.
    """
    max_pos = ev.max_positions(model)
    if max_pos is None:
        return  # no learned limit to check against
    where = f"the model's max_position_embeddings={max_pos}"
    lead = 0 if ev.leading_bos(tokenizer) is None else 1
    window = min(settings.context, n_tokens) + lead
    if window > max_pos:
        bos = " (with the BOS token prepended to each window)" if lead else ""
        raise LabError(f"eval setting context={settings.context} feeds {window} positions per window{bos}, beyond "
                       f"{where}: use context <= {max_pos - lead}.")
    speed = settings.speed_prompt_tokens + settings.speed_new_tokens
    if speed > max_pos:
        raise LabError(f"eval settings speed_prompt_tokens={settings.speed_prompt_tokens} + speed_new_tokens="
                       f"{settings.speed_new_tokens} = {speed} positions, beyond {where}: use speed_prompt_tokens "
                       f"<= {max_pos - settings.speed_new_tokens}.")
    longest = max((len(tokenizer(p)["input_ids"]) for p in prompts), default=0)
    if prompts and longest + settings.max_new_tokens > max_pos:
        raise LabError(f"eval setting max_new_tokens={settings.max_new_tokens} after a sample prompt of {longest} "
                       f"tokens reaches {longest + settings.max_new_tokens} positions, beyond {where}: use "
                       f"max_new_tokens <= {max_pos - longest}.")


# --- measuring one model ------------------------------------------------------------------------


def measure_quality(model, tokenizer, tokens: torch.Tensor, settings: ev.EvalSettings, problems: list[dict],
                    prompts: list[str], reference: ev.Reference | None = None,
                    emit=None, online: bool = True) -> tuple[dict, ev.Reference]:
    """Perplexity (and KL/top-1 against `reference`), arithmetic, samples, online extras (unless
    `online` is False): what does not change with machine load, so the baseline's part can be cached.
    Returns (section, own ref)."""
    emit = emit or (lambda *a, **k: None)
    t0 = time.perf_counter()
    emit(0.0, "perplexity and KL on held-out text")
    quality, own = ev.evaluate_quality(model, tokens, settings.context, settings.stride, settings.top_k, reference,
                                       bos_id=ev.leading_bos(tokenizer))
    # generation runs through the compressed KV cache when a KV stage configured one; the
    # perplexity windows above are single forwards, which a KV cache does not touch
    with kv_cache_in_generate(model) if getattr(model, "kv_cache_config", None) else contextlib.nullcontext():
        emit(0.3, "arithmetic exact match")
        arith = ev.evaluate_arithmetic(model, tokenizer, problems)
        emit(0.55, "greedy samples")
        samples = ev.greedy_generate(model, tokenizer, prompts, settings.max_new_tokens) if prompts else []
    section = {
        "weight_bytes": weight_bytes(model),
        "perplexity": quality.perplexity,
        "nll": quality.nll,
        "arithmetic_accuracy": arith["accuracy"],
        "arithmetic_ci95": arith["ci95"],
        "arithmetic_n": arith["n"],
        "quality": quality.to_dict() | {"reference_top_k": settings.top_k,
                                        "reference_tail_mass": own.mean_tail_mass},
        "arithmetic": arith,
        "samples": samples,
        "online": ev.online_extras(model, tokenizer, settings) if online else {},
        "quality_seconds": time.perf_counter() - t0,
    }
    if reference is not None:
        section.update(kld=quality.kld, kld_p99=quality.kld_p99, top1_agreement=quality.top1_agreement)
    return section, own


def measure_performance(model, settings: ev.EvalSettings, emit=None) -> dict:
    """Speed, peak memory, KV bytes and kernel paths. Never cached: on a shared machine they move
    with the load, so baseline and compressed are always timed minutes apart in one process."""
    emit = emit or (lambda *a, **k: None)
    emit(0.7, "speed and memory")
    t0 = time.perf_counter()
    speed = measure_speed(model, model.config.vocab_size, settings.speed_prompt_tokens, settings.speed_new_tokens,
                          batches=tuple(sorted({1, settings.speed_batch})), repeats=settings.repeats)
    kv_config = kv_bytes_per_token_from_config(model.config, next(model.parameters()).dtype)
    big = str(settings.speed_batch)
    emit(1.0, "done")
    return {
        "prefill_tokens_per_s": speed["prefill_tokens_per_s"],
        "decode_tokens_per_s": speed["decode_tokens_per_s"],
        f"decode_tokens_per_s_batch_{big}": speed["by_batch"][big]["decode_tokens_per_s"]["median"],
        "time_to_first_token_s": speed["time_to_first_token_s"],
        "peak_memory_bytes": speed["peak_memory_bytes"],
        "peak_memory_delta_bytes": speed["peak_memory_delta_bytes"],
        "kv_bytes_per_token": speed["kv_bytes_per_token_measured"] or kv_config,
        "kv_bytes_per_token_config": kv_config,
        "kernel_paths": kernel_paths(model),
        "speed": speed,
        "speed_seconds": time.perf_counter() - t0,
    }


# --- the run ------------------------------------------------------------------------------------


def run_experiment(model: str, recipe, hardware: str = hw.THIS_MACHINE, settings: dict | ev.EvalSettings | None = None,
                   *, cache=None, progress: Callable[[Progress], None] | None = None,
                   log: Callable[[str], None] | None = None, device: str = "cpu", allow_pickle: bool = False,
                   trust_remote_code: bool = False, projection_context: int = PROJECTION_CONTEXT,
                   projection_batch: int = 1, save_dir: str | Path | None = None) -> Report:
    """Load `model`, measure it, compress it with `recipe`, measure again, project onto `hardware`.

    Bad input (recipe, settings, hardware id, model spec) raises a LabError subclass before any
    long work starts. `cache` is anything with get(key)/put(key, dict) (a JobContext's cache).
    With `save_dir`, the compressed model is saved there (loadable with `load_model(folder)`).
    """
    from compressor.engine.compress import compress
    from compressor.engine.recipe import load_recipe
    from compressor.models.loading import load_model

    log = log or (lambda _: None)
    t_start = time.perf_counter()
    phases = _Phases(progress)
    settings = settings if isinstance(settings, ev.EvalSettings) else ev.EvalSettings.from_dict(settings)
    rec = load_recipe(recipe)
    profile = None if hardware == hw.THIS_MACHINE else hw.get_profile(hardware)
    if projection_context < 1 or projection_batch < 1:
        raise LabError(f"projection context={projection_context}, batch={projection_batch}: both must be >= 1.")

    phases.emit("load", 0.0, f"loading {model}")
    t0 = time.perf_counter()
    net, tokenizer = load_model(model, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code, device=device)
    load_s = time.perf_counter() - t0
    env = environment(device)
    fingerprint = model_fingerprint(net, model)
    n_params = _n_params(net)
    text = held_out_text()
    tokens = ev.eval_tokens(tokenizer, text[: settings.ppl_tokens * CHARS_PER_TOKEN], settings.ppl_tokens)
    if tokens.numel() <= settings.ppl_tokens:  # text denser than expected: use all of it
        tokens = ev.eval_tokens(tokenizer, text, settings.ppl_tokens)
    problems = load_arithmetic()[: settings.arithmetic_samples]
    prompts = load_prompts()
    check_positions(net, tokenizer, settings, tokens.numel(), prompts)
    # A profile that runs 16-bit floats (a GPU) is projected with the baseline as it would run
    # there, not as the fp32 copy loaded here; counted now, before compression changes `net`.
    run_dtype = hw.run_float_dtype(profile) if profile is not None else None
    float_size = next(net.parameters()).element_size()
    base_bytes16 = weight_bytes_at(net, 2) if run_dtype else None

    if cache is not None and not fingerprint["identified"]:
        log(f"{model}: no local files or hub revision identify these weights; the baseline is measured again")
        cache = None
    key = baseline_cache_key(fingerprint, settings, env, eval_data_digest(tokens, problems, prompts))
    cached = cache.get(key) if cache is not None else None
    t0 = time.perf_counter()
    if cached is not None:
        log("baseline quality from cache (speed and memory are measured again)")
        base, reference = cached["section"], ev.Reference.from_dict(cached["reference"])
    else:
        base, reference = measure_quality(net, tokenizer, tokens, settings, problems, prompts,
                                          emit=lambda f, m: phases.emit("evaluate-baseline", f, m))
        if cache is not None:
            cache.put(key, {"section": base, "reference": reference.to_dict()})
    base = base | measure_performance(net, settings, emit=lambda f, m: phases.emit("evaluate-baseline", f, m))
    baseline_s = time.perf_counter() - t0

    phases.emit("compress", 0.0, "compressing")
    t0 = time.perf_counter()
    after_stage = None
    if settings.attribute_stages and len(rec.stages) > 1:
        last = len(rec.stages) - 1  # the last stage's model is the compressed model, measured below

        def after_stage(index: int, model) -> dict:
            return {} if index == last else stage_quality(model, tokenizer, tokens, settings, problems, reference)

    net, creport = compress(net, rec, progress=phases.engine_callback(), tokenizer=tokenizer,
                            after_stage=after_stage)
    compress_s = time.perf_counter() - t0  # includes the per-stage quality checks (timings: stage_eval_s)
    stage_eval_s = sum(s.quality.get("seconds", 0.0) for s in creport.stages)
    log(f"compressed in {compress_s:.1f} s")
    if save_dir is not None:
        from compressor.engine.serialize import save_compressed

        save_compressed(net, tokenizer, save_dir)
        log(f"compressed model saved to {save_dir}")

    t0 = time.perf_counter()
    emit = lambda f, m: phases.emit("evaluate-compressed", f, m)  # noqa: E731
    comp, _ = measure_quality(net, tokenizer, tokens, settings, problems, prompts, reference=reference, emit=emit)
    comp |= measure_performance(net, settings, emit=emit)
    # a model cannot be projected beyond the positions it was trained for (ModelFacts.max_context)
    context = min(projection_context, getattr(net.config, "max_position_embeddings", 2048))
    if getattr(net, "kv_cache_config", None) is not None:
        # A compressed cache's bytes per token depend on the length: KIVI keeps a recent window in fp16,
        # StreamingLLM evicts only past sinks + window. The speed run stops at a few hundred tokens, so
        # fill a real cache layer to the projection's context instead and report that figure.
        comp["kv_bytes_per_token_speed_run"] = comp["kv_bytes_per_token"]
        comp["kv_bytes_per_token"] = model_kv_bytes_per_token(net, net.kv_cache_config, context=context)
        comp["kv_bytes_context"] = context
    comp["arithmetic_diff_ci95"] = list(ev.paired_diff_ci(base["arithmetic"]["correct"],
                                                                  comp["arithmetic"]["correct"]))
    compressed_s = time.perf_counter() - t0

    phases.emit("project", 0.0, "projecting onto hardware")
    profile = profile or hw.this_machine()
    stages = [s.to_dict() for s in rec.stages]
    traits, bits = recipe_traits(stages)
    measured_dtype = str(next(net.parameters()).dtype).removeprefix("torch.")
    if run_dtype:
        # floats (weights, scales, KV cache) at 16 bits; a compressed KV cache keeps its measured bytes
        kv16 = 2 / float_size
        w_bytes = {"baseline": base_bytes16, "compressed": weight_bytes_at(net, 2)}
        kv = {"baseline": base["kv_bytes_per_token"] * kv16,
              "compressed": comp["kv_bytes_per_token"] * (1 if getattr(net, "kv_cache_config", None) else kv16)}
        base_bits, dtype_label = 16.0, f"{run_dtype} (projected)"
    else:
        w_bytes = {name: section["weight_bytes"] for name, section in (("baseline", base), ("compressed", comp))}
        kv = {name: section["kv_bytes_per_token"] for name, section in (("baseline", base), ("compressed", comp))}
        base_bits, dtype_label = _dtype_bits(net), f"{measured_dtype} (as measured)"
    base_facts = _model_facts(net, n_params, w_bytes["baseline"], kv["baseline"], [], base_bits)
    comp_facts = _model_facts(net, n_params, w_bytes["compressed"], kv["compressed"], traits, bits)
    projection = {
        "label": hw.LABEL,
        "hardware": profile.to_dict(),
        "context": context, "batch": projection_batch,
        "context_clamped_from": projection_context if context < projection_context else None,
        "baseline_dtype": dtype_label, "weight_bytes": w_bytes, "kv_bytes_per_token": kv,
        "baseline": hw.project(profile, base_facts, context, projection_batch),
        "compressed": hw.project(profile, comp_facts, context, projection_batch),
    }
    floats = (f" (floats as {run_dtype}, as {profile.name} runs them; measured here in {measured_dtype})"
              if run_dtype else "")
    projection["text"] = [f"{name}{floats}: {hw.projection_text(projection[name])}"
                          for name in ("baseline", "compressed")]
    if profile.id == hw.THIS_MACHINE and device == "cpu":
        projection["check_against_measured"] = _check(profile, base_facts, comp_facts, base, comp, settings)
    phases.emit("project", 1.0, "done")

    creport_d = creport.to_dict() if hasattr(creport, "to_dict") else dataclasses.asdict(creport)
    if after_stage is not None:
        creport_d["stages"][-1]["quality"] = _quality_summary(comp)
    attribution = stage_attribution(base, creport_d["stages"]) if after_stage is not None else []
    env["kernel_paths"] = comp["kernel_paths"]
    samples = [{"prompt": p, "baseline": b, "compressed": c}
               for p, b, c in zip(prompts, base["samples"], comp["samples"], strict=True)]
    return Report(
        model={"spec": model, "n_params": n_params, "architecture": type(net).__name__,
               "fingerprint": fingerprint},
        recipe=rec.to_dict(), hardware=profile.id, settings=settings.to_dict(), baseline=base, compressed=comp,
        compress_seconds=compress_s, samples=samples, projection=projection,
        stages=creport_d.get("stages", []), layers=creport_d.get("layers", []), compression=creport_d,
        attribution=attribution,
        environment=env, online={"baseline": base["online"], "compressed": comp["online"]},
        timings={"load_s": load_s, "baseline_eval_s": baseline_s, "baseline_cached": cached is not None,
                 "compress_s": compress_s, "stage_eval_s": stage_eval_s, "compressed_eval_s": compressed_s,
                 "total_s": time.perf_counter() - t_start},
        warnings=list(creport_d.get("warnings", [])),
    )


QUALITY_KEYS = ("perplexity", "kld", "top1_agreement", "arithmetic_accuracy")


def _quality_summary(section: dict) -> dict:
    """The per-stage quality keys of a measured section (perplexity, KL, top-1, arithmetic)."""
    q = section.get("quality") or {}
    return {"perplexity": section.get("perplexity"), "kld": q.get("kld"), "top1_agreement": q.get("top1_agreement"),
            "arithmetic_accuracy": section.get("arithmetic_accuracy")}


def stage_quality(model, tokenizer, tokens: torch.Tensor, settings: ev.EvalSettings, problems: list[dict],
                  reference: ev.Reference) -> dict:
    """Perplexity, KL and top-1 against the baseline, and arithmetic exact match, of an intermediate model:
    `measure_quality` on the same tokens, windows and problems as the final evaluation (so the last
    stage's numbers and the compressed column agree), without greedy samples or online extras."""
    section, _ = measure_quality(model, tokenizer, tokens, settings, problems, [], reference=reference, online=False)
    return _quality_summary(section) | {"seconds": section["quality_seconds"]}


def stage_attribution(baseline: dict, stages: list[dict]) -> list[dict]:
    """Each stage's share of a stacked recipe's quality change: its metrics minus the previous stage's.

    Row i: {"index", "method", "kind", <key>: value after stage i, "delta_<key>": change caused by
    stage i} for the QUALITY_KEYS; the deltas of all rows sum to the whole recipe's change. The
    baseline is stage -1 (KL 0, top-1 agreement 1). A None anywhere leaves that delta None.
    """
    prev = {"perplexity": baseline.get("perplexity"), "kld": 0.0, "top1_agreement": 1.0,
            "arithmetic_accuracy": baseline.get("arithmetic_accuracy")}
    rows = []
    for s in stages:
        q = s.get("quality") or {}
        row = {"index": s.get("index"), "method": s.get("method"), "kind": s.get("kind")}
        for key in QUALITY_KEYS:
            now, before = q.get(key), prev.get(key)
            row[key] = now
            row[f"delta_{key}"] = now - before if isinstance(now, int | float) and isinstance(before, int | float) \
                else None
        if s.get("kind") == "kv":
            row["note"] = ("a KV-cache stage changes generation only: perplexity windows run without a cache, "
                           "arithmetic exact match is where it shows")
        rows.append(row)
        prev = row
    return rows


def _dtype_bits(model) -> float:
    return 8.0 * next(model.parameters()).element_size()


def _check(profile, base_facts, comp_facts, base: dict, comp: dict, settings: ev.EvalSettings) -> dict:
    """Projected vs measured decode tokens/s on this machine, at the context the speed test used."""
    ctx = settings.speed_prompt_tokens + settings.speed_new_tokens // 2
    out = {"label": hw.LABEL, "context": ctx, "batch": 1}
    for name, facts, section in (("baseline", base_facts, base), ("compressed", comp_facts, comp)):
        projected = 1.0 / hw.decode_seconds(profile, facts, 1, ctx)
        measured = section["decode_tokens_per_s"]
        out[name] = {"projected_decode_tokens_per_s": projected, "measured_decode_tokens_per_s": measured,
                     "ratio_projected_over_measured": projected / measured if measured else None}
    return out


# --- the job target -----------------------------------------------------------------------------

PAYLOAD_KEYS = {"model", "recipe", "hardware", "eval", "samples", "context", "max_new_tokens", "device",
                "allow_pickle", "trust_remote_code", "projection_context", "projection_batch"}
# Short payload names for the most used eval settings.
ALIASES = {"samples": "arithmetic_samples", "context": "context", "max_new_tokens": "max_new_tokens"}


def settings_from_payload(payload: dict) -> ev.EvalSettings:
    evald = payload.get("eval")
    if evald is not None and not isinstance(evald, dict):
        raise LabError(f"payload 'eval'={evald!r} must be a mapping of eval settings, e.g. {{\"ppl_tokens\": 512}}.")
    d = dict(evald or {})
    for short, name in ALIASES.items():
        if payload.get(short) is not None:
            d[name] = payload[short]
    if isinstance(d.get("context"), int) and not isinstance(d["context"], bool) and "stride" not in d:
        d["stride"] = max(8, d["context"] // 2)  # a non-integer context is refused by EvalSettings below
    return ev.EvalSettings.from_dict(d)


def _payload_flag(payload: dict, key: str) -> bool:
    """A JSON boolean only: bool("false") is True, and these flags unlock remote code and pickles."""
    value = payload.get(key, False)
    if not isinstance(value, bool):
        raise LabError(f"payload {key!r}={value!r} must be true or false (a JSON boolean, not a string or number).")
    return value


def _payload_int(payload: dict, key: str, default: int) -> int:
    value = payload.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabError(f"payload {key!r}={value!r} must be a positive integer, e.g. {default}.")
    return value


def _payload_str(payload: dict, key: str, default: str | None = None) -> str:
    value = payload.get(key, default)
    if not isinstance(value, str) or not value.strip():
        example = f", e.g. {default!r}" if default else ""
        raise LabError(f"payload {key!r}={value!r} must be a non-empty string{example}.")
    return value.strip()


def run_job(payload: dict, ctx) -> dict:
    """The background worker's target: payload -> Report as a dict (also saved as report.json)."""
    if not isinstance(payload, dict):
        raise LabError(f"payload must be a dict, got {type(payload).__name__}")
    unknown = sorted(set(payload) - PAYLOAD_KEYS)
    if unknown:
        raise LabError(f"unknown payload key(s) {unknown}: known are {sorted(PAYLOAD_KEYS)}.")
    if not payload.get("model") or payload.get("recipe") in (None, ""):
        raise LabError("payload needs 'model' (e.g. 'demo') and 'recipe' (a preset name, YAML or a dict).")
    if not isinstance(payload["recipe"], str | dict | list):
        raise LabError(f"payload 'recipe'={payload['recipe']!r} must be a preset name, YAML/JSON text, a mapping "
                       "or a list of stages.")
    report = run_experiment(
        _payload_str(payload, "model"), payload["recipe"], _payload_str(payload, "hardware", hw.THIS_MACHINE)
        if payload.get("hardware") is not None else hw.THIS_MACHINE,
        settings_from_payload(payload), cache=ctx.cache, progress=ctx.progress, log=ctx.log,
        device=_payload_str(payload, "device", "cpu"), allow_pickle=_payload_flag(payload, "allow_pickle"),
        trust_remote_code=_payload_flag(payload, "trust_remote_code"),
        projection_context=_payload_int(payload, "projection_context", PROJECTION_CONTEXT),
        projection_batch=_payload_int(payload, "projection_batch", 1),
        save_dir=getattr(ctx, "artifact_dir", None),
    )
    out = report.to_dict()
    artifact_dir = getattr(ctx, "artifact_dir", None)
    if artifact_dir is not None:
        Path(artifact_dir).mkdir(parents=True, exist_ok=True)
        (Path(artifact_dir) / "report.json").write_text(json.dumps(out, indent=2))
    return out



# A small, fast payload (an RTN preset, reduced evaluation) for smoke tests of the job system.
EXAMPLE_PAYLOAD = {"model": "demo", "recipe": "w4-g128", "hardware": "t4",
                   "eval": {"ppl_tokens": 512, "arithmetic_samples": 24, "max_new_tokens": 8, "repeats": 1}}
