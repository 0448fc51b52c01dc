"""A consistent, staged pull of one endpoint: full passes over its pages, each verified, written to Parquet.

The API pages by offset and the data can change while we page through it: a record
inserted or deleted before the page being read shifts every later record across a page
boundary, so one pass can serve a record twice or skip it, and a restarted upstream
serves other ids from one page on. No single page says so. A pass therefore verifies
itself once it ends:

- every page reported the same `total` and `pages`;
- every page but the last is full, and the last holds the rest;
- the records add up to `total`, and no id was served twice;
- page 1, read again at the end, serves the same ids and `total` (the upstream did not
  restart or reorder under us).

A clean pass is the snapshot. Otherwise the endpoint is pulled again, at most
`max_attempts` passes in all:

- a clean later pass is the snapshot on its own (what the earlier passes saw is discarded);
- two passes whose only finding is the same set of ids served twice: those duplicates are
  the upstream's data, not our paging (core rejects them as duplicate_id);
- two consecutive passes that both moved but share almost all their ids (an upstream that
  changes continuously): their union, one record per id, the later pass's version winning.
  A record alive for the whole pull is skipped by a pass only when a deletion lands near
  its page boundary during that pass; it is missing from the union only if that happens
  in both passes;
- otherwise the pull fails, naming the endpoint and what moved.

Pages are written as they arrive (one Parquet row per page: its items as one JSON array
and their ids), so memory holds a batch of pages and the ids, not the endpoint.
"""

import array
import dataclasses
import functools
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Optional, Union

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moovitamix_assets.contract import KEY_FIELD
from moovitamix_assets.resources.api import FetchStats, MoovitamixApiClient, MoovitamixApiError, Page

Logger = Union[logging.Logger, logging.LoggerAdapter, dg.DagsterLogManager]

# Pages buffered before a Parquet row group is written: bounds memory at any scale.
BATCH_RECORDS = 20_000

# Two moving passes are merged only when they share at least this share of their ids; an
# upstream that restarted with new ids, or emptied, shares far fewer and fails the pull.
MIN_SHARED_IDS = 0.9

STAGED_SCHEMA = pa.schema(
    [
        ("pass", pa.int32()),
        ("page", pa.int32()),
        ("page_json", pa.string()),  # the page's body as received: {"items": [...], "total": ...}
        ("keys", pa.list_(pa.int64())),  # each item's id (None when not a usable integer)
    ]
)

# Lone UTF-16 surrogates: valid in JSON ("\ud83c", half an emoji) but not in UTF-8, so
# neither Parquet nor DuckDB would take the text. A page whose body escapes any surrogate
# is re-encoded from its parsed items: Python's json pairs the halves that match; what is
# left alone is replaced with U+FFFD and counted. Every other page is staged as received.
SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")

INT64_MAX = 2**63 - 1


def record_key(item: Any, key_field: str) -> Optional[int]:
    """The record's id when it is a JSON integer that fits a BIGINT, else None (core rejects it)."""
    value = item.get(key_field) if isinstance(item, dict) else None
    if isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX <= value <= INT64_MAX:
        return value
    return None


@dataclasses.dataclass
class PassSummary:
    """One full pass over an endpoint's pages, written to `file`."""

    number: int
    file: Path
    records: int = 0
    total: Optional[int] = None  # from page 1
    problems: list[str] = dataclasses.field(default_factory=list)
    # The pass's distinct ids, sorted, and those served more than once: numpy arrays (8 bytes
    # an id), not Python sets, so a million records cost megabytes, not hundreds of them.
    keys: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.int64))
    duplicate_keys: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.int64))
    replaced_characters: int = 0

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def only_duplicates(self) -> bool:
        return bool(self.duplicate_keys.size) and all(p.startswith("ids served twice") for p in self.problems)


@dataclasses.dataclass
class StagedPull:
    """A verified pull, staged: load `files`; when merged, the rows of `winning_pass` win (load_merged_raw_snapshot.sql)."""

    endpoint: str
    files: list[Path]
    winning_pass: int
    merged: bool  # the union of two passes rather than one pass
    attempts: int
    total_reported: int
    records_moved: int  # ids in one pass and not another, over all passes
    replaced_characters: int
    stats: FetchStats

    def metadata(self) -> dict[str, Any]:
        return {
            **self.stats.as_metadata(),
            "pull_attempts": self.attempts,
            "records_moved": self.records_moved,
            "merged_passes": int(self.merged),
            "total_reported_by_api": self.total_reported,
            "replaced_characters": self.replaced_characters,
        }


