"""The emulator's live modes: the upstream moves under a pull, restarts, empties, fails, lies.

Against real servers (the `emulator` fixture). The world of conftest.TEST_SETTINGS serves
1155 users, 1062 tracks and 1155 histories; ids 1..N in served order.
"""

import datetime as dt
import time

import pytest
import requests
from requests.adapters import HTTPAdapter

from moovitamix_api.cli import build_parser, settings_from_args
from moovitamix_api.data import Dataset
from moovitamix_api.faults import decide
from moovitamix_api.live import ALIVE_IDS_CAP, INSERTED_ID_BASE, LiveDataset
from moovitamix_api.settings import EmulatorSettings

USERS, TRACKS, HISTORIES = 1155, 1062, 1155
KEY = {"users": "id", "tracks": "id", "listen_history": "user_id"}


def _get(base_url, entity, page=1, size=100):
    response = requests.get(f"{base_url}/{entity}", params={"page": page, "size": size}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _pull(base_url, entity, size=100):
    """Every page of one pull, trusting `pages` of the page just read."""
    bodies, page, pages = [], 1, 1
    while page <= pages:
        bodies.append(_get(base_url, entity, page, size))
        pages = bodies[-1]["pages"]
        page += 1
    return bodies


def _ids(bodies, entity):
    return [record[KEY[entity]] for body in bodies for record in body["items"]]


def _admin(base_url, what="mutations"):
    return requests.get(f"{base_url}/_admin/{what}", timeout=10).json()


BURST = dict(mutate_after_requests=3, mutation_inserts=5, mutation_deletes=4, mutation_updates=2)


def test_one_burst_after_three_requests(emulator, emulator_settings):
    base_url = emulator(mutation_endpoints=["users"], **BURST)
    before = {user["id"]: user for user in Dataset(emulator_settings).iter_records("users")}

    first_pull = _pull(base_url, "users")
    assert [body["total"] for body in first_pull] == [USERS] * 3 + [USERS + 1] * 9  # 5 in, 4 out
    log = _admin(base_url)
    assert log["data_requests"] == 12 and log["restarts"] == []
    # Pinned: the seeded draws of burst 1 (change only on purpose, like the data's hash).
    assert log["bursts"] == [
        {
            "burst": 1,
            "after_request": 3,
            "restart": 0,
            "endpoints": {
                "users": {
                    "inserted": [900_000_001, 900_000_002, 900_000_003, 900_000_004, 900_000_005],
                    "deleted": [208, 518, 540, 774],
                    "updated": [565, 708],
                    "count": USERS + 1,
                }
            },
        }
    ]
    burst = log["bursts"][0]["endpoints"]["users"]

    second_pull = _ids(_pull(base_url, "users"), "users")
    survivors = [i for i in before if i not in burst["deleted"]]
    assert [i for i in second_pull if i < INSERTED_ID_BASE] == survivors
    assert second_pull == log["alive"]["users"]
    assert len(second_pull) == len(set(second_pull)) == USERS + 1
    # Inserted at seeded positions among the others, not appended.
    positions = sorted(second_pull.index(i) + 1 for i in burst["inserted"])
    assert positions == [420, 506, 794, 944, 985]

    # The first pull read pages 1-3 before the burst and 4-12 after it: user 208 (position
    # 208) was deleted behind it, so every later record moved one position back and user
    # 301 crossed the page boundary unseen, although it was alive for the whole pull. The
    # pull still counts 1156 distinct ids, the new total: only the moving total tells.
    first_ids = _ids(first_pull, "users")
    assert len(first_ids) == len(set(first_ids)) == USERS + 1
    assert sorted(set(before) - set(first_ids)) == [301] + burst["deleted"][1:]
    assert 208 in first_ids and set(burst["inserted"]) <= set(first_ids)

    updated = {u["id"]: u for body in _pull(base_url, "users") for u in body["items"] if u["id"] in burst["updated"]}
    for user_id, user in updated.items():
        old = before[user_id]
        assert user["email"] != old["email"] and user["email"].endswith("+u1@" + old["email"].split("@")[1])
        assert dt.datetime.fromisoformat(user["updated_at"]) > dt.datetime.fromisoformat(old["updated_at"])
        assert {k: v for k, v in user.items() if k not in ("email", "updated_at")} == {
            k: v for k, v in old.items() if k not in ("email", "updated_at")
        }
    # Only users move; the other endpoints serve exactly what Dataset says.
    dataset = Dataset(emulator_settings)
    assert requests.get(f"{base_url}/tracks", params={"page": 4}).content == dataset.page_json("tracks", 4, 100)
    assert _admin(base_url, "state")["counts"] == {"users": USERS + 1, "tracks": TRACKS, "listen_history": HISTORIES}


def test_continuous_mutations_of_tracks_and_histories(emulator, emulator_settings):
    base_url = emulator(
        mutate_every_requests=15, mutation_inserts=2, mutation_deletes=1, mutation_updates=1,
        mutation_endpoints=["tracks", "listen_history"],
    )  # fmt: skip
    history_before = {h["user_id"]: h for h in Dataset(emulator_settings).iter_records("listen_history")}
    totals = [_get(base_url, "tracks")["total"] for _ in range(45)]
    assert totals == [TRACKS] * 15 + [TRACKS + 1] * 15 + [TRACKS + 2] * 15
    log = _admin(base_url)
    assert [b["after_request"] for b in log["bursts"]] == [15, 30, 45]
    assert all(set(b["endpoints"]) == {"tracks", "listen_history"} for b in log["bursts"])
    assert [b["endpoints"]["tracks"]["inserted"] for b in log["bursts"]] == [
        [900_000_001, 900_000_002], [900_000_003, 900_000_004], [900_000_005, 900_000_006],
    ]  # fmt: skip
    assert log["counts"] == {"users": USERS, "tracks": TRACKS + 3, "listen_history": HISTORIES + 3}
    assert log["alive"]["users"] == list(range(1, USERS + 1))

    # Requests 46-57: one whole pull before the burst after request 60.
    histories = {h["user_id"]: h for body in _pull(base_url, "listen_history") for h in body["items"]}
    assert list(histories) == log["alive"]["listen_history"]
    deleted = {i for b in log["bursts"] for i in b["endpoints"]["listen_history"]["deleted"]}
    updated = [i for b in log["bursts"] for i in b["endpoints"]["listen_history"]["updated"]]
    inserted = [i for b in log["bursts"] for i in b["endpoints"]["listen_history"]["inserted"]]
    assert len(deleted) == len(updated) == 3 and inserted == [900_000_001 + k for k in range(6)]
    assert set(histories) == (set(history_before) - deleted) | set(inserted)
    live_tracks = set(log["alive"]["tracks"])
    assert updated == [1114, 359, 1121]  # pinned seeded draws; all original histories
    for user_id in updated:
        old, new = history_before[user_id], histories[user_id]
        assert new["items"][:-1] == old["items"] and len(new["items"]) == len(old["items"]) + 1
        assert new["updated_at"] > old["updated_at"] and new["created_at"] == old["created_at"]
    for user_id in inserted:  # a new user's history, created on the as-of day
        assert histories[user_id]["created_at"].startswith("2026-11-01T")
        assert set(histories[user_id]["items"]) <= live_tracks | set(range(1, TRACKS + 1))


def test_restart_reshuffles_every_id_consistently(emulator, emulator_settings):
    base_url = emulator(restart_after_requests=1)
    assert _get(base_url, "users")["items"][0]["id"] == 1  # request 1: the original ids
    users = {u["id"] for body in _pull(base_url, "users") for u in body["items"]}
    tracks = {t["id"] for body in _pull(base_url, "tracks") for t in body["items"]}
    histories = [h for body in _pull(base_url, "listen_history") for h in body["items"]]
    assert (len(users), len(tracks), len(histories)) == (USERS, TRACKS, HISTORIES)
    assert not users & set(range(1, USERS + 1)) and not tracks & set(range(1, TRACKS + 1))
    assert {h["user_id"] for h in histories} == users
    assert {t for h in histories for t in h["items"]} <= tracks
    original = list(Dataset(emulator_settings).iter_records("listen_history"))
    assert [len(h["items"]) for h in histories] == [len(h["items"]) for h in original]
    assert _admin(base_url)["restarts"] == [{"after_request": 1, "restart": 1}]
    assert _admin(base_url, "state")["restarts"] == 1


def test_restart_discards_mutations_and_later_bursts_use_the_new_ids(emulator):
    base_url = emulator(mutate_every_requests=1, mutation_inserts=1, mutation_deletes=1, restart_after_requests=2)
    for page in (1, 2, 3):
        _get(base_url, "users", page)
    log = _admin(base_url)
    assert [(b["after_request"], b["restart"]) for b in log["bursts"]] == [(1, 0), (2, 1), (3, 1)]
    assert log["counts"]["users"] == USERS  # one burst since the restart: +1 -1
    alive = log["alive"]["users"]
    assert sum(i >= INSERTED_ID_BASE for i in alive) == 2  # the restart lost the first insert
    assert all(i > USERS for i in alive)
    assert all(i > USERS for b in log["bursts"][1:] for i in b["endpoints"]["users"]["deleted"])


def test_empty_endpoint_answers_200_with_nothing(emulator):
    base_url = emulator(empty_endpoints=["tracks"])
    for page in (1, 2):
        response = requests.get(f"{base_url}/tracks", params={"page": page})
        assert response.status_code == 200
        assert response.json() == {"items": [], "total": 0, "page": page, "size": 100, "pages": 0}
    assert _get(base_url, "users")["total"] == USERS


def test_failing_endpoint_answers_503_and_others_serve(emulator):
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=0))
    base_url = emulator(failing_endpoints=["users"])
    assert [session.get(f"{base_url}/users", params={"page": p}).status_code for p in (1, 1, 2, 1)] == [503] * 4
    assert _get(base_url, "listen_history")["total"] == HISTORIES
    assert _admin(base_url, "state")["data_requests"] == 1  # a 503 is not a data request served


