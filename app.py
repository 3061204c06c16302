"""Compression Lab in the browser: pick a model, a recipe and a hardware profile; compare side by side.

The Space's entry point: the page is built from ui/ (one builder per panel) and launched here.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT respected)
    LAB_DATA_DIR=/some/folder python app.py
"""

from __future__ import annotations

import logging
import os
import sys

from compressor.errors import LabError
from compressor.runs.signals import stop_on_sigterm
from ui.page import build_app, serve, stop

__all__ = ["build_app", "serve", "stop", "main"]


def main() -> int:
    """Serves the app until Ctrl-C or SIGTERM (a Space stopping): runs still going end marked. A bad setting
    (LAB_* values, a damaged run store) is one message and exit status 2, not a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    on_space = bool(os.environ.get("SPACE_ID"))
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1")
    port = os.environ.get("GRADIO_SERVER_PORT") or "7860"
    try:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise LabError(f"GRADIO_SERVER_PORT={port[:20]!r} is not a port: use a number from 1 to 65535")
        demo, _, managers = serve(host=host, port=int(port), block=False)
    except LabError as e:
        print(f"Compression Lab cannot start: {e}", file=sys.stderr)
        return 2
    stop_on_sigterm(*managers)
    try:
        demo.block_thread()
    finally:
        stop(demo, managers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
