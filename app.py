"""Compression Lab in the browser: pick a model, a recipe and a hardware profile; compare side by side.

The Space's entry point: the page is built from ui/ (one builder per panel) and launched here.

    python app.py                      # http://127.0.0.1:7860 (GRADIO_SERVER_NAME / _PORT respected)
    LAB_DATA_DIR=/some/folder python app.py
"""

from __future__ import annotations

import logging
import os

from ui.page import build_app, serve, stop

__all__ = ["build_app", "serve", "stop", "main"]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    on_space = bool(os.environ.get("SPACE_ID"))
    host = os.environ.get("GRADIO_SERVER_NAME") or ("0.0.0.0" if on_space else "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    demo, _, managers = serve(host=host, port=port, block=False)
    try:
        demo.block_thread()
    finally:
        stop(demo, managers)


if __name__ == "__main__":
    main()
