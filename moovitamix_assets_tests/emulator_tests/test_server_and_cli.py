"""The emulator starts and stops cleanly in a thread, and its CLI maps onto EmulatorSettings."""

import datetime as dt

import pytest
import requests

from moovitamix_api.cli import build_parser, main, settings_from_args
from moovitamix_api.server import serve_in_thread
from moovitamix_api.settings import EmulatorSettings


def test_serve_in_thread_starts_on_a_free_port_and_stops():
    with serve_in_thread(EmulatorSettings(users=10, new_users_per_day=0, tracks=10)) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        assert requests.get(f"{base_url}/users").json()["total"] == 10
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base_url}/users", timeout=2)


def test_cli_options_become_settings():
    args = build_parser().parse_args(
        "--seed 7 --profile upstream --users 50 --as-of 2026-03-04 --error-rate 0.1 --retry-after 0 "
        "--rename-field users.email=mail --rename-field tracks.name=title --extra-field tracks.x=1".split()
    )
    settings = settings_from_args(args)
    assert settings == EmulatorSettings(
        seed=7, profile="upstream", users=50, as_of=dt.date(2026, 3, 4), error_rate=0.1, retry_after=0,
        rename_fields=("users.email=mail", "tracks.name=title"), extra_fields=("tracks.x=1",),
    )  # fmt: skip
    assert (args.host, args.port) == ("127.0.0.1", 8000)
    assert settings_from_args(build_parser().parse_args([])) == EmulatorSettings()


def test_cli_rejects_bad_settings(capsys):
    assert main(["--error-rate", "1.5"]) == 2
    assert "error_rate" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--profile", "nope"])
