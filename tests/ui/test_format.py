"""compressor.runs.format: how a figure reads on the page and in the CLI, odd values included."""

from __future__ import annotations

import pytest

from compressor.runs import format as f

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("value,kind", [(NAN, "bytes"), (NAN, "num"), (NAN, "rate"), (NAN, "pct"), ("12", "num"),
                                        (None, "kl"), (True, "int"), (NAN, "latency"), ("3", "duration")])
def test_fmt_shows_na_for_values_that_are_not_numbers(value, kind):
    assert f.fmt(value, kind) == "n/a"


def test_fmt_shows_infinity_as_a_symbol_not_a_unit():
    assert f.fmt(INF, "num") == "∞"
    assert f.fmt(INF, "bytes") == "∞"
    assert f.fmt(-INF, "rate") == "-∞"


@pytest.mark.parametrize("value,kind,text", [
    (34816, "bytes", "34.0 KiB"), (512, "bytes", "512 B"), (0.8125, "pct", "81.2 %"), (1234.5, "rate", "1,234"),
    (22.88, "rate", "22.9"), (0.0038084, "kl", "0.0038"), (107.328, "num", "107.33"), (2048.0, "int", "2,048"),
    (0.01234, "latency", "12.3 ms"), (2.5, "latency", "2.50 s"), (3, "duration", "3.0 s"),
])
def test_each_kind_reads_with_its_unit(value, kind, text):
    assert f.fmt(value, kind) == text


def test_an_unknown_kind_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="bytes, pct"):
        f.fmt(1.0, "furlongs")


@pytest.mark.parametrize("base,comp,kind,text", [
    (0.0, 0.25, "pct", "+25.0 pts"),  # points: defined from a 0 % baseline too
    (10.0, 12.0, "num", "+20.0%"), (100, 25, "bytes", "-75.0%"),
    (0, 5, "num", ""), (10.0, NAN, "num", ""), (None, 1.0, "pct", ""), (INF, 1.0, "num", ""),
])
def test_delta_is_points_for_percentages_and_relative_otherwise(base, comp, kind, text):
    assert f.fmt_delta(base, comp, kind) == text


@pytest.mark.parametrize("base,comp,higher,tone", [
    (10.0, 12.0, False, "bad"), (10.0, 9.0, False, "good"), (50.0, 40.0, True, "bad"), (0.5, 0.6, True, "good"),
    (1.0, 1.0, True, "neutral"), (10.0, NAN, False, "neutral"), (None, 3.0, True, "neutral"),
])
def test_delta_tone_follows_the_direction_of_the_metric(base, comp, higher, tone):
    assert f.delta_tone(base, comp, higher) == tone


@pytest.mark.parametrize("delta,kind,text", [(0.0625, "pct", "+6.2 pts"), (0.0038, "kl", "+0.0038"),
                                             (-0.72351, "num", "-0.72"), (NAN, "num", ""), (None, "kl", "")])
def test_change_of_a_stage(delta, kind, text):
    assert f.fmt_change(delta, kind) == text


@pytest.mark.parametrize("ci,kind,text", [
    ((0.5699, 0.9341), "pct", "[57.0, 93.4] %"), ([-0.1635, 0.1635], "pts", "[-16.4, +16.4] pts"),
    (None, "pct", "n/a"), ((0.1, NAN), "pct", "n/a"), ((1.0,), "pct", "n/a"), ((1.0, 2.5), "num", "[1.00, 2.50]"),
])
def test_interval(ci, kind, text):
    assert f.fmt_interval(ci, kind) == text


def test_formatting_loads_no_gradio():
    import subprocess
    import sys

    code = "import sys, compressor.runs.format; assert 'gradio' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
