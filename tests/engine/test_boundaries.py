"""The engine's house rules, checked on the code: files small enough for one sitting, no import circle
inside compressor.engine, and no arrow to compressor.runs, compressor.measure or gradio."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "compressor" / "engine"
MAX_LINES = 450
# recipe -> presets is the arrow; presets.get_preset still points back (lazily) until compressor/__init__.py
# and compressor/cli/presets.py import get_preset from compressor.engine.recipe. Remove it then.
TRANSITIONAL: set[tuple[str, str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ENGINE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every compressor.engine module `path` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        found |= {n for n in names if n in known}
    return found


def test_every_engine_file_fits_in_one_sitting():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in ENGINE.rglob("*.py")}
    long = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert not long


def test_no_import_circle_inside_the_engine():
    known = _modules()
    graph = {m: {t for t in _imports(p, known) if t != m and (m, t) not in TRANSITIONAL} for m, p in known.items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            assert state.get(t) != 1, "import circle: " + " -> ".join([*path[path.index(t):], t])
            if t not in state:
                visit(t, [*path, t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_the_engine_imports_no_runs_measure_or_gradio_and_serialize_no_method():
    code = """
import importlib, pkgutil, sys
import compressor.engine.serialize
assert not [m for m in sys.modules if m.startswith("compressor.engine.methods.")], "serialize imports a method"
import compressor.engine as engine
for info in pkgutil.walk_packages(engine.__path__, "compressor.engine."):
    importlib.import_module(info.name)
from compressor.engine.registry import load_methods
load_methods()
bad = sorted(m for m in sys.modules if m.startswith(("compressor.runs", "compressor.measure", "gradio")))
assert not bad, bad
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
