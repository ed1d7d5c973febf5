"""The web app and the HTTP API on one FastAPI application, and a server that runs it until stopped."""
from __future__ import annotations

import os
import threading
import time

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: a served model stays on its host

import gradio as gr  # noqa: E402
import uvicorn  # noqa: E402
from fastapi import FastAPI  # noqa: E402

from seedx_jax.serve import http_api, ui  # noqa: E402
from seedx_jax.serve.service import Service  # noqa: E402

MAX_UPLOAD = "100mb"  # Gradio refuses larger uploads before they reach the models


def make_app(service: Service, own_folder: str) -> FastAPI:
    """The app: `/` the Gradio UI (and its client API under `/gradio_api`), `/api/v1/...` the JSON endpoints.
    Uploads land in `own_folder/uploads` (Gradio's cache, process-wide), generated images in
    `own_folder/images`; Gradio serves no other folder of this host."""
    os.environ["GRADIO_TEMP_DIR"] = os.path.join(own_folder, "uploads")  # read by Gradio when the app is built
    app = FastAPI(title="seedx_jax", docs_url=None, redoc_url=None)
    http_api.add_routes(app, service)
    blocks = ui.build(service, os.path.join(own_folder, "images"))
    app = gr.mount_gradio_app(app, blocks, path="", allowed_paths=[os.path.join(own_folder, "images")],
                              max_file_size=MAX_UPLOAD, show_error=True)
    # Gradio checks the file paths a request names (only its own uploads may be read) once its Blocks have
    # "launched"; a mounted app never launches, so without this any client could name any file on the host.
    blocks.has_launched = True
    return app


class Server:
    """uvicorn serving `app` on host:port in a background thread (`start`, `stop`) or in the foreground
    (`run`); the port is free again after `stop`."""

    def __init__(self, app: FastAPI, host: str, port: int):
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                     timeout_graceful_shutdown=5))
        self._thread: threading.Thread | None = None
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    def run(self) -> None:
        self._server.run()

    def start(self, timeout_s: float = 60) -> "Server":
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
