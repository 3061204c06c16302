"""Which baseline a measurement belongs to: the model's file digests (or hub revision), the evaluation
data's digest, the environment, and the baseline cache key built from them.

A second recipe on the same model skips the baseline's quality measurements when the key matches;
speed and memory are always measured again (they move with the machine's load).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from pathlib import Path

import torch

from compressor.measure.settings import EvalSettings
from compressor.runs.contract import Environment

# Bump when what the baseline's cache entry holds changes: what is measured, or its shape.
# 3: file contents and eval data in the key; 4: typed sections (contract Quality, Arithmetic);
# 5: Arithmetic.max_tokens.
CACHE_VERSION = 5

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


def public_fingerprint(fingerprint: dict) -> dict:
    """The fingerprint as reports show it: what identifies the weights (file names, sizes and digests,
    or the hub revision), with the folder reduced to its name, so no server path reaches a visitor.
    The cache key keeps the full fingerprint."""
    folder = fingerprint.get("folder") or ""
    return {**fingerprint, "folder": Path(folder).name if Path(folder).is_absolute() else folder}


def eval_data_digest(tokens: torch.Tensor, problems: list[dict], prompts: list[str]) -> str:
    """sha256 of what the baseline is measured on: the held-out tokens, the arithmetic problems and
    the sample prompts. Bundled data changes with an app update while a Space's cache persists."""
    h = hashlib.sha256(str(tokens.dtype).encode())
    h.update(tokens.detach().cpu().contiguous().numpy().tobytes())
    h.update(json.dumps([problems, prompts], sort_keys=True).encode())
    return h.hexdigest()


def environment(device: str) -> Environment:
    """Where this run measures: the device, library versions, CPU and threads (and the GPU's name)."""
    import transformers

    gpu = (torch.cuda.get_device_name(torch.device(device))
           if device.startswith("cuda") and torch.cuda.is_available() else None)
    return Environment(device=device, python=platform.python_version(), torch=torch.__version__,
                       transformers=transformers.__version__, platform=platform.platform(),
                       cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads(), gpu=gpu)


def baseline_cache_key(fingerprint: dict, settings: EvalSettings, env: Environment, data: str) -> str:
    """The baseline's cache key; `data` is `eval_data_digest` of the tokens, problems and prompts.
    The GPU's name is not in it (today's key): the device string and the library versions are."""
    blob = json.dumps({"v": CACHE_VERSION, "model": fingerprint, "settings": settings.to_dict(), "data": data,
                       "device": env.device, "python": env.python, "torch": env.torch,
                       "transformers": env.transformers, "threads": env.threads}, sort_keys=True)
    return "baseline:" + hashlib.sha256(blob.encode()).hexdigest()
