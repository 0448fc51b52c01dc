"""What the benchmarks share: a free loopback port, the emulator in a subprocess, peak memory."""

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Sequence

import psutil
import requests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator(options: Sequence[str], timeout: float = 60) -> tuple[subprocess.Popen, str]:
    """Starts `python -m moovitamix_api.cli` with the options on a free loopback port;
    returns (process, base_url) once it answers."""
    port = free_port()
    command = [
        sys.executable, "-m", "moovitamix_api.cli", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "warning", *options,
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT)
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the emulator exited with code {process.returncode}")
        try:
            if requests.get(f"{base_url}/openapi.json", timeout=1).ok:
                return process, base_url
        except requests.ConnectionError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the emulator did not answer within {timeout:g} s")


def stop_emulator(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class PeakRss:
    """Samples a process's resident memory every 10 ms in a thread while the block runs.

    Keeps the (time.time(), rss) samples too, so that the peak of a time window (one
    Dagster step) can be read afterwards with `peak_between`.
    """

    def __init__(self, pid: int):
        self.process = psutil.Process(pid)
        self.start = self.process.memory_info().rss
        self.peak = self.start
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, rss)
            self.samples.append((time.time(), rss))
            time.sleep(0.01)

    def peak_between(self, start: float, end: float) -> int:
        return max((rss for at, rss in self.samples if start <= at <= end), default=0)

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
