"""The serving snapshot on disk: immutable versions, and the manifest that names the current one.

    <root>/manifest.json          the current version and the versions kept, newest first
    <root>/versions/<version>/    one published snapshot, never changed once renamed into place
        meta.json                 what it is (model, snapshot date, generation time), its counts,
                                  and each other file's size and SHA-256
        user_ids.npy              int64, sorted: the users with a list
        offsets.npy               int64, users + 1: user i's rows are offsets[i]:offsets[i + 1]
        user_sources.npy          uint8 per user: where the list comes from (index into SOURCES)
        row_tracks.npy            int32 per row, best first: index into tracks.json
        row_scores.npy            float32 per row
        row_reasons.npy           int32 per row: index into reasons.json (0: no reason)
        tracks.json               [[track_id, name, artist, genre], ...]
        reasons.json              [null, "popular with all listeners", ...]
        cold_start.json           the lists of users the snapshot does not know: "global", and one
                                  per genre under "genres"; each {"source", "rows": [[track, score, reason], ...]}

The numbers are .npy arrays that a reader memory-maps: loading a million users' lists costs
one checksum pass and a few vectorised checks, not a parse, and replicas on one host share
the pages. A version is written under a hidden name, synced, and renamed into place whole;
the manifest is replaced by write, fsync, rename. A reader therefore sees the old manifest
or the new one, and every version a manifest names is complete. This module needs numpy
and the standard library only: the code location writes with it, the service reads with it.
"""

import dataclasses
import datetime as dt
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

SERVING_PATH_ENV = "MOOVITAMIX_SERVING_PATH"
DEFAULT_SERVING_PATH = "data/serving"

FORMAT = 1
MANIFEST = "manifest.json"
VERSIONS = "versions"
META = "meta.json"

# Where a user's list comes from, as ml.user_recommendations names it; stored as the index.
SOURCES = ("model", "genre_fallback", "popularity_fallback")
# Deepest list the service hands out (its k is bounded by it); cold-start lists are this long.
MAX_K = 100

# The arrays of a version: file name -> dtype.
ARRAYS = {
    "user_ids.npy": np.dtype(np.int64),
    "offsets.npy": np.dtype(np.int64),
    "user_sources.npy": np.dtype(np.uint8),
    "row_tracks.npy": np.dtype(np.int32),
    "row_scores.npy": np.dtype(np.float32),
    "row_reasons.npy": np.dtype(np.int32),
}
DOCUMENTS = ("tracks.json", "reasons.json", "cold_start.json")
FILES = (*ARRAYS, *DOCUMENTS)

_CHUNK = 8 * 2**20


class SnapshotError(Exception):
    """A version or manifest that cannot be served: missing, unreadable, or not what it claims."""


@dataclasses.dataclass
class SnapshotContent:
    """One version's lists, coded as the files hold them (see the module docstring)."""

    model_version: str
    snapshot_date: str  # YYYY-MM-DD: the core snapshot the lists were made from
    generated_at: str  # ISO 8601 UTC: when the lists were made
    user_ids: np.ndarray
    offsets: np.ndarray
    user_sources: np.ndarray
    row_tracks: np.ndarray
    row_scores: np.ndarray
    row_reasons: np.ndarray
    tracks: list  # [track_id, name, artist, genre]
    reasons: list  # reasons[0] is None
    cold_start: dict


@dataclasses.dataclass(frozen=True)
class ColdStartList:
    source: str
    tracks: list  # track indices, best first
    scores: list
    reasons: list


def version_directory(root: Path, version: str) -> Path:
    return Path(root) / VERSIONS / version


