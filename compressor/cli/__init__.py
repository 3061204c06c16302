"""Command line: `python -m compressor run|presets|hardware`, one module per command group.

    python -m compressor run --model demo --recipe gptq-w4-g128 [--hardware t4] [--json out.json]
    python -m compressor presets
    python -m compressor hardware

Exit status: 0 on success, 2 on bad input (the message says what to change), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from compressor.cli import hardware, presets, run
from compressor.errors import LabError

EXIT_OK, EXIT_FAILURE, EXIT_BAD_INPUT = 0, 1, 2
COMMANDS = (run, presets, hardware)  # each: add_parser(subparsers) setting `func(args) -> exit status`


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse exits 2 on usage errors too; keep its message short
        self.print_usage(sys.stderr)
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m compressor", description="Compression Lab: compress, measure, project.")
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
        return EXIT_FAILURE
    except Exception:
        traceback.print_exc()
        print("error: the run failed (traceback above); this is a bug or a resource limit, not bad input.",
              file=sys.stderr)
        return EXIT_FAILURE
