"""`python -m kernels.bench` runs end to end in each mode on a tiny shape (it is a script: no timings asserted)."""

from __future__ import annotations

import pytest
import torch

from kernels import bench


@pytest.mark.parametrize("args", [["--quick", "--rounds", "1", "--device", "cpu"],
                                  ["--overhead", "--rounds", "2"],
                                  ["--crossover", "--rounds", "1", "--batches", "1,2"]])
def test_bench_modes_run(args, capsys):
    bench.main(["--shapes", "64x128", "--batches", "1,2", *args] if "--crossover" not in args
               else ["--shapes", "64x128", *args])
    out = capsys.readouterr().out
    assert "load average" in out and "64x128" in out.replace(" ", "")


def test_interleaved_times_every_function_once_per_round():
    calls = []
    times = bench.interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                              torch.device("cpu"), rounds=3, warmup=1)
    assert calls == ["a", "b"] * 4  # one warm-up each, then a, b in turn every round
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
