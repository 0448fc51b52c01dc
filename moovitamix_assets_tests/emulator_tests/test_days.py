"""A later as-of date is a superset of an earlier one: growth, updates, appended listens."""

import datetime as dt

import pytest
import requests

from moovitamix_api.data import Dataset

EARLIER, LATER = dt.date(2026, 11, 1), dt.date(2026, 11, 20)


@pytest.fixture(scope="module")
def days(emulator_settings):
    earlier = Dataset(emulator_settings.replace(as_of=EARLIER))
    later = Dataset(emulator_settings.replace(as_of=LATER))
    return {
        entity: ({r.get("id", r.get("user_id")): r for r in earlier.iter_records(entity)},
                 {r.get("id", r.get("user_id")): r for r in later.iter_records(entity)})
        for entity in ("users", "tracks", "listen_history")
    }  # fmt: skip


@pytest.mark.parametrize("entity, growth_per_day", [("users", 5), ("tracks", 2), ("listen_history", 5)])
def test_later_day_adds_records_and_keeps_every_id(days, entity, growth_per_day):
    earlier, later = days[entity]
    assert len(later) == len(earlier) + growth_per_day * (LATER - EARLIER).days
    assert set(earlier) <= set(later)
    assert sorted(later) == list(range(1, len(later) + 1))


@pytest.mark.parametrize("entity, versioned", [("users", "email"), ("tracks", "album")])
def test_some_records_are_updated(days, entity, versioned):
    earlier, later = days[entity]
    moved = [i for i in earlier if later[i]["updated_at"] != earlier[i]["updated_at"]]
    assert 0.2 * len(earlier) < len(moved) < 0.6 * len(earlier)  # update_rate 0.02/day over 19 days
    for i in moved:
        assert later[i]["updated_at"] > earlier[i]["updated_at"]
        assert later[i]["created_at"] == earlier[i]["created_at"]
    assert sum(later[i][versioned] != earlier[i][versioned] for i in moved) > 0.8 * len(moved)
    unchanged = [i for i in earlier if i not in moved]
    assert all(later[i] == earlier[i] for i in unchanged)


def test_histories_grow_by_appending(days):
    earlier, later = days["listen_history"]
    grown = 0
    for user_id, history in earlier.items():
        items = later[user_id]["items"]
        assert items[: len(history["items"])] == history["items"]
        if len(items) > len(history["items"]):
            grown += 1
            assert later[user_id]["updated_at"] > history["updated_at"]
    assert grown > 0.9 * len(earlier)  # active every 5 days: everyone listened within 19 days


def test_running_server_follows_a_new_as_of(emulator):
    base_url = emulator(as_of=EARLIER.isoformat())
    before = requests.get(f"{base_url}/users", params={"page": 1, "size": 1}).json()["total"]
    requests.post(f"{base_url}/_admin/state", json={"as_of": LATER.isoformat()}).raise_for_status()
    after = requests.get(f"{base_url}/users", params={"page": 1, "size": 1}).json()["total"]
    assert after == before + 5 * (LATER - EARLIER).days


def test_as_of_defaults_to_today_utc(emulator_settings):
    following = emulator_settings.replace(as_of=None)
    assert Dataset(following).as_of == dt.datetime.now(dt.timezone.utc).date()
