"""The serving snapshot's files: versions written whole, an atomic manifest, N previous versions
kept, and every kind of broken version refused with the reason."""

import datetime as dt
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from moovitamix_serving import files
from moovitamix_serving.files import SnapshotError, load_version, make_current, publish, read_manifest
from moovitamix_assets_tests.serving_tests.synthetic import synthetic_content

START = dt.datetime(2026, 11, 1, 3, 0, 0)


def at(minutes: int) -> dt.datetime:
    return START + dt.timedelta(minutes=minutes)


def test_a_published_version_loads_back_exactly(tmp_path):
    content = synthetic_content(500, seed=1)
    published = publish(tmp_path, content, keep_previous=2, published_at=at(0))

    assert published.version == "20261101T030000000000" and published.previous is None and published.pruned == []
    manifest = read_manifest(tmp_path)
    assert manifest["current"] == published.version
    assert manifest["versions"] == [{
        "version": published.version, "model_version": content.model_version, "snapshot_date": "2026-11-01",
        "generated_at": content.generated_at, "published_at": "2026-11-01T03:00:00.000000Z", "users": 500,
    }]  # fmt: skip
    loaded = load_version(tmp_path, published.version)
    for name in ("user_ids", "offsets", "user_sources", "row_tracks", "row_scores", "row_reasons"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(content, name))
    assert isinstance(loaded.row_tracks, np.memmap)  # mapped, not read
    assert loaded.tracks == content.tracks and loaded.reasons == content.reasons
    assert loaded.meta["rows"] == int(content.offsets[-1]) and loaded.meta["tracks"] == 2000
    assert loaded.user_row(int(content.user_ids[17])) == 17
    assert loaded.user_row(int(content.user_ids[-1]) + 1) == -1 and loaded.user_row(-5) == -1
    assert loaded.cold_start("  jAzZ ").tracks == [row[0] for row in content.cold_start["genres"]["Jazz"]["rows"]]
    assert loaded.cold_start("Polka") is loaded.global_list and loaded.cold_start(None) is loaded.global_list
    assert sorted(os.listdir(tmp_path / "versions")) == [published.version]


def test_the_previous_n_versions_are_kept_and_older_ones_pruned(tmp_path):
    names = [publish(tmp_path, synthetic_content(50, seed=i), keep_previous=2, published_at=at(i)).version for i in range(5)]
    manifest = read_manifest(tmp_path)
    assert manifest["current"] == names[4]
    assert [entry["version"] for entry in manifest["versions"]] == [names[4], names[3], names[2]]
    assert sorted(os.listdir(tmp_path / "versions")) == sorted(names[2:])

    # keep_previous=0: only the current one stays.
    last = publish(tmp_path, synthetic_content(50, seed=9), keep_previous=0, published_at=at(10))
    assert sorted(last.pruned) == sorted(names[2:]) and os.listdir(tmp_path / "versions") == [last.version]


def test_make_current_points_back_at_a_kept_version_and_refuses_others(tmp_path):
    first = publish(tmp_path, synthetic_content(50, seed=1), keep_previous=1, published_at=at(0)).version
    second = publish(tmp_path, synthetic_content(50, seed=2), keep_previous=1, published_at=at(1)).version
    make_current(tmp_path, first, at(2))
    manifest = read_manifest(tmp_path)
    assert manifest["current"] == first
    assert [entry["version"] for entry in manifest["versions"]] == [second, first]
    with pytest.raises(SnapshotError, match="is not kept"):
        make_current(tmp_path, "20200101T000000000000", at(3))
    # A kept version that no longer verifies is not pointed at.
    (files.version_directory(tmp_path, second) / "row_scores.npy").write_bytes(b"broken")
    with pytest.raises(SnapshotError, match="row_scores.npy has 6 bytes"):
        make_current(tmp_path, second, at(4))
    assert read_manifest(tmp_path)["current"] == first


def flip_a_byte(path, offset=-1):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def rewrite_with_checksums(directory, name, data):
    """Replaces a file and updates meta.json to match: the damage only a structural check sees."""
    (directory / name).write_bytes(data)
    meta = json.loads((directory / "meta.json").read_text())
    meta["files"][name] = {"bytes": len(data), "sha256": files._sha256(directory / name)}
    (directory / "meta.json").write_text(json.dumps(meta))


