"""The layers, read from the source with `ast` (nothing is imported): no import circles, arrows that
point down (cli -> runs -> measure/engine), `compressor` never imports gradio, `kernels` never
imports `compressor`, and no file of runs/ and measure/ over 450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted((ROOT / "compressor").rglob("*.py"))}


def _imports(path: Path, module_level_only: bool) -> set[str]:
    """Absolute names a file imports (`from a import b` gives a and a.b); module level means the
    statements Python runs at import (inside `if` blocks too), not those inside functions."""
    tree = ast.parse(path.read_text())
    if module_level_only:
        nodes = [n for stmt in tree.body for n in (ast.walk(stmt) if isinstance(stmt, ast.If | ast.Try) else [stmt])]
    else:
        nodes = list(ast.walk(tree))
    names = set()
    for n in nodes:
        if isinstance(n, ast.Import):
            names |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module and n.level == 0:
            names |= {n.module} | {f"{n.module}.{a.name}" for a in n.names}
    return names


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _graph(module_level_only: bool, prefixes: tuple[str, ...] = ("compressor",)) -> dict[str, set[str]]:
    mods = {m: p for m, p in MODULES.items() if m.startswith(prefixes)}
    return {m: (_imports(p, module_level_only) & set(mods)) - {m} for m, p in mods.items()}


def test_no_import_circle_when_compressor_is_imported():
    assert _cycles(_graph(module_level_only=True)) == []


def test_no_import_circle_in_runs_measure_and_cli_even_through_imports_inside_functions():
    assert _cycles(_graph(False, ("compressor.runs", "compressor.measure", "compressor.cli"))) == []


@pytest.mark.parametrize("lower,upper", [("compressor.measure", ("compressor.runs", "compressor.cli")),
                                         ("compressor.runs", ("compressor.cli",))])
def test_arrows_point_down(lower, upper):
    up = {m: sorted(n for n in _imports(p, False) if n.startswith(upper))
          for m, p in MODULES.items() if m.startswith(lower)}
    assert {m: names for m, names in up.items() if names} == {}


def test_compressor_never_imports_gradio_and_kernels_never_import_compressor():
    assert [m for m, p in MODULES.items() if any(n.split(".")[0] == "gradio" for n in _imports(p, False))] == []
    kernels = sorted((ROOT / "kernels").rglob("*.py"))
    assert kernels and [p.name for p in kernels
                        if any(n.split(".")[0] == "compressor" for n in _imports(p, False))] == []


def test_runs_and_measure_files_are_short_enough_to_read_in_one_sitting():
    long = {m: n for m, p in MODULES.items() if m.startswith(("compressor.runs", "compressor.measure",
                                                              "compressor.cli"))
            and (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}
