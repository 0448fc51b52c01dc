"""Serving snapshots made up for tests and the benchmark, and what the service must answer from them.

`expected_response` reads the content with plain Python, not with the service's code, so a
test that compares the two checks the service against an independent reading of the format.
"""

import datetime as dt
from typing import Optional

import numpy as np

from moovitamix_serving.files import MAX_K, SOURCES, SnapshotContent

GENRES = ("Rock", "Pop", "Hip Hop", "Jazz", "R&B")
POPULAR = "popular with all listeners"
# A name that JSON must escape: quotes, a backslash, non-ASCII, a newline.
AWKWARD_NAME = 'Robert"s “Song” \\ é\n'


def synthetic_content(
    users: int,
    tracks: int = 2_000,
    k: int = 10,
    seed: int = 0,
    model_version: str = "20261101T030000000000-ease",
    snapshot_date: str = "2026-11-01",
    generated_at: Optional[dt.datetime] = None,
) -> SnapshotContent:
    """`users` users with ids spread over 1..3*users; every 7th has only 3 tracks (a short list),
    every 10th a genre fallback, every 25th a popularity fallback; the rest the model's list."""
    rng = np.random.default_rng(seed)
    user_ids = np.sort(rng.choice(np.arange(1, 3 * users + 1, dtype=np.int64), size=users, replace=False))
    lengths = np.where(np.arange(users) % 7 == 6, 3, k)
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    rows = int(offsets[-1])
    user_sources = np.zeros(users, dtype=np.uint8)
    user_sources[np.arange(users) % 10 == 9] = SOURCES.index("genre_fallback")
    user_sources[np.arange(users) % 25 == 24] = SOURCES.index("popularity_fallback")
    row_sources = np.repeat(user_sources, lengths)
    reasons = [None, POPULAR, *(f"popular in {genre}" for genre in GENRES)]
    row_reasons = np.where(row_sources == 0, 0, np.where(rng.random(rows) < 0.7, 2 + rng.integers(0, len(GENRES), rows), 1))
    track_table = [
        [int(1000 + 3 * index), AWKWARD_NAME if index == 0 else f"Track {index}", f"Artist {index % 97}", GENRES[index % len(GENRES)]]
        for index in range(tracks)
    ]

    def cold(source: str, reason: int) -> dict:
        picks = rng.choice(tracks, size=MAX_K, replace=False)
        scores = np.sort(rng.random(MAX_K).astype(np.float32))[::-1]
        return {"source": source, "rows": [[int(t), float(s), reason] for t, s in zip(picks, scores)]}

    return SnapshotContent(
        model_version=model_version,
        snapshot_date=snapshot_date,
        generated_at=(generated_at or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)).isoformat(timespec="microseconds") + "Z",
        user_ids=user_ids,
        offsets=offsets,
        user_sources=user_sources,
        row_tracks=rng.integers(0, tracks, rows).astype(np.int32),
        row_scores=rng.random(rows).astype(np.float32),
        row_reasons=row_reasons.astype(np.int32),
        tracks=track_table,
        reasons=reasons,
        cold_start={
            "global": cold("popularity_fallback", 1),
            "genres": {genre: cold("genre_fallback", 2 + index) for index, genre in enumerate(GENRES)},
        },
    )


def expected_response(
    content: SnapshotContent, serving_version: str, user_id: int, k: int = 10, favorite_genre: Optional[str] = None
) -> dict:
    """The JSON the service must return, read from the content with plain Python."""
    known = {int(user): position for position, user in enumerate(content.user_ids.tolist())}
    if user_id in known:
        position = known[user_id]
        start, end = int(content.offsets[position]), int(content.offsets[position + 1])
        source = SOURCES[int(content.user_sources[position])]
        rows = [
            (int(content.row_tracks[i]), float(content.row_scores[i]), int(content.row_reasons[i]))
            for i in range(start, min(end, start + k))
        ]
    else:
        genres = {genre.casefold(): value for genre, value in content.cold_start["genres"].items()}
        chosen = genres.get((favorite_genre or "").strip().casefold(), content.cold_start["global"])
        source = chosen["source"]
        rows = [tuple(row) for row in chosen["rows"][:k]]
    recommendations = []
    for rank, (track, score, reason) in enumerate(rows, start=1):
        track_id, name, artist, genre = content.tracks[track]
        recommendations.append({
            "rank": rank, "track_id": track_id, "name": name, "artist": artist, "genre": genre,
            "score": round(score, 6), "reason": content.reasons[reason],
        })  # fmt: skip
    return {
        "user_id": user_id,
        "serving_version": serving_version,
        "model_version": content.model_version,
        "snapshot_date": content.snapshot_date,
        "generated_at": content.generated_at,
        "source": source,
        "recommendations": recommendations,
    }
