"""Run the recommendations service in a background thread on a free loopback port (for tests and scripts)."""

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Iterator

import requests
import uvicorn
from fastapi import FastAPI

from moovitamix_serving.app import create_app


@contextlib.contextmanager
def serve_in_thread(
    serving_path: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    **app_options,
) -> Iterator[tuple[str, FastAPI]]:
    """Serves the snapshot under `serving_path` until the block exits; yields (base URL, app).

    port=0 binds a free port. The block starts once the server answers /openapi.json; on
    exit the server finishes its open requests and the thread is joined.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    base_url = f"http://{host}:{sock.getsockname()[1]}"
    app = create_app(serving_path, **app_options)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="moovitamix-recs", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if not thread.is_alive():
                raise RuntimeError(f"the recommendations service at {base_url} stopped while starting")
            if server.started:
                with contextlib.suppress(requests.ConnectionError):
                    if requests.get(f"{base_url}/openapi.json", timeout=1).ok:
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the recommendations service at {base_url} did not answer within {startup_timeout} s")
            time.sleep(0.01)
        yield base_url, app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
