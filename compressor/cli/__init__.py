"""Command line: `python -m compressor run|sweep|fit|export|presets|hardware`, one module per command group.

    python -m compressor run --model demo --recipe gptq-w4-g128 [--hardware t4] [--json out.json]
    python -m compressor sweep --model demo --recipes int8,w4-g128 [--ray ADDRESS] [--json out.json]
    python -m compressor fit --model smollm2-135m --budget 3.5bits|1.2GiB|hardware:t4 --out recipe.yaml
    python -m compressor export --run RUN_ID --format gguf|compressed-tensors|transformers --out DIR
    python -m compressor presets
    python -m compressor hardware

Exit status: 0 on success, 2 on bad input (the message says what to change), 1 on any other failure,
130 when interrupted. No traceback reaches the terminal unless asked for (`--traceback`, or
LAB_TRACEBACK=1): an unexpected failure prints its type and message and how to see where it came from.
"""

from __future__ import annotations

import os

# Before torch loads (the commands import it): OpenMP threads that spin while waiting stall on shared
# cores (measured 4-6x slower on a busy 2-core machine, shared/ENVIRONMENT.md). Set it to override.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

from compressor.cli import export, fit, hardware, presets, run, sweep  # noqa: E402
from compressor.errors import LabError  # noqa: E402
from compressor.paths import scrub_paths  # noqa: E402

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
COMMANDS = (run, sweep, fit, export, presets, hardware)  # each: add_parser(subparsers) setting `func(args) -> exit status`


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 on usage errors too; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m compressor", description="Compression Lab: compress, measure, project.")
    p.add_argument("--traceback", action="store_true", help="show the traceback of an unexpected failure")
    sub = p.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabError as e:  # RecipeError, ModelLoadError, UnsupportedOnDevice, bad settings
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: the run ran out of memory; try a smaller model, a shorter context or the quick preset",
              file=sys.stderr)
        return EXIT_FAILURE
    except Exception as e:
        if args.traceback or os.environ.get("LAB_TRACEBACK") == "1":
            traceback.print_exc()
        detail = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        print(f"error: the run failed unexpectedly ({scrub_paths(detail)[:500]}); this is a bug or a resource "
              "limit, not bad input. Run again with --traceback to see where it failed.", file=sys.stderr)
        return EXIT_FAILURE