def test_short_page_silently_skips_its_last_record(emulator, emulator_settings):
    base_url = emulator(short_pages=["users:2", "users:12", "tracks:1"])
    page = _get(base_url, "users", 2)
    assert (page["total"], page["pages"], len(page["items"])) == (USERS, 12, 99)
    assert [u["id"] for u in page["items"]] == list(range(101, 200))  # 200 never served
    last = _get(base_url, "users", 12)  # the last page is left alone
    assert [u["id"] for u in last["items"]] == list(range(1101, USERS + 1))
    assert len(_get(base_url, "users", 2, size=50)["items"]) == 49  # a page number, whatever the size
    assert len(_get(base_url, "users", 3)["items"]) == 100
    assert len(_get(base_url, "tracks", 1)["items"]) == 99
    assert sum(len(body["items"]) for body in _pull(base_url, "users")) == USERS - 1


@pytest.mark.parametrize("drift, total, pages", [(7, USERS + 7, 12), (50, USERS + 50, 13), (-100, USERS - 100, 11)])
def test_total_drift_after_the_first_page(emulator, emulator_settings, drift, total, pages):
    base_url = emulator(total_drift=drift)
    first, second = _get(base_url, "users", 1), _get(base_url, "users", 2)
    assert (first["total"], first["pages"]) == (USERS, 12)
    assert (second["total"], second["pages"]) == (total, pages)
    assert second["items"] == Dataset(emulator_settings).page("users", 2, 100)["items"]


