"""Every fault switch is observable, reproducible from its seed, and counted by expected_counts."""

import json
import time

import pytest
import requests
from requests.adapters import HTTPAdapter

from moovitamix_api.data import BAD_TIMESTAMPS, ORPHAN_ID_BASE, Dataset, expected_counts
from moovitamix_api.faults import decide


def _session():
    session = requests.Session()  # no retries: every fault reaches the test
    session.mount("http://", HTTPAdapter(max_retries=0))
    return session


def _outcome(session, url):
    try:
        response = session.get(url, timeout=5)
    except requests.ConnectionError:
        return "dropped"
    try:
        json.loads(response.content)
    except ValueError:
        return f"{response.status_code} broken"
    return str(response.status_code)


def _outcomes(base_url, attempts=40):
    session = _session()
    return [_outcome(session, f"{base_url}/users?page=2&size=10") for _ in range(attempts)]


TRANSPORT = dict(error_rate=0.2, rate_limit_rate=0.1, drop_rate=0.1, bad_json_rate=0.1, retry_after=0)


def test_transport_faults_show_and_retries_succeed(emulator):
    outcomes = _outcomes(emulator(**TRANSPORT))
    kinds = set(outcomes)
    assert "200" in kinds and "429" in kinds and "dropped" in kinds and "200 broken" in kinds
    assert kinds & {"500", "502", "503"}


def test_transport_faults_are_reproducible_per_fault_seed(emulator):
    first, again = _outcomes(emulator(**TRANSPORT)), _outcomes(emulator(**TRANSPORT))
    expected = [decide(emulator.settings, "/users", 2, 10, attempt).kind for attempt in range(1, 41)]
    assert [kind == "none" for kind in expected] == [outcome == "200" for outcome in first]
    other = _outcomes(emulator(fault_seed=99, **TRANSPORT))
    assert first == again != other


def test_429_carries_retry_after(emulator):
    base_url = emulator(rate_limit_rate=1.0, retry_after=3)
    response = requests.get(f"{base_url}/tracks")
    assert response.status_code == 429 and response.headers["retry-after"] == "3"


def test_dropped_connection_is_a_connection_error(emulator):
    base_url = emulator(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        _session().get(f"{base_url}/tracks", timeout=5)
    assert requests.get(f"{base_url}/openapi.json").status_code == 200  # only data endpoints fail


def test_bad_json_is_a_200_that_does_not_parse(emulator):
    base_url = emulator(bad_json_rate=1.0)
    for page in range(1, 7):
        response = requests.get(f"{base_url}/listen_history", params={"page": page})
        assert response.status_code == 200
        with pytest.raises(ValueError):
            response.json()


def test_latency(emulator):
    base_url = emulator(latency_ms=100)
    started = time.perf_counter()
    requests.get(f"{base_url}/users", params={"size": 1})
    assert time.perf_counter() - started >= 0.05


DATA_FAULTS = dict(duplicate_rate=0.05, null_rate=0.04, orphan_rate=0.04, bad_timestamp_rate=0.03)


def _pull(base_url, entity):
    items, page, pages = [], 1, 1
    while page <= pages:
        body = requests.get(f"{base_url}/{entity}", params={"page": page}).json()
        items += body["items"]
        pages, total = body["pages"], body["total"]
        page += 1
    assert len(items) == total
    return items


def _bad(timestamp):
    return timestamp in BAD_TIMESTAMPS


@pytest.fixture(scope="module")
def faulty(emulator_settings):
    from moovitamix_api.server import serve_in_thread

    settings = emulator_settings.replace(**DATA_FAULTS)
    with serve_in_thread(settings) as base_url:
        yield settings, {e: _pull(base_url, e) for e in ("users", "tracks", "listen_history")}


@pytest.mark.parametrize("entity, key", [("users", "id"), ("tracks", "id"), ("listen_history", "user_id")])
def test_served_data_faults_match_expected_counts(faulty, entity, key):
    settings, data = faulty
    expected = expected_counts(settings)[entity]
    served = data[entity]
    assert len(served) == expected["served"] > expected["base_records"]
    ids = [record[key] for record in served if record[key] is not None]
    assert len(set(ids)) == expected["distinct_ids"]
    # One record per base index: the first occurrence of each serialised record.
    distinct = list({json.dumps(record, sort_keys=True): record for record in served}.values())
    assert len(distinct) == expected["base_records"]
    null_field = {"users": ("email",), "tracks": ("name",), "listen_history": ("user_id", "items")}[entity]
    assert sum(any(r[f] is None for f in null_field) for r in distinct) == expected["nulls"] > 0
    assert sum(_bad(r["created_at"]) or _bad(r["updated_at"]) for r in distinct) == expected["bad_timestamps"] > 0
    if entity == "listen_history":
        orphans = sum(
            (r["user_id"] or 0) >= ORPHAN_ID_BASE or any(i >= ORPHAN_ID_BASE for i in r["items"] or [])
            for r in distinct
        )
        assert orphans == expected["orphans"] > 0
        assert sum(len(r["items"]) for r in distinct if r["items"] is not None) == expected["listens"]
        assert sum(len(r["items"]) for r in served if r["items"] is not None) == expected["listens_served"]
    else:
        assert expected["orphans"] == 0


def test_duplicates_repeat_an_earlier_record(emulator_settings):
    dataset = Dataset(emulator_settings.replace(duplicate_rate=0.1))
    seen = {}
    copies = 0
    for position, user in enumerate(dataset.iter_records("users"), start=1):
        if user["id"] in seen:
            copies += 1
            originals_so_far = position - copies
            assert seen[user["id"]] == user and user["id"] > originals_so_far - 200  # a recent one
        seen.setdefault(user["id"], user)
    assert copies == dataset.count("users") - dataset.base_count("users")
    assert abs(copies - 0.1 * dataset.count("users")) <= 1


def test_data_faults_are_off_by_default(emulator_settings):
    counts = expected_counts(emulator_settings)
    for entity, entry in counts.items():
        assert entry["duplicates"] == entry["nulls"] == entry["orphans"] == entry["bad_timestamps"] == 0


def test_renamed_and_extra_fields(emulator):
    base_url = emulator(rename_fields=("users.email=mail", "listen_history.items=tracks"), extra_fields=("tracks.explicit=true", "tracks.label=Moovitamix Records"))
    user = requests.get(f"{base_url}/users").json()["items"][0]
    assert "email" not in user and "@" in user["mail"]
    assert list(user)[3] == "mail"  # keeps its place
    track = requests.get(f"{base_url}/tracks").json()["items"][0]
    assert track["explicit"] is True and track["label"] == "Moovitamix Records"
    history = requests.get(f"{base_url}/listen_history").json()["items"][0]
    assert "items" not in history and isinstance(history["tracks"], list)
