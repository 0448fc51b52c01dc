"""The recommendations service under load: a million users' lists, concurrent clients, a version swap.

    .venv/bin/python benchmarks/serving_benchmark.py
    .venv/bin/python benchmarks/serving_benchmark.py --users 100000 --seconds 10 --connections 8 32

1. Publishes a synthetic serving snapshot of --users users (10 tracks each, 20,000 tracks,
   the cold-start lists) with the writer the pipeline uses, and times it.
2. Starts `moovitamix-recs` as its own process (one uvicorn worker) on a free loopback port
   and times how long it takes to answer /health with that version (load and verify).
3. For each --connections value, a client process (asyncio over uvloop, keep-alive HTTP/1.1,
   so it takes the other core and no GIL of the server's) asks for random users' lists
   (90% known users, 10% unknown ones with a genre) for --seconds: requests/s, p50/p90/p99
   and max latency as the client sees them, and every non-200.
4. The same load again while a second version of the same size is published: how long
   after the manifest is replaced the service serves it ("live"), and the latency and
   errors around the swap.
The service's peak RSS is sampled every 10 ms throughout. On this 2-core machine the client
and the server share the machine with whatever else runs: read the figures as orders of
magnitude. Targets (issue 13): >= 2,000 requests/s with p99 < 20 ms for one process,
memory < 1 GB, a new version live within 10 s.
"""