LIVE = dict(
    mutate_every_requests=3, mutation_inserts=3, mutation_deletes=2, mutation_updates=2, restart_after_requests=7,
    short_pages=["listen_history:2"], total_drift=2, duplicate_rate=0.05, null_rate=0.05, orphan_rate=0.05,
)  # fmt: skip
REQUESTS = [("users", 1, 100), ("listen_history", 2, 100), ("tracks", 3, 50), ("users", 2, 100)] * 3


def _bodies(base_url):
    return [requests.get(f"{base_url}/{e}", params={"page": p, "size": s}).content for e, p, s in REQUESTS]


def test_same_settings_and_requests_same_bytes(emulator):
    first, second = _bodies(emulator(**LIVE)), _bodies(emulator(**LIVE))
    assert first == second
    # In-process, the live state is a function of the requests served: a test can replay it.
    live = LiveDataset(Dataset(emulator.settings))
    replay = []
    for entity, page, size in REQUESTS:
        replay.append(live.page_json(entity, page, size))
        live.served()
    assert replay == first
    assert _bodies(emulator(fault_seed=7, **LIVE)) != first


def test_live_modes_combine_with_transport_faults(emulator):
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=0))
    base_url = emulator(error_rate=0.5, mutate_after_requests=4, mutation_inserts=1)
    totals = []
    for attempt in range(1, 17):
        response = session.get(f"{base_url}/users", params={"page": 1})
        assert (response.status_code == 200) == (decide(emulator.settings, "/users", 1, 100, attempt).kind == "none")
        if response.ok:
            totals.append(response.json()["total"])
    assert totals == [USERS] * 4 + [USERS + 1] * 6  # only the 10 answers count as data requests
    log = _admin(base_url)
    assert log["data_requests"] == 10 and [b["after_request"] for b in log["bursts"]] == [4]


