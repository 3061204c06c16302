"""The page's house rules, checked from the source: small files, a small entry point, no importlib, and
nothing below ui/ importing it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UI = sorted((ROOT / "ui").glob("*.py"))


@pytest.mark.parametrize("path", UI, ids=lambda p: p.name)
def test_each_ui_file_reads_in_one_sitting(path):
    assert len(path.read_text().splitlines()) <= 450


def test_app_py_only_assembles_and_launches():
    text = (ROOT / "app.py").read_text()
    assert len(text.splitlines()) <= 60
    assert "import gradio" not in text and "def build_app" not in text


@pytest.mark.parametrize("path", UI + [ROOT / "app.py"], ids=lambda p: p.name)
def test_engine_code_is_imported_by_name_so_a_broken_file_fails_at_start_up(path):
    assert not re.search(r"\bimportlib\b|__import__", path.read_text())


def test_nothing_below_the_page_imports_it():
    for path in (ROOT / "compressor").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) (ui|app)\b", path.read_text(), re.M), path
