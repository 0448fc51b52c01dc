"""The figures the README states about the emulator are what it serves."""

import datetime as dt
import re

from moovitamix_api.data import expected_counts
from moovitamix_api.settings import EmulatorSettings
from moovitamix_assets_tests.docs_tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def number(text: str) -> int:
    return int(text.replace(",", ""))


def test_the_days_figures_are_what_the_default_emulator_serves():
    days = re.findall(r"([\d,]+) users, ([\d,]+) tracks\s+and\s+([\d,]+) listens\s+on\s+(\d{4}-\d\d-\d\d)", README)
    assert len(days) >= 3, "the README's Days paragraph states no figures"
    for users, tracks, listens, day in days:
        counts = expected_counts(EmulatorSettings(as_of=dt.date.fromisoformat(day)))
        stated = (number(users), number(tracks), number(listens))
        assert stated == (counts["users"]["served"], counts["tracks"]["served"], counts["listen_history"]["listens"]), day
    # The first day is --start-date, whose default the README names.
    assert min(day for *_, day in days) == EmulatorSettings().start_date.isoformat()
    assert f"`--start-date` ({EmulatorSettings().start_date})" in README


def test_the_command_comments_state_what_it_serves():
    (users, day) = re.search(r"--host 127\.0\.0\.1 +# realistic, today's data: ([\d,]+) users on (\d{4}-\d\d-\d\d)", README).groups()
    assert number(users) == expected_counts(EmulatorSettings(as_of=dt.date.fromisoformat(day)))["users"]["served"]
    upstream = re.search(r"`upstream`: (\d+)\s+users and tracks, histories of (\d+) distinct track ids", README)
    counts = expected_counts(EmulatorSettings(profile="upstream"))
    users = counts["users"]["served"]
    assert (number(upstream[1]), number(upstream[2])) == (users, counts["listen_history"]["listens"] // users)
    assert counts["tracks"]["served"] == users