def test_changing_settings_resets_the_live_state(emulator):
    base_url = emulator(mutation_endpoints=["users"], **BURST)
    for page in (1, 2, 3):
        _get(base_url, "users", page)
    assert _admin(base_url, "state")["counts"]["users"] == USERS + 1
    state = requests.post(f"{base_url}/_admin/state", json={"mutation_endpoints": ["tracks"]}).json()
    assert state["settings"]["mutation_endpoints"] == ["tracks"]
    assert (state["data_requests"], state["counts"]["users"]) == (0, USERS)
    assert _admin(base_url)["bursts"] == []
    for page in (1, 2, 3):
        _get(base_url, "users", page)
    assert _admin(base_url)["bursts"][0]["endpoints"]["tracks"]["inserted"] == [900_000_001 + k for k in range(5)]
    bad = requests.post(f"{base_url}/_admin/state", json={"short_pages": ["users:0"]})
    assert bad.status_code == 422 and "ENTITY:PAGE" in bad.text


def test_defaults_leave_the_data_unchanged(emulator_url, emulator_settings):
    dataset = Dataset(emulator_settings)
    for entity, page in (("users", 1), ("tracks", 11), ("listen_history", 12), ("users", 13)):
        served = requests.get(f"{emulator_url}/{entity}", params={"page": page}).content
        assert served == dataset.page_json(entity, page)
    log = _admin(emulator_url)
    assert log["bursts"] == log["restarts"] == []
    assert log["alive"]["users"] == list(range(1, USERS + 1))
    assert "/_admin/mutations" not in requests.get(f"{emulator_url}/openapi.json").text


def test_the_overlay_stays_small_at_a_million_users():
    settings = EmulatorSettings(
        users=1_000_000, as_of=EmulatorSettings().start_date, mutate_every_requests=1,
        mutation_inserts=20, mutation_deletes=20, mutation_updates=5, mutation_endpoints=("users",),
    )  # fmt: skip
    live = LiveDataset(Dataset(settings))
    started = time.perf_counter()
    for _ in range(50):
        live.served()
    page = live.page("users", 9_999, 100)
    assert time.perf_counter() - started < 10
    assert page["total"] == 1_000_000
    overlay = live._overlays["users"]  # only the mutated records, never the million
    assert (len(overlay.deleted), len(overlay.inserted), len(overlay.updated)) == (1000, 1000, 250)
    log = live.log()
    assert "users" not in log["alive"] and len(log["alive"]["tracks"]) == 1000 <= ALIVE_IDS_CAP


def test_cli_options_for_the_live_modes():
    args = build_parser().parse_args(
        "--mutate-every-requests 10 --mutation-inserts 2 --mutation-endpoint users --mutation-endpoint tracks "
        "--restart-after-requests 5 --empty-endpoint tracks --failing-endpoint users --short-page users:3 "
        "--total-drift -3".split()
    )
    assert settings_from_args(args) == EmulatorSettings(
        mutate_every_requests=10, mutation_inserts=2, mutation_endpoints=("users", "tracks"),
        restart_after_requests=5, empty_endpoints=("tracks",), failing_endpoints=("users",),
        short_pages=("users:3",), total_drift=-3,
    )  # fmt: skip
    assert settings_from_args(build_parser().parse_args([])).mutation_endpoints == ("users", "tracks", "listen_history")
    for bad in (dict(mutation_endpoints=("songs",)), dict(short_pages=("users",)), dict(mutation_deletes=-1)):
        with pytest.raises(ValueError):
            EmulatorSettings(**bad)
    help_text = build_parser().format_help()
    assert "--short-page ENTITY:PAGE" in help_text and "(default: users tracks listen_history)" in help_text
