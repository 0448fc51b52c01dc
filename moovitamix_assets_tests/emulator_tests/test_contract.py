"""The emulator serves the upstream contract (shared/moovitamix-api.md) to the letter."""

import datetime as dt
import math
import re

import pytest
import requests

from moovitamix_api.data import GENDERS, GENRES, Dataset

ENDPOINTS = ("users", "tracks", "listen_history")
FIELDS = {
    "users": ["id", "first_name", "last_name", "email", "gender", "favorite_genres", "created_at", "updated_at"],
    "tracks": ["id", "name", "artist", "songwriters", "duration", "genres", "album", "created_at", "updated_at"],
    "listen_history": ["user_id", "items", "created_at", "updated_at"],
}


def _timestamp(value: str) -> dt.datetime:
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is None and "T" in value
    return parsed


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_page_body_and_defaults(emulator_url, emulator_settings, endpoint):
    response = requests.get(f"{emulator_url}/{endpoint}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["items", "total", "page", "size", "pages"]
    total = Dataset(emulator_settings).count(endpoint)
    assert (body["total"], body["page"], body["size"], body["pages"]) == (total, 1, 100, math.ceil(total / 100))
    assert len(body["items"]) == 100
    assert response.content == Dataset(emulator_settings).page_json(endpoint, 1, 100)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_last_and_past_last_pages(emulator_url, endpoint):
    first = requests.get(f"{emulator_url}/{endpoint}", params={"size": 7}).json()
    last = requests.get(f"{emulator_url}/{endpoint}", params={"page": first["pages"], "size": 7}).json()
    assert 1 <= len(last["items"]) <= 7
    assert len(last["items"]) == first["total"] - 7 * (first["pages"] - 1)
    past = requests.get(f"{emulator_url}/{endpoint}", params={"page": first["pages"] + 1, "size": 7})
    assert past.status_code == 200
    assert past.json() == {"items": [], "total": first["total"], "page": first["pages"] + 1, "size": 7, "pages": first["pages"]}


@pytest.mark.parametrize(
    "params, field",
    [
        ({"page": 0}, "page"),
        ({"page": -3}, "page"),
        ({"size": 0}, "size"),
        ({"size": 101}, "size"),
        ({"page": "abc"}, "page"),
        ({"size": "1.5"}, "size"),
    ],
)
def test_out_of_bounds_is_a_422_validation_error(emulator_url, params, field):
    response = requests.get(f"{emulator_url}/users", params=params)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail[0]["loc"] == ["query", field]


def test_size_bounds_are_inclusive(emulator_url):
    assert len(requests.get(f"{emulator_url}/tracks", params={"size": 1}).json()["items"]) == 1
    assert len(requests.get(f"{emulator_url}/tracks", params={"size": 100}).json()["items"]) == 100


def test_root_redirects_to_docs(emulator_url):
    response = requests.get(f"{emulator_url}/", allow_redirects=False)
    assert response.status_code in (302, 307)
    assert response.headers["location"] == "/docs"
    assert requests.get(f"{emulator_url}/").url.endswith("/docs")


def test_openapi_lists_the_data_endpoints_only(emulator_url):
    schema = requests.get(f"{emulator_url}/openapi.json").json()
    assert set(schema["paths"]) == {"/users", "/tracks", "/listen_history"}
    parameters = {p["name"]: p["schema"] for p in schema["paths"]["/users"]["get"]["parameters"]}
    assert parameters["page"]["minimum"] == 1 and parameters["page"]["default"] == 1
    assert (parameters["size"]["minimum"], parameters["size"]["maximum"], parameters["size"]["default"]) == (1, 100, 100)
    assert requests.get(f"{emulator_url}/_admin/state").status_code == 200


def _all(emulator_url, endpoint):
    first = requests.get(f"{emulator_url}/{endpoint}").json()
    items = first["items"]
    for page in range(2, first["pages"] + 1):
        items += requests.get(f"{emulator_url}/{endpoint}", params={"page": page}).json()["items"]
    return items


def test_users_records(emulator_url):
    users = _all(emulator_url, "users")
    assert len({user["id"] for user in users}) == len(users)
    for user in users:
        assert list(user) == FIELDS["users"]
        assert isinstance(user["id"], int)
        assert all(isinstance(user[key], str) for key in FIELDS["users"][1:])
        assert user["gender"] in GENDERS
        assert user["favorite_genres"] in GENRES
        assert "@" in user["email"]
        assert _timestamp(user["updated_at"]) >= _timestamp(user["created_at"])
    assert any("." in user["created_at"] for user in users), "some timestamps carry microseconds"
    assert any("." not in user["created_at"] for user in users)


def test_tracks_records(emulator_url):
    tracks = _all(emulator_url, "tracks")
    assert len({track["id"] for track in tracks}) == len(tracks)
    for track in tracks:
        assert list(track) == FIELDS["tracks"]
        assert isinstance(track["id"], int)
        assert re.fullmatch(r"\d\d:[0-5]\d", track["duration"])
        assert track["genres"] in GENRES
        _timestamp(track["created_at"]), _timestamp(track["updated_at"])


def test_listen_history_records(emulator_url):
    histories = _all(emulator_url, "listen_history")
    users = {user["id"] for user in _all(emulator_url, "users")}
    tracks = {track["id"] for track in _all(emulator_url, "tracks")}
    assert [history["user_id"] for history in histories] == sorted(users)
    for history in histories:
        assert list(history) == FIELDS["listen_history"]
        assert all(isinstance(item, int) for item in history["items"])
        assert set(history["items"]) <= tracks
        assert _timestamp(history["updated_at"]) >= _timestamp(history["created_at"])


def test_admin_state_reads_and_changes_settings(emulator):
    base_url = emulator()
    state = requests.get(f"{base_url}/_admin/state").json()
    assert state["settings"]["as_of"] == "2026-11-01" and state["settings"]["seed"] == 42
    changed = requests.post(f"{base_url}/_admin/state", json={"as_of": "2026-11-20", "error_rate": 0.1}).json()
    assert changed["settings"]["as_of"] == "2026-11-20" and changed["settings"]["error_rate"] == 0.1
    assert changed["counts"]["users"] > state["counts"]["users"]
    assert requests.post(f"{base_url}/_admin/state", json={"error_rate": 3}).status_code == 422
    assert requests.post(f"{base_url}/_admin/state", json={"no_such_option": 1}).status_code == 422
