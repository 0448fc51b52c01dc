"""Fixtures shared by the whole test suite: the API emulator on a free loopback port."""

import contextlib
import datetime as dt
import os
from typing import Any, Callable, Iterator

import pytest

from moovitamix_api.server import serve_in_thread
from moovitamix_api.settings import EmulatorSettings

# Before anything imports the code location: a failed pull's step retries wait a tenth of
# a second, not the 10 s and 20 s of production (their count stays the production one).
os.environ.setdefault("MOOVITAMIX_RAW_RETRY_DELAY_SECONDS", "0.1")

# A small realistic world on a fixed day: 1000 users and tracks on 2026-10-01, one month
# of growth by 2026-11-01 (1155 users, 1062 tracks, about 32 listens per history).
TEST_SETTINGS = EmulatorSettings(
    seed=42,
    profile="realistic",
    start_date=dt.date(2026, 10, 1),
    as_of=dt.date(2026, 11, 1),
)


@pytest.fixture(scope="session")
def emulator_settings() -> EmulatorSettings:
    """The settings behind `emulator_url`, and the base every `emulator(...)` overrides."""
    return TEST_SETTINGS


@pytest.fixture(scope="session")
def emulator_url(emulator_settings: EmulatorSettings) -> Iterator[str]:
    """Base URL of one emulator serving `emulator_settings` for the whole session.

    Shared: never change its settings through /_admin/state; use `emulator` for that.
    """
    with serve_in_thread(emulator_settings) as base_url:
        yield base_url


@pytest.fixture
def emulator(emulator_settings: EmulatorSettings) -> Iterator[Callable[..., str]]:
    """Factory: emulator(**overrides) starts a server with emulator_settings.replace(**overrides)
    (values may be strings, as on the command line) and returns its base URL; every server
    it started stops at the end of the test. `emulator.settings` holds the last settings."""
    with contextlib.ExitStack() as servers:

        def start(**overrides: Any) -> str:
            start.settings = emulator_settings.replace(**overrides)  # type: ignore[attr-defined]
            return servers.enter_context(serve_in_thread(start.settings))  # type: ignore[attr-defined]

        yield start
