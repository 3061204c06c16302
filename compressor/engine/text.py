"""Text that calibration and evaluation share: the standard-library docstring corpus, split by module
into a training half (calibration, the demo model's training) and an evaluation half (held out), and
how a tokenizer starts a text.

The docstrings are read from the source files with `ast` (nothing is imported, so no module side
effects). Modules go to the evaluation split by a fixed hash of their path, so the bundled demo model
never saw the evaluation text and calibrating on "builtin" text never flatters a method on it.
Docstrings change a little between Python versions, so perplexities are comparable within one.
"""

from __future__ import annotations

import ast
import functools
import sysconfig
import zlib
from collections.abc import Iterator
from pathlib import Path

# One module in EVAL_SHARE goes to the evaluation split (by CRC32 of its relative path).
EVAL_SHARE = 4
# Docstrings shorter than this are mostly one-liners ("Return self.") and teach nothing.
MIN_DOC_CHARS = 200


def _is_eval_path(rel: str) -> bool:
    return zlib.crc32(rel.encode()) % EVAL_SHARE == 0


def _stdlib_sources() -> list[tuple[str, Path]]:
    root = Path(sysconfig.get_paths()["stdlib"])
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo")
    out = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if any(part in skip for part in rel.split("/")):
            continue
        out.append((rel, path))
    return out


def _docstrings(path: Path) -> Iterator[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
    except (SyntaxError, ValueError):
        return
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node)
            if doc and len(doc) >= MIN_DOC_CHARS:
                yield doc.strip()


@functools.lru_cache(maxsize=2)
def stdlib_docstrings(split: str) -> tuple[str, ...]:
    """Docstrings of the standard library, `split` = "train" or "eval" (disjoint by module).

    Parsing the library takes seconds, so each split is read once per process."""
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    want_eval = split == "eval"
    docs = []
    for rel, path in _stdlib_sources():
        if _is_eval_path(rel) == want_eval:
            docs.extend(_docstrings(path))
    return tuple(docs)


def leading_bos(tokenizer) -> int | None:
    """The BOS id when this tokenizer starts every text with it (Llama's, the demo model's), else None.

    Such models only ever saw BOS at position 0 in training, so each evaluation window, each prompt and
    each calibration window starts with it too; a window starting mid-sentence at position 0 is out of
    distribution.
    """
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a")["input_ids"]
    return bos if bos is not None and ids and ids[0] == bos else None
