"""Throughput and memory of the API emulator at 1,000 and 1,000,000 users.

Starts `python -m moovitamix_api.cli` on a free loopback port for each scale, fetches a
fixed number of pages of every endpoint over one keep-alive session (for 1M users, pages
spread across the whole range), and prints pages/s, records/s and the server's peak RSS.

    python benchmarks/emulator_benchmark.py [--requests 200]
"""

import argparse
import time
from pathlib import Path

import requests

from measure import PeakRss, start_emulator

ROOT = Path(__file__).resolve().parents[1]
ENDPOINTS = ("users", "tracks", "listen_history")
AS_OF = "2026-01-01"  # the start date: counts are exactly --users / --tracks


def start_emulator_at(users: int, tracks: int):
    return start_emulator(["--users", str(users), "--tracks", str(tracks), "--as-of", AS_OF])


def page_numbers(total_pages: int, count: int) -> list:
    """`count` page numbers spread evenly over 1..total_pages (cycling when there are fewer)."""
    if total_pages >= count:
        return [1 + (i * (total_pages - 1)) // max(count - 1, 1) for i in range(count)]
    return [1 + i % total_pages for i in range(count)]


def run_scale(users: int, tracks: int, requests_per_endpoint: int) -> None:
    process, base_url = start_emulator_at(users, tracks)
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