def utc_timestamp(moment: dt.datetime) -> str:
    """ISO 8601 with a Z; a naive datetime is taken as UTC (as TIMESTAMP columns hold it)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.isoformat(timespec="microseconds") + "Z"


def parse_utc_timestamp(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=dt.timezone.utc)


# ----------------------------------------------------------------------------- writing


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, write) -> None:
    with open(path, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def write_version(root: Path, content: SnapshotContent, published_at: dt.datetime) -> str:
    """Writes the content as a new version and returns its name; nothing points at it yet.

    The files go to a hidden directory, each synced, then the directory is renamed into
    place and its parent synced: a crash leaves a hidden leftover, never a partial version.
    """
    version = published_at.strftime("%Y%m%dT%H%M%S%f")
    versions = Path(root) / VERSIONS
    versions.mkdir(parents=True, exist_ok=True)
    final = versions / version
    if final.exists():
        raise SnapshotError(f"version {version} already exists")
    incoming = versions / f".incoming-{version}-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir()
    arrays = {name: np.ascontiguousarray(getattr(content, name.removesuffix(".npy")), dtype=dtype)
              for name, dtype in ARRAYS.items()}  # fmt: skip
    for name, array in arrays.items():
        _write_synced(incoming / name, lambda file, array=array: np.save(file, array, allow_pickle=False))
    documents = {"tracks.json": content.tracks, "reasons.json": content.reasons, "cold_start.json": content.cold_start}
    for name, value in documents.items():
        _write_synced(incoming / name, lambda file, value=value: file.write(_json_bytes(value)))
    meta = {
        "format": FORMAT,
        "version": version,
        "model_version": content.model_version,
        "snapshot_date": content.snapshot_date,
        "generated_at": content.generated_at,
        "published_at": utc_timestamp(published_at),
        "users": int(len(arrays["user_ids.npy"])),
        "rows": int(len(arrays["row_tracks.npy"])),
        "tracks": len(content.tracks),
        "files": {name: {"bytes": (incoming / name).stat().st_size, "sha256": _sha256(incoming / name)} for name in FILES},
    }
    _write_synced(incoming / META, lambda file: file.write(_json_bytes(meta)))
    _fsync(incoming)
    incoming.rename(final)
    _fsync(versions)
    return version


def read_manifest(root: Path) -> Optional[dict]:
    """The manifest, or None when nothing was ever published; SnapshotError when unreadable."""
    path = Path(root) / MANIFEST
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise SnapshotError(f"unreadable manifest {path}: {error}") from error
    if not isinstance(manifest, dict) or not isinstance(manifest.get("current"), str) or not isinstance(
        manifest.get("versions"), list
    ):
        raise SnapshotError(f"manifest {path} names no current version")
    return manifest


def write_manifest(root: Path, current: str, versions: Sequence[dict], updated_at: dt.datetime) -> None:
    """Replaces the manifest atomically: a temporary file written and synced, then renamed over it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "current": current, "updated_at": utc_timestamp(updated_at), "versions": list(versions)}
    temporary = root / f".{MANIFEST}.{os.getpid()}.tmp"
    _write_synced(temporary, lambda file: file.write(json.dumps(manifest, indent=2).encode()))
    os.replace(temporary, root / MANIFEST)
    _fsync(root)


@dataclasses.dataclass(frozen=True)
class Published:
    version: str
    previous: Optional[str]
    pruned: list


def _entry(root: Path, version: str) -> dict:
    meta = json.loads((version_directory(root, version) / META).read_bytes())
    return {name: meta[name] for name in ("version", "model_version", "snapshot_date", "generated_at", "published_at", "users")}


def publish(root: Path, content: SnapshotContent, keep_previous: int, published_at: dt.datetime) -> Published:
    """Writes a new version, makes it current, and deletes the versions past the newest
    `keep_previous` before it (kept for rollback). Readers that still map a deleted version
    keep their pages until they let go of them."""
    if keep_previous < 0:
        raise ValueError(f"keep_previous must be >= 0, got {keep_previous}")
    root = Path(root)
    try:
        manifest = read_manifest(root)
    except SnapshotError:
        manifest = None  # a broken manifest is replaced; the versions on disk say what exists
    version = write_version(root, content, published_at)
    previous = [entry for entry in (manifest or {}).get("versions", []) if version_directory(root, entry["version"]).is_dir()]
    versions = [_entry(root, version), *previous][: keep_previous + 1]
    write_manifest(root, version, versions, published_at)
    kept = {entry["version"] for entry in versions}
    # Hidden names are versions being written (another writer's, or a crash's leftover).
    pruned = sorted(path.name for path in (root / VERSIONS).iterdir() if path.name not in kept and not path.name.startswith("."))
    for name in pruned:
        shutil.rmtree(root / VERSIONS / name, ignore_errors=True)
    return Published(version=version, previous=manifest["current"] if manifest else None, pruned=pruned)


def make_current(root: Path, version: str, updated_at: dt.datetime) -> None:
    """Points the manifest at a version it keeps (a rollback); the list of kept versions is unchanged."""
    manifest = read_manifest(root)
    if manifest is None or version not in {entry["version"] for entry in manifest["versions"]}:
        raise SnapshotError(f"version {version} is not kept in {Path(root) / MANIFEST}")
    load_version(root, version)  # refuse to point readers at a version they would refuse
    write_manifest(root, version, manifest["versions"], updated_at)


# ----------------------------------------------------------------------------- reading


@dataclasses.dataclass
class ServingVersion:
    """A loaded version: its arrays memory-mapped, its small documents in memory."""

    meta: dict
    user_ids: np.ndarray
    offsets: np.ndarray
    user_sources: np.ndarray
    row_tracks: np.ndarray
    row_scores: np.ndarray
    row_reasons: np.ndarray
    tracks: list
    reasons: list
    global_list: ColdStartList
    genre_lists: dict  # casefolded genre -> ColdStartList

    @property
    def version(self) -> str:
        return self.meta["version"]

    def user_row(self, user_id: int) -> int:
        """The user's index, or -1 for a user this version does not know."""
        position = int(np.searchsorted(self.user_ids, user_id))
        return position if position < len(self.user_ids) and int(self.user_ids[position]) == user_id else -1

    def cold_start(self, favorite_genre: Optional[str]) -> ColdStartList:
        if favorite_genre:
            return self.genre_lists.get(favorite_genre.strip().casefold(), self.global_list)
        return self.global_list


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise SnapshotError(message)