import argparse
import asyncio
import datetime as dt
import multiprocessing
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from measure import PeakRss, free_port  # noqa: E402
from moovitamix_assets_tests.serving_tests.synthetic import GENRES, synthetic_content  # noqa: E402
from moovitamix_serving import files  # noqa: E402


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def request_lines(user_ids: np.ndarray, count: int, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    lines = []
    for _ in range(count):
        if rng.random() < 0.9:
            path = f"/users/{int(user_ids[rng.randrange(len(user_ids))])}/recommendations?k=10"
        else:
            path = f"/users/{rng.randrange(10**12, 2 * 10**12)}/recommendations?k=10&favorite_genre={rng.choice(GENRES).replace(' ', '%20').replace('&', '%26')}"
        lines.append(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    return lines


async def _connection(port: int, lines: list[bytes], deadline: float, latencies: list, statuses: dict, offset: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    index = offset
    while time.perf_counter() < deadline:
        line = lines[index % len(lines)]
        index += 1
        started = time.perf_counter()
        writer.write(line)
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for header in head.split(b"\r\n"):
            if header[:15].lower() == b"content-length:":
                length = int(header[15:])
        await reader.readexactly(length)
        latencies.append(time.perf_counter() - started)
        status = int(head[9:12])
        statuses[status] = statuses.get(status, 0) + 1
    writer.close()


def client(port: int, lines: list[bytes], connections: int, seconds: float, results) -> None:
    """Runs in its own process; sends back (latencies, statuses, start, end)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    latencies: list = []
    statuses: dict = {}

    async def run() -> tuple[float, float]:
        started = time.time()
        deadline = time.perf_counter() + seconds
        await asyncio.gather(*(_connection(port, lines, deadline, latencies, statuses, i * 997) for i in range(connections)))
        return started, time.time()

    started, ended = asyncio.run(run())
    results.send((np.array(latencies), statuses, started, ended))


def drive(port: int, lines: list[bytes], connections: int, seconds: float, during=None) -> dict:
    """Load from a client process; `during()`, when given, runs in this process meanwhile."""
    receiving, sending = multiprocessing.Pipe(duplex=False)
    process = multiprocessing.get_context("spawn").Process(target=client, args=(port, lines, connections, seconds, sending))
    process.start()
    extra = during() if during else None
    latencies, statuses, started, ended = receiving.recv()
    process.join()
    return {
        "requests": len(latencies),
        "per_second": len(latencies) / (ended - started),
        "p50_ms": 1000 * float(np.percentile(latencies, 50)),
        "p90_ms": 1000 * float(np.percentile(latencies, 90)),
        "p99_ms": 1000 * float(np.percentile(latencies, 99)),
        "max_ms": 1000 * float(latencies.max()),
        "non_200": sum(count for status, count in statuses.items() if status != 200),
        "extra": extra,
        "window": (started, ended),
    }


def health(base_url: str) -> dict:
    return requests.get(f"{base_url}/health", timeout=10).json()


def wait_for_version(base_url: str, version: str, timeout: float = 120) -> float:
    """Seconds until /health says the version is served."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if health(base_url).get("serving_version") == version:
                return time.monotonic() - started
        except requests.ConnectionError:
            pass
        time.sleep(0.02)
    raise TimeoutError(f"{version} not served within {timeout} s")


def load_seconds(base_url: str) -> float:
    """The service's own figure: how long its last version load and verification took."""
    metrics = requests.get(f"{base_url}/metrics", timeout=10).text
    return float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("moovitamix_recs_version_load_seconds ")))


def report(label: str, figures: dict) -> None:
    print(
        f"  {label}: {figures['requests']:,} requests, {figures['per_second']:,.0f}/s, "
        f"p50 {figures['p50_ms']:.1f} ms, p90 {figures['p90_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms, "
        f"max {figures['max_ms']:.0f} ms, non-200: {figures['non_200']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each load phase")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32], help="concurrent keep-alive connections")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="serving-benchmark-"))
    print(f"{args.users:,} users, 10 tracks each, 20,000 tracks; snapshot in {root}")
    started = time.monotonic()
    first = synthetic_content(args.users, tracks=20_000, seed=1)
    built = time.monotonic() - started
    started = time.monotonic()
    version = files.publish(root, first, keep_previous=1, published_at=now()).version
    written = time.monotonic() - started
    megabytes = sum(path.stat().st_size for path in files.version_directory(root, version).iterdir()) / 2**20
    print(f"  lists built in {built:.1f} s; version written and published in {written:.1f} s ({megabytes:.0f} MiB on disk)")

    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    service = subprocess.Popen(
        [sys.executable, "-m", "moovitamix_serving.cli", "--port", str(port), "--serving-path", str(root),
         "--poll-seconds", "1", "--log-level", "warning"],
    )  # fmt: skip
    try:
        with PeakRss(service.pid) as memory:
            wait_for_version(base_url, version)
            print(f"  service up and serving {version} {time.monotonic() - started:.1f} s after its start "
                  f"(load and verification {load_seconds(base_url):.2f} s); RSS {memory.process.memory_info().rss / 2**20:.0f} MiB")  # fmt: skip
            lines = request_lines(first.user_ids, 20_000, seed=7)
            drive(port, lines, 8, 2.0)  # warm-up: page in the arrays, settle the JIT-less paths
            for connections in args.connections:
                report(f"{connections} connections", drive(port, lines, connections, args.seconds))

            second = synthetic_content(args.users, tracks=20_000, seed=2, model_version="20261102T030000000000-als")

            def swap() -> dict:
                time.sleep(args.seconds / 4)
                started = time.monotonic()
                new = files.publish(root, second, keep_previous=1, published_at=now()).version
                written = time.monotonic() - started
                return {"version": new, "written": written, "live": wait_for_version(base_url, new)}

            connections = args.connections[0]
            during = drive(port, lines, connections, args.seconds, during=swap)
            swap_figures = during["extra"]
            report(f"{connections} connections during the swap", during)
            print(f"  second version written and published in {swap_figures['written']:.1f} s; live "
                  f"{swap_figures['live']:.2f} s after its manifest was replaced (load and verification "
                  f"{load_seconds(base_url):.2f} s, the rest waiting for the next 1 s poll)")  # fmt: skip
        print(f"  service peak RSS {memory.peak / 2**20:.0f} MiB")
    finally:
        service.terminate()
        service.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
