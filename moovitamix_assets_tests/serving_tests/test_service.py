"""The recommendations service, served for real on a loopback port over real snapshot files:
every field, k bounds, unknown users, /health, /metrics, a version swap under load, and a
corrupt version refused while the previous one keeps serving."""

import datetime as dt
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from moovitamix_serving import files
from moovitamix_serving.files import publish, write_manifest, write_version
from moovitamix_serving.server import serve_in_thread
from moovitamix_assets_tests.serving_tests.synthetic import AWKWARD_NAME, expected_response, synthetic_content
from moovitamix_assets_tests.test_make_dev import free_port, wait_for

POLL = 0.05  # seconds between the service's manifest reads in these tests


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def wait_for_version(base_url: str, version: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        health = requests.get(f"{base_url}/health", timeout=5).json()
        if health["serving_version"] == version:
            return health
        if time.monotonic() > deadline:
            raise TimeoutError(f"still serving {health['serving_version']}, not {version}: {health}")
        time.sleep(POLL)


@pytest.fixture
def content():
    return synthetic_content(1_000, seed=11)


@pytest.fixture
def served(tmp_path, content):
    """(base URL, version) of a service over one published version."""
    version = publish(tmp_path, content, keep_previous=2, published_at=now()).version
    with serve_in_thread(tmp_path, poll_seconds=POLL) as (base_url, _):
        yield base_url, version


def test_a_known_users_list_has_every_field(served, content):
    base_url, version = served
    positions = {
        "model": 0, "short list (3 tracks)": 6, "genre_fallback": 9, "popularity_fallback": 24,
        "holds the awkward name": int(np.searchsorted(content.offsets, np.flatnonzero(content.row_tracks == 0)[0], side="right")) - 1,
    }  # fmt: skip
    for what, position in positions.items():
        user_id = int(content.user_ids[position])
        for k in (1, 3, 10, 100):
            response = requests.get(f"{base_url}/users/{user_id}/recommendations", params={"k": k}, timeout=5)
            assert response.status_code == 200, what
            assert response.headers["content-type"] == "application/json"
            assert response.json() == expected_response(content, version, user_id, k), (what, k)
    assert requests.get(f"{base_url}/users/{int(content.user_ids[0])}/recommendations").json() == expected_response(
        content, version, int(content.user_ids[0]), 10
    )  # k defaults to 10

    body = requests.get(f"{base_url}/users/{int(content.user_ids[0])}/recommendations", timeout=5).json()
    assert list(body) == ["user_id", "serving_version", "model_version", "snapshot_date", "generated_at", "source", "recommendations"]
    assert list(body["recommendations"][0]) == ["rank", "track_id", "name", "artist", "genre", "score", "reason"]
    assert [item["rank"] for item in body["recommendations"]] == list(range(1, 11))
    assert body["source"] == "model" and {item["reason"] for item in body["recommendations"]} == {None}
    short = requests.get(f"{base_url}/users/{int(content.user_ids[6])}/recommendations", params={"k": 100}, timeout=5).json()
    assert len(short["recommendations"]) == 3  # a list shorter than k comes whole
    awkward = requests.get(f"{base_url}/users/{int(content.user_ids[positions['holds the awkward name']])}/recommendations", params={"k": 100}).json()
    assert AWKWARD_NAME in [item["name"] for item in awkward["recommendations"]]


@pytest.mark.parametrize("k", ["0", "-1", "101", "1000", "ten", "1.5"])
def test_k_outside_1_to_100_is_a_422(served, content, k):
    base_url, _ = served
    response = requests.get(f"{base_url}/users/{int(content.user_ids[0])}/recommendations", params={"k": k}, timeout=5)
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["query", "k"]


def test_user_ids_that_are_not_int64_are_a_422(served):
    base_url, _ = served
    for user_id in ("abc", str(2**63), "1.5"):
        response = requests.get(f"{base_url}/users/{user_id}/recommendations", timeout=5)
        assert response.status_code == 422, user_id
        assert response.json()["detail"][0]["loc"] == ["path", "user_id"]
    assert requests.get(f"{base_url}/users/{2**63 - 1}/recommendations", timeout=5).status_code == 200


def test_unknown_users_get_the_cold_start_list_of_their_genre_or_the_global_one(served, content):
    base_url, version = served
    unknown = int(content.user_ids[-1]) + 1
    cases = [
        ({"favorite_genre": "Jazz"}, "genre_fallback", "Jazz"),
        ({"favorite_genre": "  hip HOP "}, "genre_fallback", "Hip Hop"),  # matched whatever the case and spaces
        ({"favorite_genre": "R&B", "k": 100}, "genre_fallback", "R&B"),
        ({"favorite_genre": "Polka"}, "popularity_fallback", None),  # a genre nobody has: the global list
        ({}, "popularity_fallback", None),
        ({"k": 1}, "popularity_fallback", None),
    ]
    for params, source, genre in cases:
        for user_id in (unknown, 0, -7):
            response = requests.get(f"{base_url}/users/{user_id}/recommendations", params=params, timeout=5)
            assert response.status_code == 200
            body = response.json()
            assert body == expected_response(content, version, user_id, params.get("k", 10), params.get("favorite_genre"))
            assert body["source"] == source and len(body["recommendations"]) == params.get("k", 10)
            expected_rows = content.cold_start["genres"][genre]["rows"] if genre else content.cold_start["global"]["rows"]
            assert [item["track_id"] for item in body["recommendations"]] == [
                content.tracks[row[0]][0] for row in expected_rows[: params.get("k", 10)]
            ]
    # A known user's declared genre changes nothing: their own list is served.
    known = int(content.user_ids[3])
    assert requests.get(f"{base_url}/users/{known}/recommendations", params={"favorite_genre": "Jazz"}).json() == (
        expected_response(content, version, known)
    )


def test_health_says_which_version_how_old_and_whether_stale(tmp_path):
    generated = now() - dt.timedelta(hours=2)
    content = synthetic_content(100, generated_at=generated)
    version = publish(tmp_path, content, keep_previous=1, published_at=now()).version
    for stale_after, stale in ((3 * 3600, False), (3600, True)):
        with serve_in_thread(tmp_path, poll_seconds=POLL, stale_after_seconds=stale_after) as (base_url, _):
            response = requests.get(f"{base_url}/health", timeout=5)
        health = response.json()
        assert response.status_code == 200
        assert 7200 <= health["age_seconds"] < 7200 + 60
        assert health["stale"] is stale and health["status"] == ("stale" if stale else "ok")
        assert {key: health[key] for key in ("serving_version", "manifest_version", "model_version", "snapshot_date",
                                             "generated_at", "users", "stale_after_seconds", "error")} == {
            "serving_version": version, "manifest_version": version, "model_version": content.model_version,
            "snapshot_date": "2026-11-01", "generated_at": content.generated_at, "users": 100,
            "stale_after_seconds": stale_after, "error": None,
        }  # fmt: skip


def test_before_anything_is_published_it_answers_503_then_serves_the_first_version(tmp_path):
    with serve_in_thread(tmp_path, poll_seconds=POLL) as (base_url, _):
        health = requests.get(f"{base_url}/health", timeout=5)
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["stale"] is True
        assert health.json()["error"] == f"nothing published yet: no manifest in {tmp_path}"
        recommendations = requests.get(f"{base_url}/users/1/recommendations", timeout=5)
        assert recommendations.status_code == 503 and "nothing published yet" in recommendations.json()["detail"]

        content = synthetic_content(100)
        version = publish(tmp_path, content, keep_previous=1, published_at=now()).version
        assert wait_for_version(base_url, version)["status"] == "ok"
        user_id = int(content.user_ids[0])
        assert requests.get(f"{base_url}/users/{user_id}/recommendations").json() == expected_response(content, version, user_id)


def metric_samples(text: str) -> dict[str, float]:
    """'name{labels}' -> value, for every sample of a Prometheus text exposition."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            match = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?) (\S+)", line)
            assert match, f"not a Prometheus sample: {line!r}"
            samples[match.group(1)] = float(match.group(2))
    return samples


def test_metrics_count_requests_latency_sources_and_the_version(served, content):
    base_url, version = served
    route = 'route="/users/{user_id}/recommendations"'
    for position in (0, 1, 9, 24):  # model, model, genre_fallback, popularity_fallback
        assert requests.get(f"{base_url}/users/{int(content.user_ids[position])}/recommendations").status_code == 200
    assert requests.get(f"{base_url}/users/0/recommendations", params={"favorite_genre": "Pop"}).status_code == 200
    assert requests.get(f"{base_url}/users/0/recommendations", params={"k": 0}).status_code == 422
    assert requests.get(f"{base_url}/nowhere/{time.time()}").status_code == 404
    requests.get(f"{base_url}/health")

    response = requests.get(f"{base_url}/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = metric_samples(response.text)
    assert samples[f'moovitamix_recs_requests_total{{{route},status="200"}}'] == 5
    assert samples[f'moovitamix_recs_requests_total{{{route},status="422"}}'] == 1
    assert samples['moovitamix_recs_requests_total{route="unmatched",status="404"}'] == 1
    assert samples['moovitamix_recs_requests_total{route="/health",status="200"}'] == 1
    buckets = [value for name, value in samples.items() if name.startswith(f"moovitamix_recs_request_duration_seconds_bucket{{{route}")]
    assert len(buckets) == 13 and buckets == sorted(buckets) and buckets[-1] == 6
    assert samples[f"moovitamix_recs_request_duration_seconds_count{{{route}}}"] == 6
    assert 0 < samples[f"moovitamix_recs_request_duration_seconds_sum{{{route}}}"] < 6
    assert {name: value for name, value in samples.items() if name.startswith("moovitamix_recs_recommendations_total")} == {
        'moovitamix_recs_recommendations_total{source="model"}': 2,
        'moovitamix_recs_recommendations_total{source="genre_fallback"}': 2,
        'moovitamix_recs_recommendations_total{source="popularity_fallback"}': 1,
    }
    info = f'moovitamix_recs_serving_version_info{{serving_version="{version}",model_version="{content.model_version}",snapshot_date="2026-11-01"}}'
    assert samples[info] == 1
    assert samples["moovitamix_recs_serving_users"] == 1000
    assert 0 <= samples["moovitamix_recs_serving_age_seconds"] < 60
    assert samples["moovitamix_recs_serving_stale"] == 0 and samples["moovitamix_recs_serving_degraded"] == 0
    assert samples['moovitamix_recs_version_loads_total{result="loaded"}'] == 1
    assert samples['moovitamix_recs_version_loads_total{result="refused"}'] == 0
    assert 0 < samples["moovitamix_recs_version_load_seconds"] < 5


def test_a_version_swap_under_load_fails_no_request_and_mixes_no_versions(tmp_path):
    """Four clients loop over known and unknown users while a new version is published; every
    answer is 200 and equals, whole, what the old or the new version says for that request."""
    old, new = synthetic_content(20_000, seed=1), synthetic_content(20_000, seed=2, model_version="20261102T030000000000-als")
    old_version = publish(tmp_path, old, keep_previous=1, published_at=now()).version
    users = [int(user) for user in old.user_ids[:: len(old.user_ids) // 150]] + [int(user) for user in new.user_ids[:: len(new.user_ids) // 150]]
    users += [0, -1, 3 * 20_000 + 1]  # unknown to both
    requests_list = [(user, k, genre) for index, user in enumerate(users)
                     for k, genre in [((index % 12) + 1, [None, "Rock", "jazz"][index % 3])]]  # fmt: skip

    outcomes, errors = [], []
    stop = threading.Event()
    swapped_at = []

    def client(offset: int) -> None:
        session = requests.Session()
        index = offset
        while not stop.is_set():
            user, k, genre = requests_list[index % len(requests_list)]
            index += 7
            started = time.monotonic()
            try:
                response = session.get(f"{base_url}/users/{user}/recommendations", params={"k": k, **({"favorite_genre": genre} if genre else {})}, timeout=10)
            except requests.RequestException as error:
                errors.append(repr(error))
                continue
            if response.status_code != 200:
                errors.append(f"{response.status_code} {response.text[:200]}")
                continue
            outcomes.append((started, (user, k, genre), response.json()))

    with serve_in_thread(tmp_path, poll_seconds=POLL) as (base_url, _):
        clients = [threading.Thread(target=client, args=(offset,)) for offset in range(4)]
        for thread in clients:
            thread.start()
        try:
            wait_until(lambda: len(outcomes) >= 1_500 or errors)
            new_version = publish(tmp_path, new, keep_previous=1, published_at=now()).version
            wait_for_version(base_url, new_version)
            swapped_at.append(time.monotonic())
            wait_until(lambda: len(outcomes) >= 3_500 or errors)
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=30)

    assert errors == []
    assert len(outcomes) >= 3_500
    expected = {
        version: {request: expected_response(content, version, *request) for request in requests_list}
        for version, content in ((old_version, old), (new_version, new))
    }
    served = {old_version: 0, new_version: 0}
    for started, request, body in outcomes:
        version = body["serving_version"]
        assert body == expected[version][request], request  # whole from one version, never a mix
        served[version] += 1
        if started > swapped_at[0]:
            assert version == new_version  # once swapped, never back
    assert served[old_version] >= 1_500 and served[new_version] >= 1_000, served


def test_a_corrupt_new_version_is_refused_and_the_old_one_keeps_serving(tmp_path):
    old = synthetic_content(500, seed=1)
    old_version = publish(tmp_path, old, keep_previous=3, published_at=now()).version
    user_id = int(old.user_ids[42])
    with serve_in_thread(tmp_path, poll_seconds=POLL) as (base_url, _):
        manifest = files.read_manifest(tmp_path)
        # A version damaged after it was written (a bad disk, a partial copy to a shared
        # volume), then named by the manifest.
        broken = synthetic_content(500, seed=2, model_version="20261102T030000000000-broken")
        broken_version = write_version(tmp_path, broken, now())
        path = files.version_directory(tmp_path, broken_version) / "row_scores.npy"
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))
        write_manifest(tmp_path, broken_version, manifest["versions"], now())

        deadline = time.monotonic() + 10
        while (health := requests.get(f"{base_url}/health").json())["status"] != "degraded" and time.monotonic() < deadline:
            time.sleep(POLL)
        assert health["status"] == "degraded"
        assert health["serving_version"] == old_version and health["manifest_version"] == broken_version
        assert health["error"] == (
            f"version {broken_version} refused, still serving {old_version}: "
            f"version {broken_version}: row_scores.npy does not match its SHA-256"
        )
        for _ in range(20):
            response = requests.get(f"{base_url}/users/{user_id}/recommendations")
            assert response.status_code == 200 and response.json() == expected_response(old, old_version, user_id)
        samples = metric_samples(requests.get(f"{base_url}/metrics").text)
        assert samples['moovitamix_recs_version_loads_total{result="refused"}'] == 1  # not retried every poll
        assert samples["moovitamix_recs_serving_degraded"] == 1

        # A manifest naming a version that is not there is refused the same way.
        write_manifest(tmp_path, "20300101T000000000000", manifest["versions"], now())
        deadline = time.monotonic() + 10
        while "20300101T000000000000 refused" not in str(requests.get(f"{base_url}/health").json()["error"]):
            assert time.monotonic() < deadline
            time.sleep(POLL)
        assert requests.get(f"{base_url}/users/{user_id}/recommendations").json()["serving_version"] == old_version

        # The next good publication is served, and the service is healthy again.
        fixed = synthetic_content(500, seed=3)
        fixed_version = publish(tmp_path, fixed, keep_previous=3, published_at=now()).version
        health = wait_for_version(base_url, fixed_version)
        assert health["status"] == "ok" and health["error"] is None
        assert requests.get(f"{base_url}/users/{user_id}/recommendations").json() == expected_response(fixed, fixed_version, user_id)


def test_the_console_script_serves_the_path_it_is_given_and_stops_on_sigterm(tmp_path):
    content = synthetic_content(100)
    version = publish(tmp_path, content, keep_previous=1, published_at=now()).version
    port = free_port()
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "moovitamix-recs"), "--port", str(port), "--serving-path", str(tmp_path),
         "--stale-after-hours", "1"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, files.SERVING_PATH_ENV: str(tmp_path / "elsewhere")},
    )  # fmt: skip
    try:
        health = wait_for(f"http://127.0.0.1:{port}/health", timeout=30).json()
        assert health["serving_version"] == version and health["stale_after_seconds"] == 3600
        user_id = int(content.user_ids[0])
        assert requests.get(f"http://127.0.0.1:{port}/users/{user_id}/recommendations").json() == expected_response(content, version, user_id)
    finally:
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises the signal it caught.
        assert process.wait(timeout=15) == -signal.SIGTERM
    log = process.stderr.read()
    assert f"moovitamix_serving: serving version {version} (100 users" in log
    assert "Application shutdown complete" in log


def test_the_readmes_curl_runs_as_written(served, content):
    """The README's curl, with make dev's address swapped for this server's (test_doc_commands maps it here)."""
    import shlex

    from moovitamix_assets_tests.docs_tests.conftest import ROOT
    from moovitamix_assets_tests.docs_tests.test_doc_commands import shell_commands

    base_url, version = served
    (command,) = [command for command in shell_commands(ROOT / "README.md") if command.startswith("curl ")]
    arguments = [argument.replace("http://127.0.0.1:8001", base_url) for argument in shlex.split(command)]
    finished = subprocess.run(arguments, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(finished.stdout) == expected_response(content, version, 42, 3)
