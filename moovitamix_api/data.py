"""What the emulator serves: a pure function of its settings, generated page by page.

Nothing per record is held in memory. Every value of a record is derived from a 64-bit
hash of (world, entity, id, field), vectorised with numpy over the records of one page,
so serving page 9,999 of 1,000,000 users costs what page 1 costs.

Vocabulary used by the docstrings below:

- a *base record* is one record of the snapshot, numbered by its *index* 1..N
  (`base_count(entity)`); in the realistic profile a user's or track's id is its index;
- the *served sequence* is what the pages show, positions 1..S (`count(entity)`): the base
  records in index order with, when `duplicate_rate` > 0, exact copies of earlier base
  records inserted at some positions (S - N of them);
- data faults (nulls, orphans, bad timestamps) are decided per base record, so a copy
  carries the same faults as its original; renamed and extra fields apply to every record.

`Dataset(settings)` answers what a server with those settings serves;
`expected_counts(settings)` gives the figures an ingestion test asserts against.
"""

import datetime as dt
import json
import math
from typing import Any, Dict, Iterator, List, Optional

import numpy as np

from moovitamix_api.settings import ENTITIES, EmulatorSettings

USERS, TRACKS, LISTEN_HISTORY = ENTITIES
ENTITY_CODES = {USERS: 1, TRACKS: 2, LISTEN_HISTORY: 3}

GENRES = (
    "Rock", "Pop", "Hip Hop", "Jazz", "Electronic", "Classical", "Country", "Blues", "R&B",
    "Reggae", "Folk", "Metal", "Punk", "Funk", "Indie", "Alternative", "Techno",
)  # fmt: skip
GENDERS = (
    "Male", "Female", "Non-binary", "Genderqueer", "Genderfluid", "Agender", "Bigender",
    "Gender questioning", "Gender nonconforming",
)  # fmt: skip
# Out of 100 realistic users; the upstream profile draws genders uniformly.
GENDER_WEIGHTS = (46, 46, 2, 1, 1, 1, 1, 1, 1)
# How many of every 40 consecutive track ids carry each genre (realistic profile): a
# genre's share of the catalogue and of users' preferences.
GENRE_SLOTS = (5, 5, 4, 2, 3, 2, 2, 1, 2, 1, 2, 2, 1, 1, 3, 2, 2)
SLOT_CYCLE = sum(GENRE_SLOTS)  # 40

FIRST_NAMES = (
    "James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David",
    "Elizabeth", "William", "Barbara", "Richard", "Susan", "Joseph", "Jessica", "Thomas",
    "Sarah", "Charles", "Karen", "Daniel", "Lisa", "Matthew", "Nancy", "Anthony", "Sandra",
    "Mark", "Ashley", "Steven", "Emily", "Paul", "Michelle", "Andrew", "Amanda", "Joshua",
    "Melissa", "Kevin", "Stephanie", "Brian", "Rebecca", "Camille", "Hugo", "Lea", "Lucas",
    "Chloe", "Louis", "Manon", "Nathan", "Ines", "Jules",
)  # fmt: skip
LAST_NAMES = (
    "Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez",
    "Martinez", "Hernandez", "Lopez", "Gonzalez", "Wilson", "Anderson", "Thomas", "Taylor",
    "Moore", "Jackson", "Martin", "Lee", "Perez", "Thompson", "White", "Harris", "Sanchez",
    "Clark", "Ramirez", "Lewis", "Robinson", "Walker", "Young", "Allen", "King", "Wright",
    "Scott", "Torres", "Nguyen", "Hill", "Flores", "Bernard", "Dubois", "Durand", "Leroy",
    "Moreau", "Laurent", "Simon", "Michel", "Lefebvre", "Fournier",
)  # fmt: skip
WORDS = (
    "light", "night", "river", "fire", "heart", "dream", "stone", "shadow", "summer", "rain",
    "golden", "silent", "wild", "electric", "broken", "blue", "midnight", "ocean", "velvet",
    "neon", "echo", "paper", "glass", "city", "road", "storm", "sugar", "honey", "ghost",
    "crystal", "moon", "sun", "wire", "garden", "winter", "thunder", "silver", "smoke",
    "mirror", "island", "desert", "highway", "forest", "candle", "satellite", "window",
    "harbor", "lonely", "crimson", "orbit", "machine", "season", "signal", "voice", "morning",
    "horizon", "lantern", "memory", "parade", "spiral", "whisper", "avenue", "canyon", "ember",
    "feather", "fever", "galaxy", "hollow", "jungle", "kingdom", "meadow", "north", "pulse",
    "quiet", "rebel", "saint", "tide", "tower", "valley", "wonder",
)  # fmt: skip
EMAIL_DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "music.example")
BAD_TIMESTAMPS = ("not-a-date", "2026-13-45T99:00:00", "2026-02-30T10:00:00", "yesterday")
ORPHAN_ID_BASE = 1_000_000_000  # no base record ever has an id this large
UPSTREAM_ID_SPACE = 100_000  # upstream ids are unique ints in 1..100000

_CHUNK = 100_000  # base records per vectorised step of `expected_counts`


# ---------------------------------------------------------------------------------------
# Hashing: splitmix64 over numpy uint64 arrays; every random value derives from it.
# ---------------------------------------------------------------------------------------


_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _as_u64(value: Any) -> np.ndarray:
    if isinstance(value, (int, np.integer)):
        return np.asarray(int(value) & 0xFFFFFFFFFFFFFFFF, dtype=np.uint64)
    return np.asarray(value, dtype=np.int64).astype(np.uint64)