def npy_bytes(array):
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d, rows: flip_a_byte(d / "row_tracks.npy"), "row_tracks.npy does not match its SHA-256"),
        (lambda d, rows: (d / "tracks.json").write_text("[]"), "tracks.json has 2 bytes"),
        (lambda d, rows: (d / "cold_start.json").unlink(), "cold_start.json is missing"),
        (lambda d, rows: (d / "meta.json").write_text("{not json"), "unreadable meta.json"),
        (lambda d, rows: (d / "meta.json").unlink(), "no meta.json"),
        (lambda d, rows: rewrite_with_checksums(d, "offsets.npy", npy_bytes(np.arange(51, dtype=np.int64))), "offsets do not span the rows"),
        (lambda d, rows: rewrite_with_checksums(d, "user_ids.npy", npy_bytes(np.zeros(50, dtype=np.int64))), "user ids are not sorted and unique"),
        (lambda d, rows: rewrite_with_checksums(d, "row_tracks.npy", npy_bytes(np.full(rows, 2000, dtype=np.int32))), "track index out of range"),
        (lambda d, rows: rewrite_with_checksums(d, "row_scores.npy", npy_bytes(np.zeros(rows, dtype=np.float64))), "expected a 1-d float32 array"),
        (lambda d, rows: rewrite_with_checksums(d, "cold_start.json", b'{"global": {"source": "model", "rows": []}, "genres": {}}'), "global has no fallback source"),
    ],
    ids=["flipped-byte", "truncated-json", "missing-file", "bad-meta", "no-meta", "offsets", "unsorted-users",
         "track-index", "wrong-dtype", "cold-start"],
)  # fmt: skip
def test_a_broken_version_is_refused_saying_why(tmp_path, damage, message):
    content = synthetic_content(50, seed=3)
    version = publish(tmp_path, content, keep_previous=1, published_at=at(0)).version
    load_version(tmp_path, version)
    damage(files.version_directory(tmp_path, version), int(content.offsets[-1]))
    with pytest.raises(SnapshotError, match=message):
        load_version(tmp_path, version)


def test_a_manifest_is_absent_unreadable_or_names_nothing(tmp_path):
    assert read_manifest(tmp_path) is None
    (tmp_path / "manifest.json").write_text('{"current": ')
    with pytest.raises(SnapshotError, match="unreadable manifest"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text('{"versions": []}')
    with pytest.raises(SnapshotError, match="names no current version"):
        read_manifest(tmp_path)
    # A publish replaces a broken manifest.
    version = publish(tmp_path, synthetic_content(20), keep_previous=1, published_at=at(0)).version
    assert read_manifest(tmp_path)["current"] == version


def test_a_writer_killed_mid_version_leaves_the_served_version_whole(tmp_path):
    """SIGKILL while a big version is being written: the manifest still names the old version,
    which loads; the leftover is hidden, never a version; the next publish succeeds."""
    old = publish(tmp_path, synthetic_content(100, seed=1), keep_previous=2, published_at=at(0)).version
    writer = textwrap.dedent(f"""
        import datetime as dt, os, sys
        import numpy as np
        from moovitamix_serving import files
        from moovitamix_assets_tests.serving_tests.synthetic import synthetic_content
        content = synthetic_content(300_000, seed=2)
        original = np.save
        def save_then_stop(file, array, **kwargs):
            original(file, array, **kwargs)
            if file.name.endswith("row_tracks.npy"):
                print("writing", flush=True)
                sys.stdin.readline()  # killed here, mid-version
        np.save = save_then_stop
        files.publish({str(tmp_path)!r}, content, 2, dt.datetime(2026, 11, 1, 4))
    """)
    process = subprocess.Popen(
        [sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )  # fmt: skip
    assert process.stdout.readline().strip() == "writing"
    process.kill()
    process.wait(timeout=10)

    assert read_manifest(tmp_path)["current"] == old
    assert load_version(tmp_path, old).meta["users"] == 100
    leftovers = [name for name in os.listdir(tmp_path / "versions") if name != old]
    assert len(leftovers) == 1 and leftovers[0].startswith(".incoming-")
    new = publish(tmp_path, synthetic_content(100, seed=5), keep_previous=2, published_at=at(5)).version
    assert [entry["version"] for entry in read_manifest(tmp_path)["versions"]] == [new, old]
