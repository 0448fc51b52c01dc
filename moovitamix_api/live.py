"""The live upstream: what the server serves while records move under a pull.

`Dataset` says what a server serves while nothing moves. `LiveDataset` wraps one with the
live modes of its settings: bursts of inserts, deletes and updates, a restart that
reshuffles every id, and answer-level modes (empty endpoints, short pages, a drifting
`total`). The live state is a pure function of (settings, data requests served): a burst
draws from the fault seed and its burst number only, never from the clock or from which
pages were asked, so a run replays exactly, and a test rebuilds any state in-process with
`LiveDataset(Dataset(settings))` and `served()` called n times.

Vocabulary (see data.py for base records and the served sequence 1..S):

- the *live sequence* is what the pages show now, positions 1..count(entity): the served
  sequence minus deleted positions, with inserted records among it;
- a *burst* mutates each endpoint of `mutation_endpoints`, in that order: deletes among the
  live records, then updates among the survivors, then inserts, so the ids one burst
  logs as inserted, deleted and updated are disjoint;
- a *restart* discards every mutation and maps every base id through a keyed permutation
  drawn from the restart number (see `_Reshuffle`), in users, tracks and histories alike.

Only what moved is held in memory (`_Overlay`), so memory does not grow with the scale;
a page maps its positions through the overlay with two binary searches.
"""

import datetime as dt
import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from moovitamix_api.data import ENTITY_CODES, LISTEN_HISTORY, TRACKS, USERS, WORDS, Dataset, encode_page, hash64
from moovitamix_api.settings import ENTITIES

# Inserted records take ids 900,000,001 and up, per endpoint: above every base id and below
# every orphan id (data.ORPHAN_ID_BASE), so they were never used before. The k-th history
# inserted belongs to the k-th user inserted (whether or not users are mutated).
INSERTED_ID_BASE = 900_000_000
# /_admin/mutations lists the ids alive now only for endpoints this small.
ALIVE_IDS_CAP = 200_000
_ID_CODE = {USERS: 1, TRACKS: 2, LISTEN_HISTORY: 1}  # whose id space an endpoint's id lives in