def hash64(*keys: Any) -> np.ndarray:
    """splitmix64 chained over `keys` (ints or int arrays, broadcast together) -> uint64."""
    h = np.asarray(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for key in keys:
            h = (h ^ _as_u64(key)) + _GOLDEN
            h = (h ^ (h >> _S30)) * _M1
            h = (h ^ (h >> _S27)) * _M2
            h = h ^ (h >> _S31)
    return h


def unit(*keys: Any) -> np.ndarray:
    """A uniform float in [0, 1) per element, from `hash64(*keys)`."""
    return (hash64(*keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def below(n: Any, *keys: Any) -> np.ndarray:
    """A uniform int in [0, n) per element (n >= 1, int or array)."""
    return (hash64(*keys) % _as_u64(n)).astype(np.int64)


# Field codes: each random quantity of a record hashes a distinct code.
(
    F_CREATED_DAY, F_CREATED_SECOND, F_CREATED_MICRO, F_UPDATE_PHASE, F_UPDATED_SECOND,
    F_UPDATED_MICRO, F_FIRST, F_LAST, F_EMAIL_NUMBER, F_EMAIL_DOMAIN, F_GENDER, F_GENRE_1,
    F_GENRE_2, F_GENRE_3, F_PREFERENCES, F_ACTIVITY, F_ACTIVE_PHASE, F_NAME_1, F_NAME_2,
    F_ARTIST_FIRST, F_ARTIST_LAST, F_WRITER_FIRST, F_WRITER_LAST, F_DURATION, F_ALBUM_1,
    F_ALBUM_2, F_WORD, F_LISTEN_GENRE, F_LISTEN_PREFERRED, F_LISTEN_RANK, F_LISTEN_SHAPE,
    F_LISTEN_PICKS, F_FAULT, F_FAULT_FIELD, F_FAULT_VALUE, F_FAULT_ITEM, F_DUPLICATE_PHASE,
    F_DUPLICATE_SOURCE, F_ID_PERMUTATION, F_SCENE,
) = range(1, 41)  # fmt: skip

# Within a genre, listeners split into scenes of about this many tracks (see _Realistic).
TRACKS_PER_SCENE = 12
# Share of listens that go to a genre's hits (log-uniform by rank); the rest stay in a scene.
HIT_SHARE = 0.4


def _pick(options: tuple, indices: np.ndarray) -> List[Any]:
    return [options[i] for i in indices.tolist()]


def _weighted(weights: tuple, u: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(weights) / float(sum(weights))
    return np.minimum(np.searchsorted(cumulative, u, side="right"), len(weights) - 1)


# ---------------------------------------------------------------------------------------
# Timestamps: (day offset from an epoch date, second of day, microsecond) -> ISO 8601.
# ---------------------------------------------------------------------------------------


class _Clock:
    def __init__(self, epoch: dt.date):
        self.epoch = dt.datetime.combine(epoch, dt.time())

    def format(self, days: np.ndarray, seconds: np.ndarray, micros: np.ndarray) -> List[str]:
        epoch, delta = self.epoch, dt.timedelta
        return [
            (epoch + delta(days=d, seconds=s, microseconds=m)).isoformat()
            for d, s, m in zip(days.tolist(), seconds.tolist(), micros.tolist())
        ]


def _time_of_day(world: int, entity: int, ids: np.ndarray, day: np.ndarray, codes: tuple):
    """Second of day and microsecond (0 for about half of the values) of an event."""
    second = below(86_400, world, entity, ids, day, codes[0])
    micro = below(1_000_000, world, entity, ids, day, codes[1])
    micro = np.where(micro % 2 == 0, 0, micro)
    return second, micro


# ---------------------------------------------------------------------------------------
# The realistic profile: stable ids 1..N, daily growth, preferences, long-tailed popularity.
# ---------------------------------------------------------------------------------------


class _Realistic:
    """Base records of the realistic profile; ids equal indices and are stable across days.

    Time is counted in days from `start_date` (day 0). Records 1..`users`/`tracks` are
    created on a day in [-730, 0]; each later day adds `new_*_per_day` records with the next
    ids. A user or track is updated on the days d > created with
    d = phase (mod round(1/update_rate)): its `updated_at` moves to that day and its email
    (users) or album (tracks) changes. A history holds the user's first-day listens, then
    gains listens on each of the user's active days (d = phase (mod round(1/share)));
    every listen depends only on (user, position in history), so a later history starts
    with the earlier one. A listen picks one of the user's 1-3 preferred genres (85%) or
    any genre, then a track of that genre among those existing that day: half the time
    log-uniformly by rank, where rank is id order within the genre (the genre's oldest
    tracks are its hits) with probability HIT_SHARE, otherwise uniformly within the user's
    scene of that genre (one of in-genre tracks // TRACKS_PER_SCENE circles, ranks congruent
    modulo their number). An as-of before start_date serves start_date.
    """

    def __init__(self, settings: EmulatorSettings, as_of: dt.date):
        self.settings = settings
        self.world = int(hash64(settings.seed, 0x5EA1))
        self.days = max(0, (as_of - settings.start_date).days)
        self.clock = _Clock(settings.start_date)
        slot_genre = np.repeat(np.arange(len(GENRES)), GENRE_SLOTS)
        order = np.argsort(unit(self.world, np.arange(SLOT_CYCLE), 0x510))
        self.slot_genre = slot_genre[order]  # genre of track id i is slot_genre[(i-1) % 40]
        self.genre_slots = np.array(GENRE_SLOTS)
        # slot_rank[g, k]: the k-th slot holding genre g; below_slot[g, r]: slots < r of genre g
        self.slot_rank = np.zeros((len(GENRES), max(GENRE_SLOTS)), dtype=np.int64)
        self.below_slot = np.zeros((len(GENRES), SLOT_CYCLE + 1), dtype=np.int64)
        for genre in range(len(GENRES)):
            slots = np.flatnonzero(self.slot_genre == genre)
            self.slot_rank[genre, : len(slots)] = slots
            self.below_slot[genre, 1:] = np.cumsum(self.slot_genre == genre)

    # -- counts and cycles ---------------------------------------------------------------
    def base_count(self, entity: str) -> int:
        s = self.settings
        if entity == TRACKS:
            return s.track_count + s.new_tracks_per_day * self.days
        return s.user_count + s.new_users_per_day * self.days

    def id_space(self, entity: str) -> int:
        """Every base id of `entity` (users for listen_history) lies in 1..id_space."""
        return self.base_count(entity)

    def ids(self, entity: int, indices: np.ndarray) -> np.ndarray:
        return np.asarray(indices, dtype=np.int64)

    def user_ids(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(indices, dtype=np.int64)

    def _tracks_on(self, day: np.ndarray) -> np.ndarray:
        s = self.settings
        return s.track_count + s.new_tracks_per_day * np.maximum(day, 0)

    def _created_day(self, entity: int, ids: np.ndarray) -> np.ndarray:
        s = self.settings
        initial, per_day = (
            (s.user_count, s.new_users_per_day) if entity != 2 else (s.track_count, s.new_tracks_per_day)
        )
        before_start = -below(731, self.world, entity, ids, F_CREATED_DAY)
        later = (ids - initial - 1) // max(per_day, 1) + 1
        return np.where(ids <= initial, before_start, later)

    def _last_update_day(self, entity: int, ids: np.ndarray, created: np.ndarray) -> np.ndarray:
        """The last update day <= as-of, or -inf (as a very negative int) when none."""
        rate = self.settings.update_rate
        if rate <= 0:
            return np.full(ids.shape, np.iinfo(np.int64).min // 2)
        period = max(1, round(1 / rate))
        phase = below(period, self.world, entity, ids, F_UPDATE_PHASE)
        last = self.days - (self.days - phase) % period
        return np.where(last > created, last, np.iinfo(np.int64).min // 2)

    def _stamps(self, entity: int, ids: np.ndarray):
        """created_at, updated_at strings and the 'version' day that versioned fields use."""
        created = self._created_day(entity, ids)
        updated = self._last_update_day(entity, ids, created)
        was_updated = updated > created
        second, micro = _time_of_day(self.world, entity, ids, created, (F_CREATED_SECOND, F_CREATED_MICRO))
        created_at = self.clock.format(created, second, micro)
        version = np.where(was_updated, updated, created)
        u_second, u_micro = _time_of_day(self.world, entity, ids, version, (F_UPDATED_SECOND, F_UPDATED_MICRO))
        updated_at = self.clock.format(version, u_second, u_micro)
        updated_at = [u if w else c for u, c, w in zip(updated_at, created_at, was_updated.tolist())]
        return created_at, updated_at, version

    # -- users ---------------------------------------------------------------------------
    def _preferences(self, ids: np.ndarray):
        """Each user's 1-3 preferred genres (distinct, most preferred first), as an (n, 3) array."""
        w, e = self.world, 1
        slot_weights = GENRE_SLOTS
        first = _weighted(slot_weights, unit(w, e, ids, F_GENRE_1))
        second = _weighted(slot_weights, unit(w, e, ids, F_GENRE_2))
        second = np.where(second == first, (first + 1 + below(16, w, e, ids, F_GENRE_2, 1)) % 17, second)
        third = below(17, w, e, ids, F_GENRE_3)
        for _ in range(2):  # at most two clashes to step over
            third = np.where((third == first) | (third == second), (third + 1) % 17, third)
        count = 1 + below(3, w, e, ids, F_PREFERENCES)
        return np.stack([first, second, third], axis=1), count

    def users(self, ids: np.ndarray) -> List[Dict[str, Any]]:
        w, e = self.world, 1
        created_at, updated_at, version = self._stamps(e, ids)
        first = _pick(FIRST_NAMES, below(len(FIRST_NAMES), w, e, ids, F_FIRST))
        last = _pick(LAST_NAMES, below(len(LAST_NAMES), w, e, ids, F_LAST))
        number = below(100, w, e, ids, version, F_EMAIL_NUMBER).tolist()
        domain = _pick(EMAIL_DOMAINS, below(len(EMAIL_DOMAINS), w, e, ids, version, F_EMAIL_DOMAIN))
        gender = _pick(GENDERS, _weighted(GENDER_WEIGHTS, unit(w, e, ids, F_GENDER)))
        preferences, _ = self._preferences(ids)
        favorite = _pick(GENRES, preferences[:, 0])
        return [
            {
                "id": i,
                "first_name": f,
                "last_name": l,
                "email": f"{f}.{l}{n}@{d}".lower(),
                "gender": g,
                "favorite_genres": fav,
                "created_at": c,
                "updated_at": u,
            }
            for i, f, l, n, d, g, fav, c, u in zip(
                ids.tolist(), first, last, number, domain, gender, favorite, created_at, updated_at
            )
        ]

    # -- tracks --------------------------------------------------------------------------
    def tracks(self, ids: np.ndarray) -> List[Dict[str, Any]]:
        w, e = self.world, 2
        created_at, updated_at, version = self._stamps(e, ids)

        def words(*codes):
            return [
                " ".join(parts).title()
                for parts in zip(*(_pick(WORDS, below(len(WORDS), w, e, ids, *code)) for code in codes))
            ]

        def person(first_code, last_code):
            firsts = _pick(FIRST_NAMES, below(len(FIRST_NAMES), w, e, ids, first_code))
            lasts = _pick(LAST_NAMES, below(len(LAST_NAMES), w, e, ids, last_code))
            return [f"{f} {l}" for f, l in zip(firsts, lasts)]

        names = words((F_NAME_1,), (F_NAME_2,))
        albums = words((version, F_ALBUM_1), (version, F_ALBUM_2))
        seconds = (90 + 330 * unit(w, e, ids, F_DURATION) ** 2).astype(np.int64).tolist()
        genres = _pick(GENRES, self.slot_genre[(ids - 1) % SLOT_CYCLE])
        return [
            {
                "id": i,
                "name": n,
                "artist": a,
                "songwriters": s,
                "duration": f"{d // 60:02d}:{d % 60:02d}",
                "genres": g,
                "album": al,
                "created_at": c,
                "updated_at": u,
            }
            for i, n, a, s, d, g, al, c, u in zip(
                ids.tolist(), names, person(F_ARTIST_FIRST, F_ARTIST_LAST),
                person(F_WRITER_FIRST, F_WRITER_LAST), seconds, genres, albums, created_at, updated_at,
            )  # fmt: skip
        ]

    # -- listen histories ----------------------------------------------------------------
    def _history_shape(self, ids: np.ndarray) -> Dict[str, np.ndarray]:
        """Per user: creation day, first-day listens, active cycle, listens per active day, length.

        A user created before start_date holds its first-day listens on start_date."""
        s, w, e = self.settings, self.world, 3
        created = self._created_day(1, ids)
        # Activity ~ Exp(1), capped: most users listen a little, a few a lot.
        activity = np.minimum(-np.log1p(-unit(w, e, ids, F_ACTIVITY)), 8.0)
        initial = np.rint(s.mean_listens * activity).astype(np.int64)
        per_active_day = np.maximum(1, np.rint(s.listens_per_active_day * activity)).astype(np.int64)
        if s.listens_per_active_day <= 0 or s.daily_active_share <= 0:
            per_active_day = np.zeros_like(initial)
        period = max(1, round(1 / s.daily_active_share)) if s.daily_active_share > 0 else 1
        phase = below(period, w, e, ids, F_ACTIVE_PHASE)
        # Listens are appended from the day after the later of creation and start_date.
        since = np.maximum(created, 0)
        active_days = (self.days - phase) // period - (since - phase) // period
        active_days = np.where(per_active_day > 0, np.maximum(active_days, 0), 0)
        if s.track_count == 0:
            initial, per_active_day = np.zeros_like(initial), np.zeros_like(initial)
        last_active = self.days - (self.days - phase) % period
        return {
            "created": created,
            "since": since,
            "initial": initial,
            "period": np.full(ids.shape, period),
            "phase": phase,
            "per_active_day": per_active_day,
            "length": initial + per_active_day * active_days,
            "last_day": np.where(active_days > 0, last_active, created),
        }

    def history_lengths(self, ids: np.ndarray) -> np.ndarray:
        return self._history_shape(ids)["length"]

    def _listens(self, ids: np.ndarray, shape: Dict[str, np.ndarray]) -> np.ndarray:
        """Every listen of the users `ids`, concatenated in history order."""
        w, e = self.world, 3
        length = shape["length"]
        owner = np.repeat(np.arange(len(ids)), length)
        position = np.arange(owner.size) - np.repeat(np.cumsum(length) - length, length)
        if owner.size == 0:
            return np.zeros(0, dtype=np.int64)
        user = ids[owner]
        initial, per_day = shape["initial"][owner], np.maximum(shape["per_active_day"][owner], 1)
        since, period, phase = shape["since"][owner], shape["period"][owner], shape["phase"][owner]
        first_active = since + 1 + (phase - since - 1) % period
        day = np.where(position < initial, since, first_active + (position - initial) // per_day * period)
        tracks_then = self._tracks_on(day)
        # Genre: mostly one of the user's preferred genres, sometimes any genre.
        preferences, count = self._preferences(ids)
        weights = np.array([[1.0, 1.0], [0.65, 1.0], [0.55, 0.85]])[count - 1][owner]
        u = unit(w, e, user, position, F_LISTEN_PREFERRED)
        choice = (u > weights[:, 0]).astype(np.int64) + (u > weights[:, 1])
        preferred = preferences[owner, choice]
        explored = self.slot_genre[below(SLOT_CYCLE, w, e, user, position, F_LISTEN_GENRE)]
        genre = np.where(unit(w, e, user, position, F_LISTEN_GENRE, 1) < 0.85, preferred, explored)
        # Rank within the genre's tracks of that day: half log-uniform (Zipf-like), half uniform.
        in_genre = (tracks_then // SLOT_CYCLE) * self.genre_slots[genre] + self.below_slot[
            genre, tracks_then % SLOT_CYCLE
        ]
        u_rank = unit(w, e, user, position, F_LISTEN_RANK)
        zipf = np.floor(np.power(in_genre + 1.0, u_rank)) - 1
        # A genre's listeners split into scenes (ranks congruent mod the number of scenes);
        # a user belongs to one scene per genre and plays its tracks alike: the co-listening
        # that genre and popularity alone do not explain, and a recommender can learn.
        scenes = np.maximum(in_genre // TRACKS_PER_SCENE, 1)
        scene = (hash64(w, 1, user, genre, F_SCENE) % scenes.astype(np.uint64)).astype(np.int64)
        scene_size = np.maximum((in_genre - scene + scenes - 1) // scenes, 1)
        in_scene = scene + np.floor(u_rank * scene_size).astype(np.int64) * scenes
        rank = np.where(unit(w, e, user, position, F_LISTEN_SHAPE) < HIT_SHARE, zipf, in_scene).astype(np.int64)
        rank = np.clip(rank, 0, np.maximum(in_genre - 1, 0))
        slots = self.genre_slots[genre]
        track = (rank // slots) * SLOT_CYCLE + self.slot_rank[genre, rank % slots] + 1
        anywhere = (u_rank * tracks_then).astype(np.int64) + 1
        return np.where(in_genre > 0, track, anywhere)

    def listen_history(self, ids: np.ndarray) -> List[Dict[str, Any]]:
        shape = self._history_shape(ids)
        listens = self._listens(ids, shape).tolist()
        created_at, _, _ = self._stamps(1, ids)
        second, micro = _time_of_day(self.world, 3, ids, shape["last_day"], (F_UPDATED_SECOND, F_UPDATED_MICRO))
        last_listen_at = self.clock.format(shape["last_day"], second, micro)
        appended = (shape["last_day"] > shape["created"]).tolist()
        records, start = [], 0
        for i, n, c, u, a in zip(ids.tolist(), shape["length"].tolist(), created_at, last_listen_at, appended):
            records.append({"user_id": i, "items": listens[start : start + n], "created_at": c, "updated_at": u if a else c})
            start += n
        return records


# ---------------------------------------------------------------------------------------
# The upstream profile: the original's flat random data, a new world every as-of date.
# ---------------------------------------------------------------------------------------


class _Upstream:
    """Base records of the upstream profile.

    Ids are a keyed permutation of 1..max(100000, N) (unique, random-looking), names and
    genders uniform, `tracks.genres` a random word, `users.favorite_genres` a uniform genre;
    `created_at` and `updated_at` are drawn independently within the year before as-of
    (so `updated_at` precedes `created_at` half of the time), except in histories, where
    `updated_at` follows `created_at`. History i belongs to user i and holds exactly
    round(listens_per_user) distinct existing track ids (fewer if there are fewer tracks).
    The world key includes the as-of date: each day is a new random world, as when the
    original service restarts. Growth options do not apply.
    """

    def __init__(self, settings: EmulatorSettings, as_of: dt.date):
        self.settings = settings
        self.world = int(hash64(settings.seed, as_of.toordinal(), 0x0905))
        self.clock = _Clock(as_of)

    def base_count(self, entity: str) -> int:
        return self.settings.track_count if entity == TRACKS else self.settings.user_count

    def id_space(self, entity: str) -> int:
        return max(UPSTREAM_ID_SPACE, self.base_count(entity))

    def ids(self, entity: int, indices: np.ndarray) -> np.ndarray:
        """Index 1..N -> a unique id in 1..max(100000, N): a 4-round Feistel permutation
        of a power-of-four domain, walked until it lands within range."""
        space = self.id_space(TRACKS if entity == 2 else USERS)
        half_bits = max(1, math.ceil(math.log2(space) / 2))
        half_mask = (1 << half_bits) - 1
        value = indices.astype(np.int64) - 1
        pending = np.ones(value.shape, dtype=bool)
        while pending.any():
            x = value[pending]
            left, right = x >> half_bits, x & half_mask
            for round_number in range(4):
                mixed = (hash64(self.world, entity, F_ID_PERMUTATION, round_number, right) & np.uint64(half_mask)).astype(np.int64)
                left, right = right, left ^ mixed
            value[pending] = (left << half_bits) | right
            pending = value >= space
        return value + 1

    def _stamps(self, entity: int, ids: np.ndarray, ordered: bool):
        w = self.world
        created = -below(366, w, entity, ids, F_CREATED_DAY)
        second, micro = _time_of_day(w, entity, ids, created, (F_CREATED_SECOND, F_CREATED_MICRO))
        if ordered:  # updated_at >= created_at: a lag of up to 30 days
            lag = (unit(w, entity, ids, F_UPDATE_PHASE) * 30 * 86_400).astype(np.int64)
            total = created * 86_400 + second + lag
            updated, u_second = total // 86_400, total % 86_400
            u_micro = np.where(lag == 0, micro, 0)
        else:
            updated = -below(366, w, entity, ids, F_UPDATE_PHASE)
            u_second, u_micro = _time_of_day(w, entity, ids, updated, (F_UPDATED_SECOND, F_UPDATED_MICRO))
        return self.clock.format(created, second, micro), self.clock.format(updated, u_second, u_micro)

    def users(self, indices: np.ndarray) -> List[Dict[str, Any]]:
        w, e = self.world, 1
        ids = self.ids(e, indices)
        created_at, updated_at = self._stamps(e, ids, ordered=False)
        first = _pick(FIRST_NAMES, below(len(FIRST_NAMES), w, e, ids, F_FIRST))
        last = _pick(LAST_NAMES, below(len(LAST_NAMES), w, e, ids, F_LAST))
        domain = _pick(EMAIL_DOMAINS, below(len(EMAIL_DOMAINS), w, e, ids, F_EMAIL_DOMAIN))
        gender = _pick(GENDERS, below(len(GENDERS), w, e, ids, F_GENDER))
        genre = _pick(GENRES, below(len(GENRES), w, e, ids, F_GENRE_1))
        return [
            {
                "id": i, "first_name": f, "last_name": l, "email": f"{f}.{l}@{d}".lower(),
                "gender": g, "favorite_genres": fav, "created_at": c, "updated_at": u,
            }  # fmt: skip
            for i, f, l, d, g, fav, c, u in zip(ids.tolist(), first, last, domain, gender, genre, created_at, updated_at)
        ]

    def tracks(self, indices: np.ndarray) -> List[Dict[str, Any]]:
        w, e = self.world, 2
        ids = self.ids(e, indices)
        created_at, updated_at = self._stamps(e, ids, ordered=False)

        def word(code):
            return _pick(WORDS, below(len(WORDS), w, e, ids, code))

        def person(first_code, last_code):
            firsts = _pick(FIRST_NAMES, below(len(FIRST_NAMES), w, e, ids, first_code))
            lasts = _pick(LAST_NAMES, below(len(LAST_NAMES), w, e, ids, last_code))
            return [f"{f} {l}" for f, l in zip(firsts, lasts)]

        seconds = (60 + below(540, w, e, ids, F_DURATION)).tolist()
        return [
            {
                "id": i, "name": f"{n1} {n2}".capitalize(), "artist": a, "songwriters": s,
                "duration": f"{d // 60:02d}:{d % 60:02d}", "genres": g, "album": f"{a1} {a2}".title(),
                "created_at": c, "updated_at": u,
            }  # fmt: skip
            for i, n1, n2, a, s, d, g, a1, a2, c, u in zip(
                ids.tolist(), word(F_NAME_1), word(F_NAME_2), person(F_ARTIST_FIRST, F_ARTIST_LAST),
                person(F_WRITER_FIRST, F_WRITER_LAST), seconds, word(F_WORD), word(F_ALBUM_1),
                word(F_ALBUM_2), created_at, updated_at,
            )  # fmt: skip
        ]

    def history_lengths(self, indices: np.ndarray) -> np.ndarray:
        tracks = self.base_count(TRACKS)
        return np.full(indices.shape, min(max(0, round(self.settings.mean_listens)), tracks), dtype=np.int64)

    def listen_history(self, indices: np.ndarray) -> List[Dict[str, Any]]:
        user_ids = self.ids(1, indices)
        created_at, updated_at = self._stamps(3, user_ids, ordered=True)
        tracks = self.base_count(TRACKS)
        length = int(self.history_lengths(indices[:1])[0]) if len(indices) else 0
        picks = [
            np.random.default_rng([self.world, 3, F_LISTEN_PICKS, index]).choice(tracks, size=length, replace=False)
            for index in indices.tolist()
        ]
        items = self.ids(2, np.concatenate(picks or [np.zeros(0, dtype=np.int64)]) + 1).tolist()
        return [
            {"user_id": user_id, "items": items[n * length : (n + 1) * length], "created_at": c, "updated_at": u}
            for n, (user_id, c, u) in enumerate(zip(user_ids.tolist(), created_at, updated_at))
        ]

    def user_ids(self, indices: np.ndarray) -> np.ndarray:
        return self.ids(1, indices)


# ---------------------------------------------------------------------------------------
# Data faults and the served sequence.
# ---------------------------------------------------------------------------------------

FAULT_NONE, FAULT_NULL, FAULT_ORPHAN, FAULT_BAD_TIMESTAMP = 0, 1, 2, 3


class _DataFaults:
    """Per-entity fault decisions, each a pure function of (fault seed, entity, index or position).

    Faults of a base record: one uniform u per record; u < null_rate -> a null, then the
    next `orphan_rate` of the unit interval -> an orphan (listen_history only; nothing for
    users and tracks), then the next `bad_timestamp_rate` -> a bad timestamp.

    Duplicates: served position s is a copy iff floor(s*r + phase) > floor((s-1)*r + phase)
    with r = duplicate_rate and phase in [0, 1-r) (so position 1 never is, and no two copies
    are adjacent); a copy repeats one of the 200 base records shown just before it.
    """

    def __init__(self, settings: EmulatorSettings, entity: str, base_count: int):
        self.settings = settings
        self.entity = entity
        self.code = ENTITY_CODES[entity]
        self.seed = int(hash64(settings.effective_fault_seed, 0xFA17))
        self.base_count = base_count
        r = settings.duplicate_rate
        self.rate = r
        self.phase = float(unit(self.seed, self.code, F_DUPLICATE_PHASE)) * (1.0 - r)
        self.served_count = self._served_count(base_count)

    # -- duplicates ------------------------------------------------------------------------
    def copies_up_to(self, positions: np.ndarray) -> np.ndarray:
        return np.floor(positions * self.rate + self.phase).astype(np.int64)

    def _served_count(self, base_count: int) -> int:
        if base_count == 0 or self.rate == 0:
            return base_count
        # The position of the last base record: the first s showing base_count originals.
        s = int(base_count / (1 - self.rate))
        while self._originals_up_to(s) < base_count:
            s += 1
        while s > 1 and self._originals_up_to(s - 1) >= base_count:
            s -= 1
        return s

    def _originals_up_to(self, position: int) -> int:
        return position - int(self.copies_up_to(np.asarray(position)))

    def base_indices(self, positions: np.ndarray) -> np.ndarray:
        """Served positions (1-based) -> the index of the base record each one shows."""
        positions = np.asarray(positions, dtype=np.int64)
        copies = self.copies_up_to(positions)
        shown = positions - copies  # originals shown up to and including this position
        if self.rate == 0:
            return shown
        is_copy = copies > self.copies_up_to(positions - 1)
        back = below(np.minimum(shown, 200).clip(min=1), self.seed, self.code, positions, F_DUPLICATE_SOURCE)
        return np.where(is_copy, shown - back, shown)

    # -- per-record faults -------------------------------------------------------------------
    def kinds(self, indices: np.ndarray) -> np.ndarray:
        s = self.settings
        u = unit(self.seed, self.code, indices, F_FAULT)
        kind = np.full(indices.shape, FAULT_NONE)
        orphan_rate = s.orphan_rate if self.entity == LISTEN_HISTORY else 0.0
        bands = np.cumsum([s.null_rate, s.orphan_rate, s.bad_timestamp_rate])
        kind = np.where(u < bands[2], FAULT_BAD_TIMESTAMP, kind)
        kind = np.where(u < bands[1], FAULT_ORPHAN if orphan_rate else FAULT_NONE, kind)
        kind = np.where(u < bands[0], FAULT_NULL, kind)
        return kind

    def field_choice(self, indices: np.ndarray) -> np.ndarray:
        """0 or 1: which field a fault hits (user_id vs items, created_at vs updated_at)."""
        return below(2, self.seed, self.code, indices, F_FAULT_FIELD)

    def orphan_ids(self, indices: np.ndarray) -> np.ndarray:
        return ORPHAN_ID_BASE + below(1_000_000, self.seed, self.code, indices, F_FAULT_VALUE)

    def history_user_ids(self, indices: np.ndarray, user_ids: np.ndarray, lengths: np.ndarray, kinds: np.ndarray):
        """The user_id each history of `indices` shows once `apply` ran, and where it is null."""
        choice = self.field_choice(indices)
        null_user = (kinds == FAULT_NULL) & (choice == 0)
        orphan_user = (kinds == FAULT_ORPHAN) & ((choice == 0) | (lengths == 0))
        return np.where(orphan_user, self.orphan_ids(indices), user_ids), null_user

    def apply(self, indices: np.ndarray, records: List[Dict[str, Any]]) -> None:
        """Apply the faults of base records `indices` to their freshly generated `records`."""
        kinds = self.kinds(indices)
        if not kinds.any():
            return
        choice = self.field_choice(indices).tolist()
        orphan = self.orphan_ids(indices).tolist()
        spot = hash64(self.seed, self.code, indices, F_FAULT_ITEM)
        bad = _pick(BAD_TIMESTAMPS, (spot % np.uint64(len(BAD_TIMESTAMPS))).astype(np.int64))
        for record, kind, c, o, sp, b in zip(records, kinds.tolist(), choice, orphan, spot.tolist(), bad):
            if kind == FAULT_NULL:
                if self.entity == USERS:
                    record["email"] = None
                elif self.entity == TRACKS:
                    record["name"] = None
                else:
                    record["user_id" if c == 0 else "items"] = None
            elif kind == FAULT_ORPHAN:
                if c == 0 or not record["items"]:
                    record["user_id"] = o
                else:
                    record["items"][sp % len(record["items"])] = o
            elif kind == FAULT_BAD_TIMESTAMP:
                record["created_at" if c == 0 else "updated_at"] = b


# ---------------------------------------------------------------------------------------
# The dataset: what a server with given settings serves.
# ---------------------------------------------------------------------------------------


class Dataset:
    """What a server with `settings` serves, on `as_of` (default: settings.effective_as_of()).

    count(entity)            -> S, the number of served records (`total` of every page)
    base_count(entity)       -> N, the number of distinct base records
    record(entity, position) -> the served record at 1-based position (1..S)
    records(entity, first, last) -> served records at positions first..last inclusive
    records_at(entity, positions) -> served records at any positions (1..S), in that order
    ids_at(entity, positions) -> the id (listen_history: user_id, or None) each position shows
    page(entity, page, size) -> the exact JSON body of GET /{entity}?page=&size=
    iter_records(entity)     -> every served record in order (what paging through yields)
    """

    def __init__(self, settings: EmulatorSettings, as_of: Optional[dt.date] = None):
        self.settings = settings
        self.as_of = as_of or settings.effective_as_of()
        profile = _Realistic if settings.profile == "realistic" else _Upstream
        self.generator = profile(settings, self.as_of)
        self.faults = {e: _DataFaults(settings, e, self.generator.base_count(e)) for e in ENTITIES}
        self._renames = settings.renames()
        self._extras = settings.extras()

    def base_count(self, entity: str) -> int:
        return self.faults[_check(entity)].base_count

    def count(self, entity: str) -> int:
        return self.faults[_check(entity)].served_count

    def id_space(self, entity: str) -> int:
        """Every base id of `entity` (users' for listen_history) lies in 1..id_space."""
        return self.generator.id_space(USERS if entity == LISTEN_HISTORY else _check(entity))

    def records(self, entity: str, first: int, last: int) -> List[Dict[str, Any]]:
        last = min(last, self.count(entity))
        if last < first:
            return []
        return self.records_at(entity, np.arange(max(first, 1), last + 1))

    def records_at(self, entity: str, positions: np.ndarray) -> List[Dict[str, Any]]:
        faults = self.faults[_check(entity)]
        indices = faults.base_indices(np.asarray(positions, dtype=np.int64))
        unique, where = np.unique(indices, return_inverse=True)
        base = getattr(self.generator, entity)(unique)
        faults.apply(unique, base)
        base = [self._reshape(entity, record) for record in base]
        served, shown = [], set()
        for i in where.tolist():  # a copy is a new dict, equal to the original
            served.append(dict(base[i]) if i in shown else base[i])
            shown.add(i)
        return served

    def ids_at(self, entity: str, positions: np.ndarray) -> List[Optional[int]]:
        """What `records_at(...)[k]["id"]` (listen_history: `["user_id"]`) would be, without
        generating the records."""
        faults = self.faults[_check(entity)]
        indices = faults.base_indices(np.asarray(positions, dtype=np.int64))
        if entity != LISTEN_HISTORY:
            return self.generator.ids(ENTITY_CODES[entity], indices).tolist()
        user_ids, null = faults.history_user_ids(
            indices, self.generator.user_ids(indices), self.generator.history_lengths(indices), faults.kinds(indices)
        )
        return [None if n else i for i, n in zip(user_ids.tolist(), null.tolist())]

    def record(self, entity: str, position: int) -> Dict[str, Any]:
        records = self.records(entity, position, position)
        if not records:
            raise IndexError(f"{entity} has no position {position} (1..{self.count(entity)})")
        return records[0]

    def page(self, entity: str, page: int = 1, size: int = 100) -> Dict[str, Any]:
        total = self.count(entity)
        first = (page - 1) * size + 1
        items = self.records(entity, first, first + size - 1)
        return {"items": items, "total": total, "page": page, "size": size, "pages": math.ceil(total / size)}

    def page_json(self, entity: str, page: int = 1, size: int = 100) -> bytes:
        """The page body exactly as the server sends it."""
        return encode_page(self.page(entity, page, size))

    def iter_records(self, entity: str, chunk: int = 1000) -> Iterator[Dict[str, Any]]:
        for first in range(1, self.count(entity) + 1, chunk):
            yield from self.records(entity, first, first + chunk - 1)

    def _reshape(self, entity: str, record: Dict[str, Any]) -> Dict[str, Any]:
        renames = self._renames.get(entity)
        if renames:
            record = {renames.get(key, key): value for key, value in record.items()}
        extras = self._extras.get(entity)
        if extras:
            record.update(extras)
        return record


def encode_page(body: Dict[str, Any]) -> bytes:
    """A page body as the server sends it: compact JSON, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _check(entity: str) -> str:
    if entity not in ENTITIES:
        raise ValueError(f"unknown entity {entity!r}; expected one of {ENTITIES}")
    return entity


def expected_counts(settings: EmulatorSettings, as_of: Optional[dt.date] = None) -> Dict[str, Dict[str, int]]:
    """The figures an ingestion of a full pull must reproduce, per entity.

    Keys of each entity's dict:
      served          S: records over all pages (the `total` of every page)
      base_records    N: distinct base records (S - duplicates)
      duplicates      S - N: served copies of a record already served earlier
      distinct_ids    distinct non-null ids (`id`; `user_id` for listen_history) among the
                      served records; N for users and tracks
      nulls           base records with a required field set to null (users.email,
                      tracks.name, listen_history.user_id or .items)
      orphans         base records referencing a user or track id that does not exist
                      (listen_history only; 0 otherwise)
      bad_timestamps  base records with an unparseable created_at or updated_at
    and for listen_history only:
      listens         sum of len(items) over base records whose items are not null
                      (each history once, as after de-duplication by user_id)
      listens_served  the same sum over every served record (copies counted again)
    Faults are exclusive per record, so nulls + orphans + bad_timestamps <= N.
    Takes O(N) time and O(N) memory (vectorised; about a second per million records).
    """
    dataset = Dataset(settings, as_of)
    counts: Dict[str, Dict[str, int]] = {}
    for entity in ENTITIES:
        faults = dataset.faults[entity]
        n, s = faults.base_count, faults.served_count
        kinds = np.concatenate(
            [faults.kinds(np.arange(a, min(a + _CHUNK, n + 1))) for a in range(1, n + 1, _CHUNK)]
            or [np.zeros(0, dtype=np.int64)]
        )
        entry = {
            "served": s,
            "base_records": n,
            "duplicates": s - n,
            "distinct_ids": n,
            "nulls": int((kinds == FAULT_NULL).sum()),
            "orphans": int((kinds == FAULT_ORPHAN).sum()),
            "bad_timestamps": int((kinds == FAULT_BAD_TIMESTAMP).sum()),
        }
        if entity == LISTEN_HISTORY:
            entry.update(_listen_counts(dataset, faults, kinds))
        counts[entity] = entry
    return counts


def _listen_counts(dataset: Dataset, faults: _DataFaults, kinds: np.ndarray) -> Dict[str, int]:
    n = faults.base_count
    indices = np.arange(1, n + 1)
    choice = faults.field_choice(indices)
    lengths = np.concatenate(
        [dataset.generator.history_lengths(indices[a : a + _CHUNK]) for a in range(0, n, _CHUNK)]
        or [np.zeros(0, dtype=np.int64)]
    )
    null_items = (kinds == FAULT_NULL) & (choice == 1)
    user_ids, null_user = faults.history_user_ids(indices, dataset.generator.user_ids(indices), lengths, kinds)
    counted = np.where(null_items, 0, lengths)
    served = np.concatenate(
        [faults.base_indices(np.arange(a, min(a + _CHUNK, faults.served_count + 1))) for a in range(1, faults.served_count + 1, _CHUNK)]
        or [np.zeros(0, dtype=np.int64)]
    )
    return {
        "distinct_ids": int(np.unique(user_ids[~null_user]).size),
        "listens": int(counted.sum()),
        "listens_served": int(counted[served - 1].sum()) if served.size else 0,
    }
