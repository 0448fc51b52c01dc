"""The realistic profile has structure to learn; the upstream profile is the original's noise."""

import collections
import datetime as dt

import numpy as np
import pytest
import requests

from moovitamix_api.data import GENRES, Dataset


@pytest.fixture(scope="module")
def realistic(emulator_settings):
    dataset = Dataset(emulator_settings)
    return {entity: list(dataset.iter_records(entity)) for entity in ("users", "tracks", "listen_history")}


def test_listens_follow_favorite_genres(realistic):
    favorite = {user["id"]: user["favorite_genres"] for user in realistic["users"]}
    genre = {track["id"]: track["genres"] for track in realistic["tracks"]}
    listens = [(h["user_id"], item) for h in realistic["listen_history"] for item in h["items"]]
    in_favorite = sum(genre[track] == favorite[user] for user, track in listens) / len(listens)
    assert in_favorite > 0.45  # against about 1/17 for random listening


def test_popularity_is_long_tailed_and_histories_mostly_distinct(realistic):
    plays = collections.Counter(item for h in realistic["listen_history"] for item in h["items"])
    counts = np.sort(np.array(list(plays.values())))[::-1]
    assert counts[: len(counts) // 10].sum() > 0.25 * counts.sum()  # top 10% of tracks: 2.5x their share
    distinct = [len(set(h["items"])) / len(h["items"]) for h in realistic["listen_history"] if h["items"]]
    assert np.mean(distinct) > 0.75


def test_activity_varies_around_the_mean(realistic, emulator_settings):
    lengths = np.array([len(h["items"]) for h in realistic["listen_history"]])
    assert lengths.std() > 0.5 * lengths.mean()
    assert 20 <= lengths.mean() <= 50  # 20 on the first day, then ~0.4 a day for a month
    assert {track["genres"] for track in realistic["tracks"]} == set(GENRES)


@pytest.fixture(scope="module")
def upstream():
    from moovitamix_api.settings import EmulatorSettings

    settings = EmulatorSettings(profile="upstream", as_of=dt.date(2026, 11, 1))
    dataset = Dataset(settings)
    return settings, {entity: list(dataset.iter_records(entity)) for entity in ("users", "tracks", "listen_history")}


def test_upstream_scale_and_ids(upstream):
    _, data = upstream
    assert [len(data[e]) for e in ("users", "tracks", "listen_history")] == [1000, 1000, 1000]
    for entity in ("users", "tracks"):
        ids = [record["id"] for record in data[entity]]
        assert len(set(ids)) == 1000 and all(1 <= i <= 100_000 for i in ids)
        assert ids != sorted(ids)
    track_ids = {track["id"] for track in data["tracks"]}
    for history in data["listen_history"]:
        assert len(history["items"]) == 5 == len(set(history["items"]))
        assert set(history["items"]) <= track_ids
        assert history["updated_at"] >= history["created_at"]


def test_upstream_is_flat_noise(upstream):
    _, data = upstream
    for entity in ("users", "tracks"):
        earlier = sum(r["updated_at"] < r["created_at"] for r in data[entity])
        assert earlier > 250
    assert sum(track["genres"] in GENRES for track in data["tracks"]) == 0
    assert len({user["favorite_genres"] for user in data["users"]}) == 17


def test_upstream_is_a_new_world_every_day(upstream):
    settings, data = upstream
    tomorrow = Dataset(settings.replace(as_of="2026-11-02"))
    ids = {user["id"] for user in data["users"]}
    assert len(ids & {user["id"] for user in tomorrow.iter_records("users")}) < 100
    assert list(Dataset(settings).iter_records("users")) == data["users"]  # same day, same world


def test_upstream_profile_over_http(emulator):
    base_url = emulator(profile="upstream")
    body = requests.get(f"{base_url}/listen_history", params={"page": 10}).json()
    assert (body["total"], body["pages"], len(body["items"])) == (1000, 10, 100)
