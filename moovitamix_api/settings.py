"""The emulator's settings: one frozen dataclass, the single source of every option.

Each field carries its help text; the CLI (`moovitamix-api --help`) and the admin route
(`POST /_admin/state`) are both derived from these fields, so an option is written once.
"""

import dataclasses
import datetime as dt
import json
from typing import Any, Mapping, Optional, Tuple

PROFILES = ("realistic", "upstream")
ENTITIES = ("users", "tracks", "listen_history")

# Scale of each profile when --users / --tracks / --listens-per-user are not given.
PROFILE_DEFAULTS = {
    "realistic": {"users": 1000, "tracks": 1000, "listens_per_user": 20.0},
    "upstream": {"users": 1000, "tracks": 1000, "listens_per_user": 5.0},
}


def _option(default: Any, help: str, **metadata: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True)
class EmulatorSettings:
    """Everything the served data and faults are a pure function of."""

    # --- the data -------------------------------------------------------------------
    seed: int = _option(42, "seed of the generated world")
    profile: str = _option(
        "realistic",
        "realistic: preferences, long-tailed popularity, stable ids, daily growth; "
        "upstream: the original's flat random data, a new world every day",
        choices=PROFILES,
    )
    users: Optional[int] = _option(None, "users on --start-date (default 1000)")
    tracks: Optional[int] = _option(None, "tracks on --start-date (default 1000)")
    listens_per_user: Optional[float] = _option(
        None,
        "mean listens per history on a user's first day (default 20; upstream: exactly 5 distinct)",
    )
    start_date: dt.date = _option(
        dt.date(2026, 1, 1), "the day --users and --tracks are counted on"
    )
    as_of: Optional[dt.date] = _option(
        None, "snapshot date served (default: today's UTC date, following the clock)"
    )
    # --- daily growth (realistic profile) ---------------------------------------------
    new_users_per_day: int = _option(5, "users added each day after --start-date")
    new_tracks_per_day: int = _option(2, "tracks added each day after --start-date")
    update_rate: float = _option(
        0.02,
        "share of users and tracks updated each day (each record on its own cycle of "
        "round(1/rate) days; its email or album changes)",
    )
    daily_active_share: float = _option(
        0.2, "share of users who listen on a given day (each on a cycle of round(1/share) days)"
    )
    listens_per_active_day: float = _option(
        2.0, "mean listens appended to an active user's history on an active day"
    )
    # --- transport faults ---------------------------------------------------------------
    fault_seed: Optional[int] = _option(None, "seed of every fault decision (default: --seed)")
    latency_ms: float = _option(0.0, "mean added latency per data request, in ms")
    error_rate: float = _option(0.0, "share of data requests answered 500/502/503")
    rate_limit_rate: float = _option(0.0, "share of data requests answered 429")
    retry_after: int = _option(1, "Retry-After seconds sent with a 429")
    drop_rate: float = _option(0.0, "share of data requests whose connection is closed unanswered")
    bad_json_rate: float = _option(0.0, "share of data requests answered 200 with a broken body")
    # --- data faults ----------------------------------------------------------------------
    duplicate_rate: float = _option(
        0.0, "share of served positions that repeat an earlier record (same id)"
    )
    null_rate: float = _option(0.0, "share of records with a required field set to null")
    orphan_rate: float = _option(
        0.0, "share of listen histories with a user_id or a track id that does not exist"
    )
    bad_timestamp_rate: float = _option(
        0.0, "share of records with an unparseable created_at or updated_at"
    )
    rename_fields: Tuple[str, ...] = _option(
        (), "ENTITY.OLD=NEW: serve field OLD under the name NEW (repeatable)", cli="rename-field"
    )
    extra_fields: Tuple[str, ...] = _option(
        (),
        "ENTITY.NAME=VALUE: add field NAME (VALUE parsed as JSON, else a string) (repeatable)",
        cli="extra-field",
    )
    # --- live modes: the upstream moves while it is paged through -------------------------
    # Counted in data requests answered 200 since the settings last changed; every draw
    # comes from --fault-seed, so the live state is a pure function of (settings, count).
    mutate_after_requests: int = _option(
        0, "apply one burst of mutations after this many data requests (0: off)"
    )
    mutate_every_requests: int = _option(
        0, "apply a burst of mutations after every this many data requests (0: off)"
    )
    mutation_inserts: int = _option(
        0, "records inserted per burst and endpoint (new ids, at random positions)"
    )
    mutation_deletes: int = _option(0, "records deleted per burst and endpoint (later positions shift down)")
    mutation_updates: int = _option(
        0,
        "records updated per burst and endpoint (updated_at moves forward; users.email or "
        "tracks.album changes, or a listen is appended)",
    )
    mutation_endpoints: Tuple[str, ...] = _option(
        ENTITIES, "ENTITY: an endpoint the bursts mutate (repeatable)", cli="mutation-endpoint"
    )
    restart_after_requests: int = _option(
        0,
        "restart after this many data requests: every endpoint regenerates with reshuffled "
        "ids (same counts), mutations are lost (0: off)",
    )
    empty_endpoints: Tuple[str, ...] = _option(
        (), "ENTITY: answer 200 with no items, total 0, pages 0 (repeatable)", cli="empty-endpoint"
    )
    failing_endpoints: Tuple[str, ...] = _option(
        (), "ENTITY: answer 503 to every request of this endpoint (repeatable)", cli="failing-endpoint"
    )
    short_pages: Tuple[str, ...] = _option(
        (),
        "ENTITY:PAGE: serve that page, unless it is the last, without its last item; "
        "total and pages unchanged (repeatable)",
        cli="short-page",
        metavar="ENTITY:PAGE",
    )
    total_drift: int = _option(
        0, "added to the total (and pages) reported by every page after the first; data unchanged"
    )

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {self.profile!r}")
        for name in ("users", "tracks"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.new_users_per_day < 0 or self.new_tracks_per_day < 0:
            raise ValueError("growth per day must be >= 0")
        for name in (
            "update_rate",
            "daily_active_share",
            "error_rate",
            "rate_limit_rate",
            "drop_rate",
            "bad_json_rate",
            "null_rate",
            "orphan_rate",
            "bad_timestamp_rate",
        ):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if not 0.0 <= self.duplicate_rate <= 0.5:
            raise ValueError("duplicate_rate must be within 0..0.5")
        if self.null_rate + self.orphan_rate + self.bad_timestamp_rate > 1.0:
            raise ValueError("null_rate + orphan_rate + bad_timestamp_rate must be <= 1")
        if self.error_rate + self.rate_limit_rate + self.drop_rate + self.bad_json_rate > 1.0:
            raise ValueError("error_rate + rate_limit_rate + drop_rate + bad_json_rate must be <= 1")
        if self.retry_after < 0 or self.latency_ms < 0:
            raise ValueError("retry_after and latency_ms must be >= 0")
        for name in (
            "mutate_after_requests",
            "mutate_every_requests",
            "mutation_inserts",
            "mutation_deletes",
            "mutation_updates",
            "restart_after_requests",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("mutation_endpoints", "empty_endpoints", "failing_endpoints"):
            for entity in getattr(self, name):
                if entity not in ENTITIES:
                    raise ValueError(f"{name}: expected entities in {ENTITIES}, got {entity!r}")
        for spec in self.short_pages:
            parse_page_spec(spec)
        for spec in self.rename_fields:
            parse_field_spec(spec)
        for spec in self.extra_fields:
            parse_field_spec(spec)

    # --- resolved values ------------------------------------------------------------------
    @property
    def user_count(self) -> int:
        return self._scale("users")

    @property
    def track_count(self) -> int:
        return self._scale("tracks")

    @property
    def mean_listens(self) -> float:
        return float(self._scale("listens_per_user"))

    @property
    def effective_fault_seed(self) -> int:
        return self.seed if self.fault_seed is None else self.fault_seed

    def _scale(self, name: str) -> Any:
        value = getattr(self, name)
        return PROFILE_DEFAULTS[self.profile][name] if value is None else value

    def effective_as_of(self, today: Optional[dt.date] = None) -> dt.date:
        """The served snapshot date: `as_of`, or today's UTC date when it is None."""
        if self.as_of is not None:
            return self.as_of
        return today or dt.datetime.now(dt.timezone.utc).date()

    def renames(self) -> Mapping[str, Mapping[str, str]]:
        """{entity: {old: new}} from `rename_fields`."""
        result: dict = {}
        for spec in self.rename_fields:
            entity, old, new = parse_field_spec(spec)
            result.setdefault(entity, {})[old] = new
        return result

    def extras(self) -> Mapping[str, Mapping[str, Any]]:
        """{entity: {name: value}} from `extra_fields`; a value is parsed as JSON if it can be."""
        result: dict = {}
        for spec in self.extra_fields:
            entity, name, raw = parse_field_spec(spec)
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
            result.setdefault(entity, {})[name] = value
        return result

    def short_page_numbers(self) -> Mapping[str, frozenset]:
        """{entity: pages served short} from `short_pages`."""
        result: dict = {}
        for spec in self.short_pages:
            entity, page = parse_page_spec(spec)
            result.setdefault(entity, set()).add(page)
        return {entity: frozenset(pages) for entity, pages in result.items()}

    # --- conversions ------------------------------------------------------------------------
    def replace(self, **changes: Any) -> "EmulatorSettings":
        """A copy with `changes` applied; values may be strings (as from a CLI or JSON)."""
        return dataclasses.replace(self, **coerce_settings(changes))

    def to_json(self) -> dict:
        """The settings as plain JSON values (dates as ISO strings, tuples as lists)."""
        result = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, dt.date):
                value = value.isoformat()
            elif isinstance(value, tuple):
                value = list(value)
            result[field.name] = value
        return result


def parse_field_spec(spec: str) -> Tuple[str, str, str]:
    """'ENTITY.NAME=VALUE' -> (entity, name, value), with the entity checked."""
    target, sep, value = spec.partition("=")
    entity, dot, name = target.partition(".")
    if not sep or not dot or not name or entity not in ENTITIES:
        raise ValueError(f"expected ENTITY.NAME=VALUE with ENTITY in {ENTITIES}, got {spec!r}")
    return entity, name, value


def parse_page_spec(spec: str) -> Tuple[str, int]:
    """'ENTITY:PAGE' -> (entity, page), with the entity checked and page >= 1."""
    entity, sep, page = spec.partition(":")
    if not sep or entity not in ENTITIES or not page.isdigit() or int(page) < 1:
        raise ValueError(f"expected ENTITY:PAGE with ENTITY in {ENTITIES} and PAGE >= 1, got {spec!r}")
    return entity, int(page)


def coerce_settings(values: Mapping[str, Any]) -> dict:
    """Type each value of a partial settings mapping after its field; unknown names raise."""
    fields = {field.name: field for field in dataclasses.fields(EmulatorSettings)}
    result = {}
    for name, value in values.items():
        if name not in fields:
            raise ValueError(f"unknown setting {name!r}")
        result[name] = _coerce(fields[name], value)
    return result


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    if value is None:
        return None
    default = field.default
    if field.name in ("start_date", "as_of"):
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    if isinstance(default, tuple):
        return (value,) if isinstance(value, str) else tuple(str(item) for item in value)
    if field.name in ("users", "tracks", "fault_seed") or isinstance(default, int):
        return int(value)
    if field.name == "listens_per_user" or isinstance(default, float):
        return float(value)
    return value
