"""Upstreams the reliability tests control: the emulator as a process that can be killed,
and a contract-shaped server that serves records planted by a test."""

import contextlib
import dataclasses
import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qs, urlsplit

import requests

from moovitamix_api.settings import EmulatorSettings

# uvicorn's access log line of a page served: `... "GET /users?page=3&size=100 HTTP/1.1" 200`
SERVED_PAGE = re.compile(r'"GET /(\w+)\?[^"]* HTTP/1\.1" 200')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def emulator_arguments(settings: EmulatorSettings) -> List[str]:
    """The `moovitamix-api` options that reproduce `settings`."""
    arguments = []
    for field in dataclasses.fields(EmulatorSettings):
        value = getattr(settings, field.name)
        if value is None or value == field.default:
            continue
        flag = "--" + field.metadata.get("cli", field.name.replace("_", "-"))
        for item in value if isinstance(value, tuple) else [value]:
            arguments += [flag, item.isoformat() if hasattr(item, "isoformat") else str(item)]
    return arguments


class EmulatorProcess:
    """`moovitamix-api` in its own process, counting the pages it has served.

    kill() stops it the way a crashed upstream stops: at once, connections refused after.
    """

    def __init__(self, settings: EmulatorSettings, port: Optional[int] = None):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.served: Counter = Counter()  # endpoint -> pages answered 200
        self._changed = threading.Condition()
        command = [str(Path(sys.executable).parent / "moovitamix-api"), "--port", str(self.port)]
        command += ["--log-level", "info", "--access-log", *emulator_arguments(settings)]
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        threading.Thread(target=self._read_log, daemon=True).start()
        self._wait_until_up()

    def _read_log(self) -> None:
        for line in self.process.stdout:
            match = SERVED_PAGE.search(line)
            if match:
                with self._changed:
                    self.served[match.group(1)] += 1
                    self._changed.notify_all()

    def _wait_until_up(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moovitamix-api exited with {self.process.returncode}")
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{self.base_url}/openapi.json", timeout=1).ok:
                    return
            time.sleep(0.05)
        raise TimeoutError(f"moovitamix-api did not answer on {self.base_url}")

    def wait_for_pages(self, endpoint: str, pages: int, timeout: float = 60.0) -> int:
        """Blocks until `pages` pages of /endpoint have been served; returns the count."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.served[endpoint] >= pages, timeout):
                raise TimeoutError(f"only {self.served[endpoint]} pages of /{endpoint} served")
            return self.served[endpoint]

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def __enter__(self) -> "EmulatorProcess":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.kill()


# Valid records of the contract, any field overridden by a test.
def user(user_id, **fields):
    return {
        "id": user_id, "first_name": "Ada", "last_name": "Lovelace", "email": f"user{user_id}@example.com",
        "gender": "Female", "favorite_genres": "Jazz",
        "created_at": "2026-10-01T08:00:00", "updated_at": "2026-10-02T09:30:00.123456", **fields,
    }  # fmt: skip


def track(track_id, **fields):
    return {
        "id": track_id, "name": "So What", "artist": "Miles Davis", "songwriters": "Miles Davis",
        "duration": "09:22", "genres": "modal", "album": "Kind of Blue",
        "created_at": "2026-10-01T08:00:00", "updated_at": "2026-10-02T09:30:00", **fields,
    }  # fmt: skip


def history(user_id, items, **fields):
    return {
        "user_id": user_id, "items": items,
        "created_at": "2026-10-01T08:00:00", "updated_at": "2026-10-02T09:30:00", **fields,
    }  # fmt: skip


@dataclasses.dataclass
class PlantedUpstream:
    """What a contract-shaped server serves, and what it saw of the requests."""

    records: Dict[str, List[Any]]  # endpoint -> records, served in order, paginated by size
    bodies: Dict[str, bytes] = dataclasses.field(default_factory=dict)  # endpoint -> a fixed body
    status: int = 200
    authorizations: List[Optional[str]] = dataclasses.field(default_factory=list)

    def page(self, endpoint: str, number: int, size: int) -> dict:
        records = self.records.get(endpoint, [])
        items = records[(number - 1) * size : number * size]
        pages = math.ceil(len(records) / size)
        return {"items": items, "total": len(records), "page": number, "size": size, "pages": pages}


@contextlib.contextmanager
def serve_planted(upstream: PlantedUpstream) -> Iterator[str]:
    """Serves `upstream` on a free loopback port in a thread; yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            upstream.authorizations.append(self.headers.get("Authorization"))
            url = urlsplit(self.path)
            endpoint = url.path.strip("/")
            query = parse_qs(url.query)
            if endpoint in upstream.bodies:
                body = upstream.bodies[endpoint]
            else:
                page = upstream.page(endpoint, int(query["page"][0]), int(query["size"][0]))
                body = json.dumps(page, ensure_ascii=False).encode()
            self.send_response(upstream.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
