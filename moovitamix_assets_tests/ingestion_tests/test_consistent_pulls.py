"""Pulls against an upstream that changes while we page through it: no live record missed, none doubled.

The emulator's live modes insert, delete and update records between two requests of a
pull, restart with new ids, serve a short page or a moving total. Its /_admin/mutations
log says exactly which ids were alive before the pull and which moved during it, so every
test below asserts exact sets afterwards.
"""

import collections

import pytest
import requests

from moovitamix_api.data import Dataset
from moovitamix_assets_tests.pipeline import materialize_day, materialized, query, scalar

DAY = "2026-11-01"
USERS_ON_DAY = 1155


@pytest.fixture
def database(tmp_path):
    return tmp_path / "warehouse.duckdb"


def mutations(base_url: str) -> dict:
    return requests.get(f"{base_url}/_admin/mutations", timeout=10).json()


def raw_ids(database, entity: str = "users") -> collections.Counter:
    key = "user_id" if entity == "listen_history" else "id"
    return collections.Counter(
        value for (value,) in query(database, f"SELECT (record->>'{key}')::BIGINT FROM raw.{entity}")
    )


def moved_during(log: dict, entity: str, kind: str) -> set[int]:
    return {i for burst in log["bursts"] for i in burst["endpoints"].get(entity, {}).get(kind, [])}


def test_a_burst_of_inserts_deletes_and_updates_mid_pull_is_pulled_again_exactly(emulator, database):
    base_url = emulator(mutate_after_requests=5, mutation_inserts=5, mutation_deletes=4, mutation_updates=2)
    before = set(mutations(base_url)["alive"]["users"])
    result = materialize_day(base_url, database, DAY)

    log = mutations(base_url)
    assert len(log["bursts"]) == 1
    inserted, deleted = moved_during(log, "users", "inserted"), moved_during(log, "users", "deleted")
    assert (len(inserted), len(deleted)) == (5, 4)
    ids = raw_ids(database)
    # The snapshot is the upstream after the burst, exactly: every survivor and every insert, once.
    assert max(ids.values()) == 1
    assert set(ids) == (before - deleted) | inserted == set(log["alive"]["users"])
    assert len(ids) == USERS_ON_DAY + 5 - 4
    # The updated records are served in their new version.
    updated = moved_during(log, "users", "updated")
    emails = dict(query(database, "SELECT (record->>'id')::BIGINT, record->>'email' FROM raw.users"))
    original = Dataset(emulator.settings)  # the world before any burst; a user's id is its position
    assert len(updated) == 2
    assert all(emails[i] != original.record("users", i)["email"] for i in updated)
    assert sum(emails[i] != original.record("users", i)["email"] for i in before - deleted) == 2
    metadata = {entity: materialized(result)[f"raw/{entity}"] for entity in ("users", "tracks", "listen_history")}
    # A pass that saw the burst is pulled again (which endpoints did depends on how their
    # first requests interleaved with request 5); what moved between passes is counted.
    attempts = {entity: m["pull_attempts"] for entity, m in metadata.items()}
    assert max(attempts.values()) == 2 and min(attempts.values()) >= 1, attempts
    assert sum(m["records_moved"] for m in metadata.values()) > 0
    # Whichever way the requests interleaved, every endpoint is the upstream after the burst.
    assert set(raw_ids(database, "tracks")) == set(log["alive"]["tracks"])
    assert set(raw_ids(database, "listen_history")) == set(log["alive"]["listen_history"])
    assert scalar(database, "SELECT count(*) FROM core.users") == USERS_ON_DAY + 1
    assert scalar(database, "SELECT count(*) FROM core.listen_history WHERE user_id > 900000000") > 0


def test_a_continuously_changing_upstream_loses_no_record_alive_for_the_whole_pull(emulator, database):
    # A burst every 7 data requests on users: every pass over /users sees records move.
    base_url = emulator(
        mutate_every_requests=7, mutation_inserts=2, mutation_deletes=2, mutation_updates=1,
        mutation_endpoints=["users"],
    )  # fmt: skip
    before = set(mutations(base_url)["alive"]["users"])
    result = materialize_day(base_url, database, DAY, max_concurrency=2)

    log = mutations(base_url)
    inserted, deleted = moved_during(log, "users", "inserted"), moved_during(log, "users", "deleted")
    assert len(log["bursts"]) >= 4 and deleted
    alive_throughout = before - deleted
    ids = raw_ids(database)
    assert max(ids.values()) == 1, "a record served twice"
    assert alive_throughout <= set(ids), f"missed: {sorted(alive_throughout - set(ids))}"
    assert set(ids) <= before | inserted  # nothing that never existed
    metadata = materialized(result)["raw/users"]
    assert metadata["merged_passes"] == 1 and metadata["pull_attempts"] == 2
    assert metadata["records_moved"] > 0
    # Core holds each id once, from one day.
    assert scalar(database, "SELECT count(*) FROM core.users") == len(ids)


def test_an_upstream_restarting_with_new_ids_mid_pull_gives_only_the_new_world(emulator, database):
    base_url = emulator(restart_after_requests=6)
    before = set(mutations(base_url)["alive"]["users"])
    result = materialize_day(base_url, database, DAY)

    after = set(mutations(base_url)["alive"]["users"])
    assert not before & after  # every id changed
    ids = raw_ids(database)
    assert set(ids) == after and max(ids.values()) == 1 and len(ids) == USERS_ON_DAY
    histories = raw_ids(database, "listen_history")
    assert set(histories) == set(mutations(base_url)["alive"]["listen_history"])
    assert materialized(result)["raw/users"]["pull_attempts"] == 2
    # Listens point at the new ids only: no orphan.
    assert scalar(database, "SELECT count(*) FROM core.listen_history WHERE user_id NOT IN (SELECT user_id FROM core.users)") == 0


@pytest.mark.parametrize(
    "fault, problem",
    [
        ({"short_pages": ["users:3"]}, "page 3 (a page that is not the last) has 99 items, expected 100"),
        ({"total_drift": 3}, "total/pages moved during the pull: 1155/12, 1158/12"),
    ],
)
def test_a_short_page_or_a_moving_total_fails_the_day_naming_it(emulator, database, fault, problem):
    base_url = emulator()
    materialize_day(base_url, database, "2026-10-31")
    requests.post(f"{base_url}/_admin/state", json=fault, timeout=10).raise_for_status()
    result = materialize_day(base_url, database, DAY, raise_on_error=False)

    assert not result.success
    (failure,) = result.get_step_failure_events()
    message = failure.event_specific_data.error.cause.message
    assert "GET /users: the upstream served the same inconsistent view on 2 passes, nothing moved between them" in message
    assert problem in message
    # Nothing of the day was loaded; core stays on the day before.
    assert scalar(database, "SELECT count(*) FROM raw.users WHERE snapshot_date = ?", [DAY]) == 0
    assert query(database, "SELECT DISTINCT snapshot_date::VARCHAR FROM core.users") == [("2026-10-31",)]
