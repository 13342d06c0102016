"""Lumiere creator app: ``python app.py [--host H] [--port P] [--model PATH_OR_REPO] [--share]``.

Binds 127.0.0.1 by default (0.0.0.0 on a Hugging Face Space, where SPACE_ID is set); the port comes from
--port, else PORT / GRADIO_SERVER_PORT, else 7860. The model (default: the bundled one in assets/) is
opened lazily: building the UI reads configs only, weights load on the first generation.
On a Space this file is run as ``python app.py``, so the same entry point serves both.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

MAX_FILE_SIZE = "50mb"


def default_host() -> str:
    if os.environ.get("GRADIO_SERVER_NAME"):
        return os.environ["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"


def default_port() -> int:
    for name in ("PORT", "GRADIO_SERVER_PORT"):
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                raise SystemExit(f"error: {name}={value!r} is not a port number") from None
    return 7860


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Lumiere text-to-video studio (Gradio).")
    parser.add_argument("--host", default=default_host(),
                        help="interface to bind (default 127.0.0.1; 0.0.0.0 on Hugging Face Spaces)")
    parser.add_argument("--port", type=int, default=default_port(),
                        help="port (default: $PORT or $GRADIO_SERVER_PORT or 7860)")
    parser.add_argument("--model", default=os.environ.get("LUMIERE_MODEL"),
                        help="pipeline directory or Hub repo id (default: the bundled model in assets/)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link")
    parser.add_argument("--memory-budget", default=None,
                        help="bytes of model weights kept on the accelerator, e.g. 6GB (default: 80%% of it)")
    return parser.parse_args(argv)


def create_demo(model: str | None = None, memory_budget: str | None = None):
    """Build the app (cheap: the model loads lazily). Returns the configured, queued gr.Blocks."""
    from app.model_manager import ModelManager
    from app.ui import QUEUE_SIZE, build_demo

    manager = ModelManager(model, memory_budget=memory_budget)
    demo = build_demo(manager)
    demo.queue(max_size=QUEUE_SIZE, default_concurrency_limit=1)
    return demo


def main(argv=None) -> None:
    from lumiere.threads import configure  # before torch loads: threads that behave on a shared CPU
    configure()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    demo = create_demo(args.model, args.memory_budget)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share,
                max_file_size=MAX_FILE_SIZE, show_error=False)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
