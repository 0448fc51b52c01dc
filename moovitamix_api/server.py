"""Run the emulator in a background thread on a free loopback port (for tests and scripts)."""

import contextlib
import socket
import threading
import time
from typing import Iterator, Optional

import requests
import uvicorn

from moovitamix_api.app import create_app
from moovitamix_api.settings import EmulatorSettings


@contextlib.contextmanager
def serve_in_thread(
    settings: Optional[EmulatorSettings] = None,
    host: str = "127.0.0.1",
    port: int = 0,
    startup_timeout: float = 10.0,
    log_level: str = "warning",
) -> Iterator[str]:
    """Serve the emulator with `settings` until the block exits; yields its base URL.

    port=0 binds a free port. The block starts once the server answers /openapi.json;
    on exit the server finishes its open requests and the thread is joined.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    base_url = f"http://{host}:{sock.getsockname()[1]}"
    config = uvicorn.Config(create_app(settings), log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="moovitamix-api", daemon=True)
    thread.start()
    try:
        _wait_until_up(server, thread, base_url, startup_timeout)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _wait_until_up(server: uvicorn.Server, thread: threading.Thread, base_url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError(f"the emulator at {base_url} stopped while starting")
        if server.started:
            try:
                if requests.get(f"{base_url}/openapi.json", timeout=1).ok:
                    return
            except requests.ConnectionError:
                pass
        time.sleep(0.01)
    raise TimeoutError(f"the emulator at {base_url} did not answer within {timeout} s")