class _Overlay:
    """One endpoint's mutations over its served sequence 1..S.

    deleted  sorted served positions no longer shown;
    inserted records in live order, each anchored after a served position (0..S): it shows
             right after that position, and several with one anchor keep their list order;
    updated  served position -> its record as last updated.
    The k-th inserted record (0-based) shows at anchor - deleted(<= anchor) + k + 1.
    """

    def __init__(self, served_count: int):
        self.served_count = served_count
        self.deleted = np.zeros(0, dtype=np.int64)
        self.anchors: List[int] = []
        self.inserted: List[Dict[str, Any]] = []
        self.updated: Dict[int, Dict[str, Any]] = {}

    @property
    def pristine(self) -> bool:
        return not (len(self.deleted) or self.inserted or self.updated)

    def count(self) -> int:
        return self.served_count - len(self.deleted) + len(self.inserted)

    def _insert_positions(self) -> np.ndarray:
        anchors = np.asarray(self.anchors, dtype=np.int64)
        return anchors - np.searchsorted(self.deleted, anchors, side="right") + np.arange(1, len(anchors) + 1)

    def locate(self, positions: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Live positions -> (is_inserted, index into `inserted` or served position)."""
        positions = np.asarray(positions, dtype=np.int64)
        inserted_at = self._insert_positions()
        before = np.searchsorted(inserted_at, positions, side="left")
        if len(inserted_at):
            is_inserted = inserted_at[np.minimum(before, len(inserted_at) - 1)] == positions
        else:
            is_inserted = np.zeros(positions.shape, dtype=bool)
        # The rank-th shown served position p is rank + (deleted positions before it), and a
        # deleted d_i lies before it iff d_i - i <= rank.
        rank = positions - before
        served = rank + np.searchsorted(self.deleted - np.arange(len(self.deleted)), rank, side="right")
        return is_inserted, np.where(is_inserted, before, served)

    def delete(self, positions: np.ndarray) -> None:
        is_inserted, where = self.locate(positions)
        for index in sorted(where[is_inserted].tolist(), reverse=True):
            del self.anchors[index], self.inserted[index]
        served = where[~is_inserted]
        self.deleted = np.union1d(self.deleted, served)
        for position in served.tolist():
            self.updated.pop(position, None)

    def insert(self, position: int, record: Dict[str, Any]) -> None:
        """Insert `record` so that it shows at live `position` (1..count() + 1)."""
        anchor = 0
        if position > 1:
            is_inserted, where = self.locate(np.asarray([position - 1]))
            anchor = self.anchors[int(where[0])] if is_inserted[0] else int(where[0])
        index = int(np.searchsorted(self._insert_positions(), position, side="left"))
        self.anchors.insert(index, anchor)
        self.inserted.insert(index, record)


class _Reshuffle:
    """The ids after restart r >= 1: base id x of users or tracks (1..space) becomes
    r * D + F(x - 1) + 1, where D = 4**h is the smallest power of four >= space and F a
    4-round Feistel permutation of 0..D-1 keyed by (fault seed, r). Each restart's ids are
    thus disjoint from the original ones and from every other restart's; ids outside
    1..space (orphans, inserted ids, nulls) are kept."""

    def __init__(self, seed: int, restart: int, spaces: Dict[int, int]):
        self.seed, self.restart, self.spaces = seed, restart, spaces
        self.half_bits = {code: max(1, math.ceil(math.log2(max(space, 2)) / 2)) for code, space in spaces.items()}

    def __call__(self, code: int, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        bits = self.half_bits[code]
        mask = (1 << bits) - 1
        inside = (ids >= 1) & (ids <= self.spaces[code])
        x = np.where(inside, ids - 1, 0)
        left, right = x >> bits, x & mask
        for round_number in range(4):
            mixed = (hash64(self.seed, self.restart, code, round_number, right) & np.uint64(mask)).astype(np.int64)
            left, right = right, left ^ mixed
        return np.where(inside, self.restart * (1 << (2 * bits)) + ((left << bits) | right) + 1, ids)


class LiveDataset:
    """What a server serves after a number of data requests, with the live modes of its settings.

    count(entity)                -> live records now (the `total` a page reports)
    records(entity, first, last) -> live records at positions first..last
    page(entity, page, size) / page_json(...) -> the body of GET /{entity} now
    served()                     -> count one data request answered; apply what falls due
    log()                        -> the bursts and restarts applied, counts and ids alive now
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset
        self.settings = settings = dataset.settings
        self.requests = 0
        self.restart = 0
        self.bursts: List[Dict[str, Any]] = []
        self.restarts: List[Dict[str, Any]] = []
        self._seed = int(hash64(settings.effective_fault_seed, 0x11FE))
        self._overlays = {entity: _Overlay(dataset.count(entity)) for entity in ENTITIES}
        self._reshuffle: Optional[_Reshuffle] = None
        self._inserted_ids = {entity: 0 for entity in ENTITIES}
        self._short_pages = settings.short_page_numbers()
        renames = settings.renames()
        self._names = {entity: renames.get(entity, {}) for entity in ENTITIES}

    # -- what is served ------------------------------------------------------------------
    def count(self, entity: str) -> int:
        return self._overlays[entity].count()

    def records(self, entity: str, first: int, last: int) -> List[Dict[str, Any]]:
        overlay = self._overlays[entity]
        last = min(last, overlay.count())
        if last < first:
            return []
        if overlay.pristine and not self.restart:
            return self.dataset.records(entity, first, last)
        return self._records_at(entity, np.arange(max(first, 1), last + 1))

    def page(self, entity: str, page: int = 1, size: int = 100) -> Dict[str, Any]:
        if entity in self.settings.empty_endpoints:
            return {"items": [], "total": 0, "page": page, "size": size, "pages": 0}
        total = self.count(entity)
        first = (page - 1) * size + 1
        items = self.records(entity, first, first + size - 1)
        if page in self._short_pages.get(entity, ()) and page < math.ceil(total / size):
            items = items[:-1]
        if page > 1:
            total = max(0, total + self.settings.total_drift)
        return {"items": items, "total": total, "page": page, "size": size, "pages": math.ceil(total / size)}

    def page_json(self, entity: str, page: int = 1, size: int = 100) -> bytes:
        """The page body exactly as the server sends it (Dataset.page_json's bytes when nothing moved)."""
        return encode_page(self.page(entity, page, size))

    # -- time passing ----------------------------------------------------------------------
    def served(self) -> None:
        """Count one data request answered 200; a restart, then a burst, may follow it."""
        self.requests += 1
        n, s = self.requests, self.settings
        if s.restart_after_requests and n == s.restart_after_requests:
            self._restart()
        if (s.mutate_after_requests and n == s.mutate_after_requests) or (
            s.mutate_every_requests and n % s.mutate_every_requests == 0
        ):
            self._burst()

    def log(self) -> Dict[str, Any]:
        """The bursts and restarts so far, live counts, and the ids alive now in served order
        (listen_history: user_id), for endpoints of at most ALIVE_IDS_CAP records."""
        counts = {entity: self.count(entity) for entity in ENTITIES}
        return {
            "data_requests": self.requests,
            "restarts": self.restarts,
            "bursts": self.bursts,
            "counts": counts,
            "alive": {
                entity: self._ids_at(entity, np.arange(1, count + 1))
                for entity, count in counts.items()
                if count <= ALIVE_IDS_CAP
            },
        }

    # -- internals ---------------------------------------------------------------------------
    def _name(self, entity: str, field: str) -> str:
        return self._names[entity].get(field, field)

    def _id_field(self, entity: str) -> str:
        return self._name(entity, "user_id" if entity == LISTEN_HISTORY else "id")

    def _records_at(self, entity: str, positions: np.ndarray) -> List[Dict[str, Any]]:
        overlay = self._overlays[entity]
        is_inserted, where = overlay.locate(positions)
        served = where[~is_inserted]
        base = iter(self._served_records(entity, served) if len(served) else [])
        return [overlay.inserted[w] if i else next(base) for i, w in zip(is_inserted.tolist(), where.tolist())]

    def _served_records(self, entity: str, positions: np.ndarray) -> List[Dict[str, Any]]:
        """Records at served positions, reshuffled after a restart, as last updated."""
        records = self.dataset.records_at(entity, positions)
        if self._reshuffle is not None:
            self._reshuffle_records(entity, records)
        updated = self._overlays[entity].updated
        if updated:
            records = [updated.get(p, r) for p, r in zip(positions.tolist(), records)]
        return records

    def _reshuffle_records(self, entity: str, records: List[Dict[str, Any]]) -> None:
        id_field = self._id_field(entity)
        ids = [r.get(id_field) for r in records]
        present = [k for k, i in enumerate(ids) if isinstance(i, int)]
        mapped = self._reshuffle(_ID_CODE[entity], [ids[k] for k in present]).tolist()
        for k, i in zip(present, mapped):
            records[k][id_field] = i
        if entity == LISTEN_HISTORY:
            field = self._name(entity, "items")
            lists = [r.get(field) for r in records]
            flat = [t for items in lists if isinstance(items, list) for t in items]
            tracks = iter(self._reshuffle(_ID_CODE[TRACKS], flat).tolist())
            for record, items in zip(records, lists):
                if isinstance(items, list):  # a new list: copies of a record share the old one
                    record[field] = [next(tracks) for _ in items]

    def _ids_at(self, entity: str, positions: np.ndarray) -> List[Optional[int]]:
        overlay = self._overlays[entity]
        is_inserted, where = overlay.locate(positions)
        served = self.dataset.ids_at(entity, where[~is_inserted]) if (~is_inserted).any() else []
        if self._reshuffle is not None:
            present = [k for k, i in enumerate(served) if i is not None]
            mapped = self._reshuffle(_ID_CODE[entity], [served[k] for k in present]).tolist()
            for k, i in zip(present, mapped):
                served[k] = i
        base = iter(served)
        id_field = self._id_field(entity)
        return [
            overlay.inserted[w].get(id_field) if i else next(base) for i, w in zip(is_inserted.tolist(), where.tolist())
        ]

    def _restart(self) -> None:
        self.restart += 1
        self._overlays = {entity: _Overlay(self.dataset.count(entity)) for entity in ENTITIES}
        spaces = {code: self.dataset.id_space(entity) for entity, code in ((USERS, 1), (TRACKS, 2))}
        self._reshuffle = _Reshuffle(self._seed, self.restart, spaces)
        self.restarts.append({"after_request": self.requests, "restart": self.restart})

    def _burst(self) -> None:
        number = len(self.bursts) + 1
        s = self.settings
        endpoints = {}
        for entity in ENTITIES:
            if entity not in s.mutation_endpoints:
                continue
            rng = np.random.default_rng([self._seed, number, ENTITY_CODES[entity]])
            overlay = self._overlays[entity]
            deleted = self._sample(rng, overlay.count(), s.mutation_deletes)
            deleted_ids = self._ids_at(entity, deleted)
            overlay.delete(deleted)
            updated = self._sample(rng, overlay.count(), s.mutation_updates)
            updated_ids = self._ids_at(entity, updated)
            self._update(entity, updated, rng, number)
            endpoints[entity] = {
                "inserted": self._insert(entity, s.mutation_inserts, rng),
                "deleted": deleted_ids,
                "updated": updated_ids,
                "count": overlay.count(),
            }
        self.bursts.append(
            {"burst": number, "after_request": self.requests, "restart": self.restart, "endpoints": endpoints}
        )

    @staticmethod
    def _sample(rng: np.random.Generator, count: int, wanted: int) -> np.ndarray:
        """Distinct live positions, sorted."""
        size = min(wanted, count)
        if size == 0:
            return np.zeros(0, dtype=np.int64)
        return np.sort(rng.choice(count, size=size, replace=False)) + 1

    def _update(self, entity: str, positions: np.ndarray, rng: np.random.Generator, burst: int) -> None:
        overlay = self._overlays[entity]
        is_inserted, where = overlay.locate(positions)
        for record, inserted, w in zip(self._records_at(entity, positions), is_inserted.tolist(), where.tolist()):
            record = dict(record)
            stamp = self._name(entity, "updated_at")
            record[stamp] = _later(record.get(stamp), self.dataset.as_of, int(rng.integers(1, 3601)))
            if entity == USERS:
                field = self._name(entity, "email")
                record[field] = _new_email(record.get(field), record.get(self._id_field(entity)), burst)
            elif entity == TRACKS:
                field = self._name(entity, "album")
                album = record.get(field)
                while album == record.get(field):
                    album = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), size=2).tolist()).title()
                record[field] = album
            else:
                field = self._name(entity, "items")
                items = list(record.get(field) or [])
                track_count = self.dataset.count(TRACKS)
                if track_count:
                    track = self.dataset.ids_at(TRACKS, np.asarray([rng.integers(1, track_count + 1)]))[0]
                    if self._reshuffle is not None:
                        track = int(self._reshuffle(_ID_CODE[TRACKS], [track])[0])
                    items.append(track)
                record[field] = items
            if inserted:
                overlay.inserted[w] = record
            else:
                overlay.updated[w] = record

    def _insert(self, entity: str, wanted: int, rng: np.random.Generator) -> List[int]:
        """Insert `wanted` copies of random served records under new ids, created on the as-of day."""
        overlay = self._overlays[entity]
        if not overlay.served_count:
            return []
        ids = []
        for _ in range(wanted):
            donor = self._served_records(entity, np.asarray([rng.integers(1, overlay.served_count + 1)]))[0]
            record = {key: list(value) if isinstance(value, list) else value for key, value in donor.items()}
            self._inserted_ids[entity] += 1
            new_id = INSERTED_ID_BASE + self._inserted_ids[entity]
            record[self._id_field(entity)] = new_id
            created = dt.datetime.combine(self.dataset.as_of, dt.time()) + dt.timedelta(
                seconds=int(rng.integers(0, 86_400))
            )
            record[self._name(entity, "created_at")] = record[self._name(entity, "updated_at")] = created.isoformat()
            overlay.insert(int(rng.integers(1, overlay.count() + 2)), record)
            ids.append(new_id)
        return ids


def _later(timestamp: Any, as_of: dt.date, seconds: int) -> str:
    """`seconds` after `timestamp`, or after noon of the as-of day when it does not parse."""
    try:
        then = dt.datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        then = dt.datetime.combine(as_of, dt.time(12))
    return (then + dt.timedelta(seconds=seconds)).isoformat()


def _new_email(email: Any, record_id: Any, burst: int) -> str:
    """The address with a `+u<burst>` tag, which no earlier version of it had."""
    local, domain = f"user{record_id}", "example.com"
    if isinstance(email, str) and "@" in email:
        local, _, domain = email.rpartition("@")
    return f"{local.split('+')[0]}+u{burst}@{domain}"
