"""Fit time, top-k time, peak memory and accuracy of every recommender on synthetic listens.

    .venv/bin/python benchmarks/recommender_benchmark.py            # the two reference scales
    .venv/bin/python benchmarks/recommender_benchmark.py --small    # a quick run
    .venv/bin/python benchmarks/recommender_benchmark.py --users 20000 --tracks 5000 \
        --listens 1000000 --models ease als

Synthetic listens: each track has a genre and a "scene" (a few dozen tracks of one genre
that the same people listen to) and a Zipf popularity; each user has a favourite genre and
one or two favourite scenes in it, and a log-normal number of listens drawn from their
scenes, their genre and the whole catalogue. Genre popularity captures the genre; only a
model that learns co-listening finds the scenes.

Models are fitted on the train part of a seeded per-user split; "top-k" is k recommendations
for every user (train listens excluded) and the metrics are read from those against the test
part. Peak memory is the largest resident-set growth (RSS, so numpy and BLAS allocations
count) over the phase, sampled every 10 ms.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import psutil

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from moovitamix_assets.ml.recommenders import (  # noqa: E402
    EASE_MAX_TRACKS,
    ModelParams,
    ranking_metrics,
    recommend,
    split_interactions,
    train_model,
)

MODELS = {
    "popularity": ModelParams(algorithm="popularity"),
    "genre_popularity": ModelParams(algorithm="genre_popularity"),
    "ease": ModelParams(algorithm="ease"),
    "als": ModelParams(algorithm="als", factors=128),
}
FULL_SCALES = [(100_000, 20_000, 5_000_000), (100_000, 50_000, 5_000_000)]
SMALL_SCALES = [(5_000, 2_000, 200_000), (5_000, 5_000, 200_000)]


@dataclass
class SyntheticData:
    listens: pd.DataFrame  # user_id, track_id, position
    users: pd.DataFrame  # user_id, favorite_genre
    tracks: pd.DataFrame  # track_id, genre


def synthetic_listens(
    n_users: int,
    n_tracks: int,
    n_listens: int,
    n_genres: int = 12,
    scene_size: int = 40,
    zipf_exponent: float = 0.9,
    source_shares: tuple[float, float, float] = (0.5, 0.3, 0.2),
    seed: int = 0,
) -> SyntheticData:
    """Genre- and scene-structured listens with Zipf track popularity, vectorized.

    ``source_shares``: share of listens drawn from the user's scenes, their favourite genre and
    the whole catalogue; within each source a track is drawn in proportion to its popularity.
    """
    rng = np.random.default_rng(seed)
    track_popularity = 1.0 / (rng.permutation(n_tracks) + 1.0) ** zipf_exponent
    track_genre = rng.integers(n_genres, size=n_tracks)
    # Scenes: consecutive runs of scene_size tracks within each genre.
    by_genre = np.argsort(track_genre, kind="stable")
    genre_starts = np.searchsorted(track_genre[by_genre], np.arange(n_genres))
    rank_in_genre = np.arange(n_tracks) - genre_starts[track_genre[by_genre]]
    track_scene = np.empty(n_tracks, dtype=np.int64)
    track_scene[by_genre] = track_genre[by_genre] * n_tracks + rank_in_genre // scene_size
    scene_ids, track_scene = np.unique(track_scene, return_inverse=True)
    scene_genre = scene_ids // n_tracks
    scenes_per_genre = np.bincount(scene_genre, minlength=n_genres)
    first_scene_of_genre = np.r_[0, np.cumsum(scenes_per_genre)[:-1]]

    user_genre = rng.integers(n_genres, size=n_users)
    user_scenes = first_scene_of_genre[user_genre][:, np.newaxis] + rng.integers(
        scenes_per_genre[user_genre][:, np.newaxis], size=(n_users, 2)
    )
    activity = rng.lognormal(0.0, 1.0, size=n_users)
    listens_per_user = np.maximum(1, np.rint(activity / activity.sum() * n_listens)).astype(np.int64)
    listen_user = np.repeat(np.arange(n_users), listens_per_user)
    n_total = len(listen_user)

    source = rng.choice(3, size=n_total, p=np.asarray(source_shares) / sum(source_shares))
    listen_track = np.empty(n_total, dtype=np.int64)
    from_scene = source == 0
    # Half of the scene listens come from each of the user's two scenes.
    chosen_scene = user_scenes[listen_user[from_scene], rng.integers(2, size=from_scene.sum())]
    listen_track[from_scene] = _draw_in_groups(track_scene, track_popularity, chosen_scene, rng)
    from_genre = source == 1
    listen_track[from_genre] = _draw_in_groups(
        track_genre, track_popularity, user_genre[listen_user[from_genre]], rng
    )
    from_anywhere = source == 2
    listen_track[from_anywhere] = _draw_in_groups(
        np.zeros(n_tracks, dtype=np.int64), track_popularity, np.zeros(from_anywhere.sum(), dtype=np.int64), rng
    )

    user_starts = np.r_[0, np.cumsum(listens_per_user)[:-1]]
    position = np.arange(n_total) - np.repeat(user_starts, listens_per_user) + 1
    genre_names = np.array([f"genre_{g:02d}" for g in range(n_genres)])
    return SyntheticData(
        listens=pd.DataFrame(
            {"user_id": listen_user + 1, "track_id": listen_track + 1, "position": position}
        ),
        users=pd.DataFrame({"user_id": np.arange(n_users) + 1, "favorite_genre": genre_names[user_genre]}),
        tracks=pd.DataFrame({"track_id": np.arange(n_tracks) + 1, "genre": genre_names[track_genre]}),
    )


def _draw_in_groups(
    item_group: np.ndarray, item_weight: np.ndarray, draw_group: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """For each entry of ``draw_group``, an item of that group drawn with probability ∝ weight.

    Items sorted by group with weights normalised per group make a single CDF that climbs
    from g to g + 1 across group g, so one searchsorted draws every listen at once.
    """
    order = np.argsort(item_group, kind="stable")
    sorted_groups = item_group[order]
    group_totals = np.bincount(sorted_groups, weights=item_weight[order])
    cdf = np.cumsum(item_weight[order] / group_totals[sorted_groups])
    drawn = np.searchsorted(cdf, draw_group + rng.random(len(draw_group)), side="right")
    return order[np.minimum(drawn, len(order) - 1)]


class PeakMemory:
    """Largest RSS growth over a ``with`` block, sampled by a background thread."""

    def __init__(self, interval_seconds: float = 0.01):
        self.interval_seconds = interval_seconds
        self.process = psutil.Process()
        self.peak_delta_bytes = 0

    def __enter__(self) -> PeakMemory:
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self.stopped = threading.Event()
        self.sampler = threading.Thread(target=self._sample, daemon=True)
        self.sampler.start()
        return self

    def _sample(self) -> None:
        while not self.stopped.wait(self.interval_seconds):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.sampler.join()
        self.peak = max(self.peak, self.process.memory_info().rss)
        self.peak_delta_bytes = self.peak - self.baseline


def benchmark_scale(
    n_users: int, n_tracks: int, n_listens: int, model_names: list[str], k: int, seed: int
) -> pd.DataFrame:
    started = time.perf_counter()
    data = synthetic_listens(n_users, n_tracks, n_listens, seed=seed)
    train, test = split_interactions(data.listens, test_share=0.2, seed=seed)
    print(
        f"\n== {n_users:,} users × {n_tracks:,} tracks × {len(data.listens):,} listens "
        f"(train {len(train):,}, test {len(test):,}; data + split {time.perf_counter() - started:.1f} s)",
        flush=True,
    )
    relevant = test[["user_id", "track_id"]].drop_duplicates()
    all_users = data.users["user_id"].to_numpy()

    rows = []
    for name in model_names:
        params = MODELS[name]
        if name == "ease" and n_tracks > EASE_MAX_TRACKS:
            matrix_gb = n_tracks**2 * 4 / 1e9
            print(
                f"  ease: skipped, {n_tracks:,} tracks > {EASE_MAX_TRACKS:,}: its item-item matrix "
                f"is {matrix_gb:.0f} GB of float32 (and inverting it ~{(n_tracks / 20_000) ** 3:.0f}× the "
                f"20,000-track time); ALS serves this catalogue",
                flush=True,
            )
            continue
        gc.collect()
        with PeakMemory() as fit_memory:
            fit_started = time.perf_counter()
            model = train_model(train, params, users=data.users, tracks=data.tracks)
            fit_seconds = time.perf_counter() - fit_started
        with PeakMemory() as recommend_memory:
            recommend_started = time.perf_counter()
            recommendations = recommend(model, train, all_users, k)
            recommend_seconds = time.perf_counter() - recommend_started
        metrics = ranking_metrics(recommendations, relevant, k, catalogue_size=len(model.track_ids))
        row = {
            "model": name,
            "fit_s": round(fit_seconds, 1),
            "top_k_all_users_s": round(recommend_seconds, 1),
            "fit_peak_gb": round(fit_memory.peak_delta_bytes / 1e9, 2),
            "top_k_peak_gb": round(recommend_memory.peak_delta_bytes / 1e9, 2),
            "model_gb": round(model.summary()["megabytes"] / 1e3, 2),
            f"precision@{k}": round(metrics["precision_at_k"], 4),
            f"recall@{k}": round(metrics["recall_at_k"], 4),
            f"ndcg@{k}": round(metrics["ndcg_at_k"], 4),
            "coverage": round(metrics["catalogue_coverage"], 3),
        }
        print("  " + ", ".join(f"{key}={value}" for key, value in row.items()), flush=True)
        rows.append(row)
        del model, recommendations
    return pd.DataFrame(rows).set_index("model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="two small scales, a few seconds")
    parser.add_argument("--users", type=int, help="one custom scale: users (with --tracks, --listens)")
    parser.add_argument("--tracks", type=int)
    parser.add_argument("--listens", type=int)
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.users:
        if not (args.tracks and args.listens):
            parser.error("--users needs --tracks and --listens")
        scales = [(args.users, args.tracks, args.listens)]
    else:
        scales = SMALL_SCALES if args.small else FULL_SCALES

    print(f"{os.cpu_count()} cores, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM")
    tables = [benchmark_scale(*scale, args.models, args.k, args.seed) for scale in scales]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        for (n_users, n_tracks, n_listens), table in zip(scales, tables):
            print(f"\n{n_users:,} users × {n_tracks:,} tracks × {n_listens:,} listens")
            print(table.to_string())


if __name__ == "__main__":
    main()