def _load_array(path: Path, dtype: np.dtype) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError:
        array = np.load(path, allow_pickle=False)  # an empty array cannot be mapped
    _check(array.dtype == dtype and array.ndim == 1, f"{path.name}: expected a 1-d {dtype} array, found {array.ndim}-d {array.dtype}")
    return array


def _cold_start_list(value: Any, tracks: int, reasons: int, where: str) -> ColdStartList:
    _check(isinstance(value, dict) and value.get("source") in SOURCES[1:], f"cold_start.json: {where} has no fallback source")
    rows = value.get("rows")
    _check(isinstance(rows, list) and len(rows) > 0, f"cold_start.json: {where} is empty")
    for row in rows:
        _check(
            isinstance(row, list) and len(row) == 3 and isinstance(row[0], int) and 0 <= row[0] < tracks
            and isinstance(row[1], (int, float)) and isinstance(row[2], int) and 0 <= row[2] < reasons,
            f"cold_start.json: {where} has a malformed row {row!r}",
        )  # fmt: skip
    return ColdStartList(
        source=value["source"],
        tracks=[row[0] for row in rows],
        scores=[float(row[1]) for row in rows],
        reasons=[row[2] for row in rows],
    )


def load_version(root: Path, version: str) -> ServingVersion:
    """Loads and verifies a version; SnapshotError says what is wrong with a broken one.

    Every file's size and SHA-256 must match meta.json, and the arrays must describe
    consistent lists (sorted users, offsets that partition the rows, indices in range).
    """
    directory = version_directory(root, version)
    try:
        meta = json.loads((directory / META).read_bytes())
    except FileNotFoundError:
        raise SnapshotError(f"version {version}: no {META} (missing or not a version)") from None
    except (OSError, ValueError) as error:
        raise SnapshotError(f"version {version}: unreadable {META}: {error}") from error
    _check(isinstance(meta, dict) and meta.get("format") == FORMAT, f"version {version}: not format {FORMAT}")
    _check(meta.get("version") == version, f"version {version}: {META} names {meta.get('version')!r}")
    for name in FILES:
        path = directory / name
        expected = meta.get("files", {}).get(name)
        _check(isinstance(expected, dict), f"version {version}: {META} does not list {name}")
        _check(path.is_file(), f"version {version}: {name} is missing")
        size = path.stat().st_size
        _check(size == expected["bytes"], f"version {version}: {name} has {size} bytes, {META} says {expected['bytes']}")
        _check(_sha256(path) == expected["sha256"], f"version {version}: {name} does not match its SHA-256")

    try:
        arrays = {name.removesuffix(".npy"): _load_array(directory / name, dtype) for name, dtype in ARRAYS.items()}
        tracks, reasons, cold_start = (json.loads((directory / name).read_bytes()) for name in DOCUMENTS)
    except SnapshotError:
        raise
    except (OSError, ValueError) as error:
        raise SnapshotError(f"version {version}: unreadable file: {error}") from error

    users, rows = len(arrays["user_ids"]), len(arrays["row_tracks"])
    user_ids, offsets = arrays["user_ids"], arrays["offsets"]
    _check(users == meta.get("users") and rows == meta.get("rows"), f"version {version}: counts differ from {META}")
    _check(len(offsets) == users + 1 and offsets[0] == 0 and offsets[-1] == rows, f"version {version}: offsets do not span the rows")
    _check(bool(np.all(offsets[1:] >= offsets[:-1])), f"version {version}: offsets decrease")
    _check(bool(np.all(user_ids[1:] > user_ids[:-1])), f"version {version}: user ids are not sorted and unique")
    _check(len(arrays["user_sources"]) == users and bool(np.all(arrays["user_sources"] < len(SOURCES))), f"version {version}: bad user sources")
    _check(len(arrays["row_scores"]) == rows and len(arrays["row_reasons"]) == rows, f"version {version}: row arrays differ in length")
    _check(isinstance(tracks, list) and all(isinstance(t, list) and len(t) == 4 for t in tracks), f"version {version}: malformed tracks.json")
    _check(isinstance(reasons, list) and len(reasons) >= 1 and reasons[0] is None, f"version {version}: malformed reasons.json")
    if rows:
        _check(0 <= int(arrays["row_tracks"].min()) and int(arrays["row_tracks"].max()) < len(tracks), f"version {version}: track index out of range")
        _check(0 <= int(arrays["row_reasons"].min()) and int(arrays["row_reasons"].max()) < len(reasons), f"version {version}: reason index out of range")
        _check(bool(np.all(np.isfinite(arrays["row_scores"]))), f"version {version}: a score is not finite")
    _check(isinstance(cold_start, dict) and isinstance(cold_start.get("genres"), dict), f"version {version}: malformed cold_start.json")
    global_list = _cold_start_list(cold_start.get("global"), len(tracks), len(reasons), "global")
    genre_lists = {
        genre.casefold(): _cold_start_list(value, len(tracks), len(reasons), f"genre {genre!r}")
        for genre, value in cold_start["genres"].items()
    }
    return ServingVersion(meta=meta, tracks=tracks, reasons=reasons, global_list=global_list, genre_lists=genre_lists, **arrays)
