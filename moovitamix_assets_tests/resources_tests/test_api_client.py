"""The API client gets every record exactly once from a flaky upstream, or says clearly why not."""

import time

import dagster as dg
import pytest

from moovitamix_api.data import Dataset
from moovitamix_assets.resources.api import MoovitamixApiClient, MoovitamixApiError, MoovitamixApiResource

FAST = dict(backoff_factor=0.001, backoff_max_seconds=0.05)
KEYS = {"users": "id", "tracks": "id", "listen_history": "user_id"}


def _ids(pages, key):
    return [item[key] for page in pages for item in page.items]


@pytest.mark.parametrize("endpoint", ["users", "tracks", "listen_history"])
def test_fetches_every_page_in_order(emulator_url, emulator_settings, endpoint):
    fetch = MoovitamixApiResource(base_url=emulator_url, page_size=50).fetch_all_pages(endpoint)
    pages = list(fetch)
    expected = [record[KEYS[endpoint]] for record in Dataset(emulator_settings).iter_records(endpoint)]
    assert [page.number for page in pages] == list(range(1, len(pages) + 1))
    assert _ids(pages, KEYS[endpoint]) == expected
    assert pages[0].total == len(expected) and pages[0].pages == len(pages)
    stats = fetch.stats
    assert (stats.pages, stats.requests, stats.retries, stats.records) == (len(pages), len(pages), 0, len(expected))
    assert stats.bytes > 0 and stats.seconds > 0 and stats.records_per_second > 0
    assert all(isinstance(value, (int, float)) for value in stats.as_metadata().values())


def test_survives_5xx_429_drops_and_broken_bodies(emulator):
    base_url = emulator(error_rate=0.2, rate_limit_rate=0.05, drop_rate=0.05, bad_json_rate=0.05, retry_after=0)
    client = MoovitamixApiClient(base_url, page_size=20, max_concurrency=4, max_retries=10, **FAST)
    dataset = Dataset(emulator.settings)
    total_retries = 0
    for endpoint, key in KEYS.items():
        fetch = client.fetch_all_pages(endpoint)
        assert _ids(fetch, key) == [record[key] for record in dataset.iter_records(endpoint)]
        assert fetch.stats.requests == fetch.stats.pages + fetch.stats.retries
        total_retries += fetch.stats.retries
    assert total_retries > 0.3 * 3 * 60  # about 0.35 faults per request


@pytest.mark.parametrize(
    "fault, message",
    [
        ({"error_rate": 1.0}, r"GET /users page 1: HTTP 50[023] after 2 retries"),
        ({"drop_rate": 1.0}, r"GET /users page 1: ConnectionError .*Remote.*after 2 retries"),
        ({"bad_json_rate": 1.0}, r"GET /users page 1: body is not JSON .* after 2 retries"),
        ({"rate_limit_rate": 1.0, "retry_after": 30}, r"GET /users page 1: HTTP 429 after 2 retries"),
    ],
)
def test_gives_up_with_a_clear_message(emulator, fault, message):
    base_url = emulator(**fault)
    api = MoovitamixApiResource(base_url=base_url, max_retries=2, api_token="s3cret-token", **FAST)
    fetch = api.fetch_all_pages("users")
    started = time.monotonic()
    with pytest.raises(MoovitamixApiError, match=message) as failure:
        list(fetch)
    assert time.monotonic() - started < 5  # a Retry-After of 30 s waits backoff_max_seconds
    assert "s3cret-token" not in str(failure.value)
    assert fetch.stats.requests == 3 and fetch.stats.retries == 2


def test_a_later_page_failing_names_that_page(emulator):
    base_url = emulator()
    client = MoovitamixApiClient(base_url, page_size=100, max_retries=1, **FAST)
    fetch = iter(client.fetch_all_pages("users"))
    assert next(fetch).number == 1
    client.page_size = 101  # the server now rejects every request: 422 is not retried
    with pytest.raises(MoovitamixApiError, match=r"GET /users page \d+: HTTP 422: "):
        list(fetch)


def test_stopping_early_is_clean(emulator_url):
    fetch = MoovitamixApiClient(emulator_url, page_size=10).fetch_all_pages("tracks")
    for page in fetch:
        break
    assert fetch.stats.pages == 1 and fetch.stats.records == 10


def test_token_stays_out_of_reprs(emulator_url):
    api = MoovitamixApiResource(base_url=emulator_url, api_token="s3cret-token")
    assert "s3cret-token" not in repr(api) and "s3cret-token" not in repr(api.get_client())
    assert api.get_client().session.headers["Authorization"] == "Bearer s3cret-token"


def test_resource_inside_an_asset(emulator_url):
    @dg.asset
    def users_pulled(api: MoovitamixApiResource) -> dg.MaterializeResult:
        fetch = api.fetch_all_pages("users")
        records = sum(len(page.items) for page in fetch)
        return dg.MaterializeResult(metadata={"records": records, **fetch.stats.as_metadata()})

    result = dg.materialize([users_pulled], resources={"api": MoovitamixApiResource(base_url=emulator_url)})
    metadata = result.asset_materializations_for_node("users_pulled")[0].metadata
    assert metadata["records"].value == 1155 and metadata["pages"].value == 12
