"""Throughput and memory of the API emulator at 1,000 and 1,000,000 users.

Starts `python -m moovitamix_api.cli` on a free loopback port for each scale, fetches a
fixed number of pages of every endpoint over one keep-alive session (for 1M users, pages
spread across the whole range), and prints pages/s, records/s and the server's peak RSS.

    python benchmarks/emulator_benchmark.py [--requests 200]
"""

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("users", "tracks", "listen_history")
AS_OF = "2026-01-01"  # the start date: counts are exactly --users / --tracks


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PeakRss:
    """Samples a process's resident memory every 10 ms in a thread."""

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.NoSuchProcess:
                return
            time.sleep(0.01)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()


def start_emulator(users: int, tracks: int):
    port = free_port()
    command = [
        sys.executable, "-m", "moovitamix_api.cli", "--port", str(port), "--log-level", "warning",
        "--users", str(users), "--tracks", str(tracks), "--as-of", AS_OF,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    process = subprocess.Popen(command, cwd=ROOT, env=env)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{base_url}/openapi.json", timeout=1).ok:
                return process, base_url
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the emulator did not start")


def page_numbers(total_pages: int, count: int) -> list:
    """`count` page numbers spread evenly over 1..total_pages (cycling when there are fewer)."""
    if total_pages >= count:
        return [1 + (i * (total_pages - 1)) // max(count - 1, 1) for i in range(count)]
    return [1 + i % total_pages for i in range(count)]


def run_scale(users: int, tracks: int, requests_per_endpoint: int) -> None:
    process, base_url = start_emulator(users, tracks)
    try:
        session = requests.Session()
        with PeakRss(process.pid) as rss:
            idle = rss.process.memory_info().rss
            for endpoint in ENDPOINTS:
                total_pages = session.get(f"{base_url}/{endpoint}", params={"size": 100}).json()["pages"]
                records = size = 0
                started = time.perf_counter()
                for number in page_numbers(total_pages, requests_per_endpoint):
                    response = session.get(f"{base_url}/{endpoint}", params={"page": number, "size": 100})
                    response.raise_for_status()
                    records += len(response.json()["items"])
                    size += len(response.content)
                seconds = time.perf_counter() - started
                print(
                    f"{users:>9,} users  {endpoint:<15} {requests_per_endpoint:>4} pages of {total_pages:>6,}  "
                    f"{requests_per_endpoint / seconds:7.1f} pages/s  {records / seconds:9,.0f} records/s  "
                    f"{size / seconds / 1e6:6.1f} MB/s"
                )
        print(f"{users:>9,} users  server RSS: {idle / 2**20:.1f} MiB idle, {rss.peak / 2**20:.1f} MiB peak\n")
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="pages fetched per endpoint and scale")
    args = parser.parse_args()
    for users, tracks in ((1_000, 1_000), (1_000_000, 1_000_000)):
        run_scale(users, tracks, args.requests)


if __name__ == "__main__":
    main()
