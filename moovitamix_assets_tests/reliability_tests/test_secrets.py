"""The API token: sent as a Bearer header on every request, and never written to the run's
events, its stored run record, its console output or its error messages."""

import secrets

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from moovitamix_assets_tests.pipeline import materialize_day
from moovitamix_assets_tests.reliability_tests.upstream import (
    PlantedUpstream,
    history,
    serve_planted,
    track,
    user,
)

DAY = "2026-11-01"
TOKEN_ENV = "MOOVITAMIX_API_TOKEN"
ONE_OF_EACH = {"users": [user(1)], "tracks": [track(1)], "listen_history": [history(1, [1])]}


def everything_the_run_left(instance: dg.DagsterInstance, run_id: str) -> str:
    """Every event of the run and its run record, serialized as Dagster stores them."""
    events = [serialize_value(entry) for entry in instance.all_logs(run_id)]
    assert events
    return "\n".join([*events, serialize_value(instance.get_run_by_id(run_id))])


@pytest.fixture
def token(monkeypatch):
    value = f"tok-{secrets.token_hex(16)}"
    monkeypatch.setenv(TOKEN_ENV, value)
    return value


@pytest.mark.parametrize("given_as", ["value", "env_var"])
def test_token_is_sent_and_never_recorded(tmp_path, capfd, token, given_as):
    api_token = token if given_as == "value" else dg.EnvVar(TOKEN_ENV)
    upstream = PlantedUpstream(ONE_OF_EACH)
    instance = dg.DagsterInstance.ephemeral()
    with serve_planted(upstream) as base_url:
        result = materialize_day(base_url, tmp_path / "warehouse.duckdb", DAY, instance=instance, api_token=api_token)

    assert result.success
    # Per endpoint: its one page, then page 1 again to verify the pull saw one snapshot.
    assert upstream.authorizations == [f"Bearer {token}"] * 6
    assert token not in everything_the_run_left(instance, result.run_id)
    output = capfd.readouterr()
    assert "RUN_SUCCESS" in output.err and token not in output.out + output.err


def test_token_stays_out_of_a_failed_run(tmp_path, capfd, token):
    upstream = PlantedUpstream({}, bodies={"users": b'{"detail": "Not authenticated"}'}, status=401)
    instance = dg.DagsterInstance.ephemeral()
    with serve_planted(upstream) as base_url:
        result = materialize_day(
            base_url, tmp_path / "warehouse.duckdb", DAY, instance=instance, raise_on_error=False, api_token=token
        )

    assert not result.success
    (failure,) = result.get_step_failure_events()  # the raw step, not retried: a 401 stays a 401
    message = failure.event_specific_data.error.message
    assert "3 of 3 endpoint(s) failed" in message  # each endpoint answered 401
    for endpoint in ("users", "tracks", "listen_history"):
        assert f"GET /{endpoint} page 1: HTTP 401: " in message, endpoint
    assert token not in message
    # A 401 is retried neither by the client nor by the step: one request per endpoint.
    assert upstream.authorizations == [f"Bearer {token}"] * 3
    assert not [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_UP_FOR_RETRY]
    assert token not in everything_the_run_left(instance, result.run_id)
    output = capfd.readouterr()
    assert "RUN_FAILURE" in output.err and token not in output.out + output.err


def test_token_echoed_by_upstream_is_redacted(tmp_path, token):
    echo = b'{"detail": "invalid credentials: Bearer %s"}' % token.encode()
    instance = dg.DagsterInstance.ephemeral()
    with serve_planted(PlantedUpstream({}, bodies={"users": echo}, status=401)) as base_url:
        result = materialize_day(
            base_url, tmp_path / "warehouse.duckdb", DAY, instance=instance, raise_on_error=False, api_token=token
        )
    assert not result.success
    assert token not in everything_the_run_left(instance, result.run_id)