def verify_pass(
    pages: list[Page], page_size: int, bookend: Optional[Page], duplicate_keys: np.ndarray
) -> list[str]:
    """What shows that the upstream moved, or served something odd, during one pass (empty when clean)."""
    problems = []
    if not pages:
        return ["no page was served"]
    first = pages[0]
    totals = sorted({(page.total, page.pages) for page in pages})
    if len(totals) > 1:
        problems.append("total/pages moved during the pull: " + ", ".join(f"{t}/{p}" for t, p in totals))
    expected_pages = -(-first.total // page_size) if first.total > 0 else 0
    if first.pages != expected_pages:
        problems.append(f"pages={first.pages} does not match total={first.total} at size {page_size}")
    for page in pages:
        is_last = page.number == len(pages)
        expected = page_size if not is_last else first.total - (len(pages) - 1) * page_size
        if page.items and len(page.items) != expected:
            kind = "the last page" if is_last else "a page that is not the last"
            problems.append(f"page {page.number} ({kind}) has {len(page.items)} items, expected {expected}")
    served = sum(len(page.items) for page in pages)
    if served != first.total:
        problems.append(f"{served} records served, total says {first.total}")
    if duplicate_keys.size:
        problems.append(f"ids served twice: {duplicate_keys.size} (e.g. {duplicate_keys[:5].tolist()})")
    if bookend is not None:
        if bookend.total != first.total:
            problems.append(f"total moved from {first.total} to {bookend.total} by the end of the pull")
        elif [json.dumps(i, sort_keys=True) for i in bookend.items] != [json.dumps(i, sort_keys=True) for i in first.items]:
            problems.append("page 1 changed during the pull (records inserted, deleted, edited or re-keyed)")
    return problems


def staged_text(page: Page) -> tuple[str, int]:
    """The page as it is staged, and how many lone surrogates were replaced in it."""
    if page.raw and not SURROGATE_ESCAPE.search(page.raw):
        try:
            return page.raw.decode("utf-8"), 0
        except UnicodeDecodeError:
            pass
    return LONE_SURROGATE.subn("\ufffd", json.dumps({"items": page.items}, ensure_ascii=False))


class PassWriter:
    """Writes one pass's pages to a Parquet file in bounded batches."""

    def __init__(self, summary: PassSummary, key_field: str):
        self.summary = summary
        self.key_field = key_field
        self.writer = pq.ParquetWriter(summary.file, STAGED_SCHEMA, compression="zstd")
        self.buffer: dict[str, list] = {name: [] for name in STAGED_SCHEMA.names}
        self.buffered = 0

    def add(self, page: Page, served_keys: array.array) -> None:
        keys = [record_key(item, self.key_field) for item in page.items]
        served_keys.extend(key for key in keys if key is not None)
        self.summary.records += len(page.items)
        if not page.items:
            return
        text, replaced = staged_text(page)
        self.summary.replaced_characters += replaced
        for name, value in (("pass", self.summary.number), ("page", page.number), ("page_json", text), ("keys", keys)):
            self.buffer[name].append(value)
        self.buffered += len(page.items)
        if self.buffered >= BATCH_RECORDS:
            self.flush()

    def flush(self) -> None:
        self.writer.write_table(pa.table(self.buffer, schema=STAGED_SCHEMA))
        self.buffer = {name: [] for name in STAGED_SCHEMA.names}
        self.buffered = 0

    def close(self) -> None:
        if self.buffer["page"]:
            self.flush()
        self.writer.close()


def pull_pass(client: MoovitamixApiClient, endpoint: str, summary: PassSummary, stats: FetchStats) -> None:
    """One full pass: every page, written as it arrives, then verified (summary.problems)."""
    served_keys = array.array("q")  # every usable id served, in order
    fetch = client.fetch_all_pages(endpoint)
    pages_seen: list[Page] = []
    writer = PassWriter(summary, KEY_FIELD[endpoint])
    try:
        for page in fetch:
            writer.add(page, served_keys)
            # Keep what verification needs of each page; page 1 whole, for the bookend.
            pages_seen.append(page if page.number == 1 else dataclasses.replace(page, items=[None] * len(page.items)))
        bookend = client.fetch_page(endpoint, 1, on_response=fetch._record_request) if pages_seen else None
    finally:
        writer.close()
        stats.add_counts(fetch.stats)
    summary.total = pages_seen[0].total if pages_seen else None
    summary.keys, counts = np.unique(np.frombuffer(served_keys, dtype=np.int64), return_counts=True)
    summary.duplicate_keys = summary.keys[counts > 1]
    summary.problems = verify_pass(pages_seen, client.page_size, bookend, summary.duplicate_keys)


def pull_endpoint(
    client: MoovitamixApiClient,
    endpoint: str,
    directory: Path,
    max_attempts: int = 4,
    log: Optional[Logger] = None,
) -> StagedPull:
    """Pulls `endpoint` until a consistent view is reached (see the module docstring), staged under `directory`."""
    log = log or logging.getLogger(__name__)
    directory.mkdir(parents=True, exist_ok=True)
    stats = FetchStats(endpoint=endpoint)
    started = time.monotonic()
    passes: list[PassSummary] = []
    findings: list[str] = []
    for number in range(1, max_attempts + 1):
        summary = PassSummary(number=number, file=directory / f"pass-{number}.parquet")
        pull_pass(client, endpoint, summary, stats)
        stats.seconds = time.monotonic() - started
        passes.append(summary)
        try:
            decision = _decide(passes)
        except InconsistentUpstream as problem:
            raise MoovitamixApiError(
                f"GET /{endpoint}: the upstream served the same inconsistent view on {number} passes, "
                f"nothing moved between them: {problem}"
            ) from None
        if decision is not None:
            winning, merged = decision
            moved = _records_moved(passes)
            files = [passes[-2].file, passes[-1].file] if merged else [winning.file]
            for stale in passes:
                if stale.file not in files:
                    stale.file.unlink(missing_ok=True)
            if number > 1:
                log.warning(
                    f"/{endpoint}: the upstream moved during the pull; consistent after {number} passes "
                    f"({'union of the last two' if merged else f'pass {winning.number}'}), "
                    f"{moved} records moved. Earlier passes found: {'; '.join(findings)}"
                )
            return StagedPull(
                endpoint=endpoint, files=files, winning_pass=winning.number, merged=merged, attempts=number,
                total_reported=winning.total or 0, records_moved=moved,
                replaced_characters=winning.replaced_characters, stats=stats,
            )  # fmt: skip
        findings.append(f"pass {number}: " + "; ".join(summary.problems))
        log.warning(f"/{endpoint}: pass {number} is not consistent ({'; '.join(summary.problems)}); pulling again")
    raise MoovitamixApiError(
        f"GET /{endpoint}: no consistent view after {max_attempts} passes; the upstream kept moving: "
        + " | ".join(findings)
        + f"; {_records_moved(passes)} records moved between passes"
    )


def _decide(passes: list[PassSummary]) -> Optional[tuple[PassSummary, bool]]:
    """(the pass whose rows win, whether the last two passes are merged), or None to pull again."""
    last = passes[-1]
    if last.clean:
        return last, False
    if len(passes) < 2:
        return None
    previous = passes[-2]
    if last.only_duplicates and previous.only_duplicates and np.array_equal(last.duplicate_keys, previous.duplicate_keys):
        return last, False  # the upstream serves these ids twice, pass after pass: data, not paging
    if _same_view(previous, last):
        # Nothing moved between the passes, yet the view is inconsistent (a page short of
        # records, a total that contradicts the pages): pulling again would see it again.
        raise InconsistentUpstream("; ".join(last.problems))
    if _moving_but_alike(previous, last):
        return last, True
    return None


class InconsistentUpstream(Exception):
    """Two passes served the same inconsistent view: the upstream, not our timing, is at fault."""


def _same_view(previous: PassSummary, last: PassSummary) -> bool:
    return np.array_equal(previous.keys, last.keys) and previous.total == last.total and previous.problems == last.problems


def _moving_but_alike(previous: PassSummary, last: PassSummary) -> bool:
    """Both passes moved, yet they agree on almost every id: an upstream that changes as we read."""
    if not previous.keys.size or not last.keys.size or previous.total is None or last.total is None:
        return False
    shared = np.intersect1d(previous.keys, last.keys, assume_unique=True).size
    return shared >= MIN_SHARED_IDS * max(previous.keys.size, last.keys.size)


def _records_moved(passes: list[PassSummary]) -> int:
    """Ids seen in some passes and not in others."""
    if len(passes) < 2:
        return 0
    union = functools.reduce(np.union1d, (summary.keys for summary in passes))
    common = functools.reduce(lambda a, b: np.intersect1d(a, b, assume_unique=True), (summary.keys for summary in passes))
    return int(union.size - common.size)
