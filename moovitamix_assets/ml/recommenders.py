"""Track recommenders for Moovitamix: hold-out split, models, top-k recommendations, metrics.

Pure functions over pandas DataFrames; the Dagster assets wrap them.

Interactions are a DataFrame with integer ``user_id`` and ``track_id`` columns, one row per
listen (repeats are repeated listens), optionally with ``position``: the 1-based order of the
listen in the user's history (larger = more recent).

Algorithms:

- ``ease``: EASE (Steck 2019), a closed-form item-item model on binarized listens. Best
  accuracy up to ``EASE_MAX_TRACKS`` tracks; its item-item matrix is tracks² float32
  (1.6 GB at 20,000 tracks), which is what stops it scaling further.
- ``als``: implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) from ``implicit``;
  memory is linear in users and tracks, so it takes over from EASE for large catalogues.
- ``popularity``: tracks with the most distinct listeners.
- ``genre_popularity``: the most popular tracks of the user's favourite genre, then global
  popularity to fill k. The yardstick the learned models must beat, and the cold-start
  fallback of every model.

The catalogue of a model is the set of tracks in its training interactions: a track nobody
has listened to cannot be scored by any of these models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack
from threadpoolctl import threadpool_limits

ALGORITHMS = ("ease", "als", "popularity", "genre_popularity")
EASE_MAX_TRACKS = 20_000
SPLIT_METHODS = ("random", "time")

# Scores are computed for blocks of users so that memory stays bounded whatever the number of
# users: a block holds at most this many float32 scores (128 MB), plus twice that in int64
# indices while np.argpartition runs.
_SCORE_BLOCK_ELEMENTS = 2**25
# Users per block when accumulating XᵀX for EASE: each block's sparse co-occurrence product
# stays small while the dense Gram matrix is filled in place.
_GRAM_BLOCK_USERS = 5_000


@dataclasses.dataclass(frozen=True)
class ModelParams:
    """Algorithm and hyper-parameters; unused hyper-parameters are ignored by other algorithms.

    Defaults were tuned on the synthetic benchmark data (genre-structured users, Zipf track
    popularity); see ``benchmarks/recommender_benchmark.py``.
    """

    algorithm: str = "ease"
    # EASE: L2 regularisation λ added to the diagonal of XᵀX.
    l2: float = 300.0
    # ALS: latent factors, L2 regularisation, sweeps, confidence scale and random seed.
    # At 100,000 users the confidence scale matters most (alpha 5 → 20 lifts NDCG@10 by a
    # quarter); regularisation between 5 and 50 barely moves it.
    factors: int = 128
    regularization: float = 50.0
    iterations: int = 15
    alpha: float = 20.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise ValueError(f"unknown algorithm {self.algorithm!r}; expected one of {ALGORITHMS}")


@dataclasses.dataclass
class RecommenderModel:
    """A trained recommender: plain numpy/pandas state, picklable as a versioned artefact.

    Row ``i`` of ``user_factors`` is user ``user_ids[i]``; column ``j`` of every score is track
    ``track_ids[j]``. Both id arrays are sorted, so ties in score go to the lower track_id.
    """

    algorithm: str
    params: ModelParams
    user_ids: np.ndarray
    track_ids: np.ndarray
    # Distinct listeners per track: the popularity baseline and the cold-start fallback.
    track_popularity: np.ndarray
    # Genre vocabulary, each track's genre code (-1 = unknown) and each user's favourite genre.
    genres: np.ndarray | None = None
    track_genre_codes: np.ndarray | None = None
    user_favorite_genres: pd.Series | None = None
    # EASE item-item weights B: scores = X @ B.
    item_similarity: np.ndarray | None = None
    # ALS factors: scores = user_factors @ item_factorsᵀ.
    user_factors: np.ndarray | None = None
    item_factors: np.ndarray | None = None

    @property
    def has_genres(self) -> bool:
        return self.track_genre_codes is not None

    def summary(self) -> dict[str, Any]:
        """Size and settings, for run metadata and the model registry."""
        arrays = [
            self.item_similarity,
            self.user_factors,
            self.item_factors,
            self.track_popularity,
        ]
        return {
            "algorithm": self.algorithm,
            "params": dataclasses.asdict(self.params),
            "users": len(self.user_ids),
            "tracks": len(self.track_ids),
            "has_genres": self.has_genres,
            "megabytes": round(sum(a.nbytes for a in arrays if a is not None) / 2**20, 1),
        }


def default_algorithm(n_tracks: int) -> str:
    """EASE while its tracks² item-item matrix fits comfortably in memory, ALS beyond."""
    return "ease" if n_tracks <= EASE_MAX_TRACKS else "als"


# ----------------------------------------------------------------------------- split


def split_interactions(
    interactions: pd.DataFrame,
    test_share: float = 0.2,
    seed: int = 0,
    min_user_listens: int = 2,
    method: str = "random",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-user hold-out of distinct tracks; returns (train, test), a partition of the rows.

    For every user with at least ``min_user_listens`` distinct tracks (and never fewer than 2),
    ``round(test_share * n)`` of their ``n`` distinct tracks, at least 1 and at most ``n - 1``,
    go to test with every listen of them; other users stay entirely in train. So no
    (user, track) pair is in both.

    ``method="random"``: the held-out tracks are drawn with ``seed``; the draw is made over the
    sorted distinct pairs, so the split depends only on the set of pairs and the seed, not on
    row order. ``method="time"``: the tracks the user discovered last (largest ``position`` of
    their first listen) are held out, i.e. "which new tracks will this user pick up next".
    """
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be strictly between 0 and 1, got {test_share}")
    if method not in SPLIT_METHODS:
        raise ValueError(f"unknown split method {method!r}; expected one of {SPLIT_METHODS}")

    if method == "time":
        if "position" not in interactions.columns:
            raise ValueError("method='time' needs a 'position' column")
        pairs = interactions.groupby(["user_id", "track_id"], as_index=False, sort=True)[
            "position"
        ].min()
        # Latest discoveries first.
        hold_out_order = -pairs["position"].to_numpy(dtype=np.float64)
    else:
        pairs = (
            interactions[["user_id", "track_id"]]
            .drop_duplicates()
            .sort_values(["user_id", "track_id"], ignore_index=True)
        )
        hold_out_order = np.random.default_rng(seed).random(len(pairs))

    pair_users = pairs["user_id"].to_numpy()
    order = np.lexsort((hold_out_order, pair_users))
    sorted_users = pair_users[order]
    group_starts = np.flatnonzero(np.r_[True, sorted_users[1:] != sorted_users[:-1]])
    tracks_per_user = np.diff(np.r_[group_starts, len(sorted_users)])
    rank_in_user = np.arange(len(sorted_users)) - np.repeat(group_starts, tracks_per_user)

    eligible = tracks_per_user >= max(2, min_user_listens)
    test_count = np.clip(np.rint(test_share * tracks_per_user), 1, tracks_per_user - 1)
    test_count = np.where(eligible, test_count, 0)
    held_out = np.zeros(len(pairs), dtype=bool)
    held_out[order] = rank_in_user < np.repeat(test_count, tracks_per_user)

    held_out_pairs = pd.MultiIndex.from_frame(pairs.loc[held_out, ["user_id", "track_id"]])
    in_test = pd.MultiIndex.from_frame(interactions[["user_id", "track_id"]]).isin(held_out_pairs)
    return (
        interactions[~in_test].reset_index(drop=True),
        interactions[in_test].reset_index(drop=True),
    )


# ----------------------------------------------------------------------------- training


def train_model(
    interactions: pd.DataFrame,
    params: ModelParams | Mapping[str, Any] | None = None,
    *,
    users: pd.DataFrame | None = None,
    tracks: pd.DataFrame | None = None,
) -> RecommenderModel:
    """Fit a recommender on listens.

    ``users`` (user_id, favorite_genre) and ``tracks`` (track_id, genre) give the genres used
    by ``genre_popularity`` and by every model's cold-start fallback; without them the
    fallback is global popularity.
    """
    params = params if isinstance(params, ModelParams) else ModelParams(**(params or {}))
    if interactions.empty:
        raise ValueError("cannot train a recommender on no interactions")

    user_ids, user_codes = np.unique(interactions["user_id"].to_numpy(), return_inverse=True)
    track_ids, track_codes = np.unique(interactions["track_id"].to_numpy(), return_inverse=True)
    # Duplicates are summed on conversion: entries are listen counts.
    listen_counts = sp.csr_matrix(
        (np.ones(len(user_codes), dtype=np.float32), (user_codes, track_codes)),
        shape=(len(user_ids), len(track_ids)),
    )
    listen_counts.sum_duplicates()
    track_popularity = np.bincount(listen_counts.indices, minlength=len(track_ids)).astype(
        np.float32
    )

    model = RecommenderModel(
        algorithm=params.algorithm,
        params=params,
        user_ids=user_ids,
        track_ids=track_ids,
        track_popularity=track_popularity,
    )
    if tracks is not None:
        _attach_genres(model, tracks, users)

    if params.algorithm == "ease":
        listened = listen_counts.copy()
        listened.data[:] = 1.0
        model.item_similarity = _fit_ease(listened, params.l2)
    elif params.algorithm == "als":
        model.user_factors, model.item_factors = _fit_als(listen_counts, params)
    elif params.algorithm == "genre_popularity" and not model.has_genres:
        raise ValueError("genre_popularity needs `tracks` (track_id, genre)")
    return model


def _attach_genres(
    model: RecommenderModel, tracks: pd.DataFrame, users: pd.DataFrame | None
) -> None:
    track_genres = tracks.drop_duplicates("track_id").set_index("track_id")["genre"]
    model.genres = np.array(sorted(track_genres.dropna().unique()), dtype=object)
    model.track_genre_codes = _genre_codes(
        model.genres, track_genres.reindex(model.track_ids).to_numpy()
    )
    if users is not None:
        model.user_favorite_genres = users.drop_duplicates("user_id").set_index("user_id")[
            "favorite_genre"
        ]


def _fit_ease(listened: sp.csr_matrix, l2: float) -> np.ndarray:
    """B = -P / diag(P) with diag(B) = 0, where P = (XᵀX + λI)⁻¹ (Steck 2019).

    Works in one tracks² float32 buffer: XᵀX is accumulated into it block by block, then
    Cholesky-factored and inverted in place (potrf + potri: a third of the flops of a general
    inverse and no second matrix).
    """
    n_tracks = listened.shape[1]
    gram = np.zeros((n_tracks, n_tracks), dtype=np.float32)
    gram_flat = gram.reshape(-1)
    for start in range(0, listened.shape[0], _GRAM_BLOCK_USERS):
        block = listened[start : start + _GRAM_BLOCK_USERS]
        co_listens = (block.T @ block).tocoo()
        co_listens.sum_duplicates()  # unique indices, so the fancy += below adds every entry
        gram_flat[co_listens.row.astype(np.int64) * n_tracks + co_listens.col] += co_listens.data
    gram_flat[:: n_tracks + 1] += np.float32(l2)

    # gram is symmetric and C-ordered, so gram.T is the same matrix in Fortran order, which
    # LAPACK overwrites in place. The result is valid in gram's lower triangle.
    factor, info = lapack.spotrf(gram.T, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"Cholesky of XᵀX + λI failed (info={info}); raise l2")
    precision, info = lapack.spotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"inverting XᵀX + λI failed (info={info})")
    assert np.shares_memory(precision, gram), "LAPACK copied the tracks² matrix"
    _mirror_lower_triangle(gram)

    gram /= -np.diag(gram).copy()[np.newaxis, :]
    gram_flat[:: n_tracks + 1] = 0.0
    return gram


def _mirror_lower_triangle(matrix: np.ndarray, block: int = 1024) -> None:
    """Copy the lower triangle onto the upper one in place, one row block at a time."""
    n = matrix.shape[0]
    for start in range(0, n, block):
        stop = min(start + block, n)
        matrix[start:stop, stop:] = matrix[stop:, start:stop].T
        diagonal_block = matrix[start:stop, start:stop]
        upper = np.triu_indices(stop - start, 1)
        diagonal_block[upper] = diagonal_block.T[upper]


def _fit_als(listen_counts: sp.csr_matrix, params: ModelParams) -> tuple[np.ndarray, np.ndarray]:
    """Implicit ALS with confidence 1 + alpha·log(1 + listens).

    Repeated listens are a real signal of how much a user likes a track, but heavy-tailed:
    the log keeps one track played on loop from dominating a user's factors.
    """
    from implicit.cpu.als import AlternatingLeastSquares

    confidence = listen_counts.copy()
    np.log1p(confidence.data, out=confidence.data)
    # implicit runs its own threads; a multi-threaded BLAS underneath them only thrashes.
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=params.seed,
            dtype=np.float32,
        )
        als.fit(confidence, show_progress=False)
    return np.ascontiguousarray(als.user_factors), np.ascontiguousarray(als.item_factors)


# ----------------------------------------------------------------------------- recommending


def recommend(
    model: RecommenderModel,
    interactions: pd.DataFrame,
    user_ids: Iterable[int],
    k: int = 10,
    *,
    users: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Top-k tracks per user: DataFrame[user_id, rank, track_id, score, source], rank 1 = best.

    ``interactions`` is what each user already has: those tracks are never recommended, and
    they are EASE's input. Users the model cannot score get the fallback: the most popular
    tracks of their favourite genre when genres are known, else global popularity. For EASE
    that is a user with no listened track in the catalogue; for ALS a user absent from
    training; popularity models score everybody this way. ``users`` (user_id,
    favorite_genre) overrides the favourite genres known at training, e.g. for new sign-ups.
    A user whose catalogue minus history is smaller than k gets what is left. Ties go to the
    lower track_id, so the output is deterministic.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    requested = np.unique(np.fromiter(user_ids, dtype=np.int64))
    history = _history_matrix(interactions, requested, model.track_ids)

    if model.algorithm == "ease":
        personal = np.diff(history.indptr) > 0
    elif model.algorithm == "als":
        personal = _codes(model.user_ids, requested) >= 0
    else:
        personal = np.zeros(len(requested), dtype=bool)

    results = []
    # Where each user's list comes from: "model" when the model scored the user (for the
    # popularity baselines: any user with a listen in the catalogue), else the cold-start
    # fallback that served them.
    sources = np.full(len(requested), "model", dtype=object)
    personal_rows = np.flatnonzero(personal)
    if len(personal_rows):
        results.append(_recommend_personal(model, requested, personal_rows, history, k))
    fallback_rows = np.flatnonzero(~personal)
    if len(fallback_rows):
        genre_codes = _user_genre_codes(model, requested[fallback_rows], users)
        results.append(
            _recommend_fallback(model, requested, fallback_rows, genre_codes, history, k)
        )
        cold = ~((model.algorithm in ("popularity", "genre_popularity")) & (np.diff(history.indptr)[fallback_rows] > 0))
        sources[fallback_rows[cold]] = np.where(
            genre_codes[cold] >= 0, "genre_fallback", "popularity_fallback"
        )
    recommendations = pd.concat(results, ignore_index=True) if results else _empty_recommendations()
    recommendations["source"] = pd.Series(sources, index=requested).reindex(
        recommendations["user_id"].to_numpy()
    ).to_numpy()
    return recommendations.sort_values(["user_id", "rank"], ignore_index=True)


def _recommend_personal(
    model: RecommenderModel,
    requested: np.ndarray,
    rows: np.ndarray,
    history: sp.csr_matrix,
    k: int,
) -> pd.DataFrame:
    block_users = _block_users(model)
    if model.algorithm == "als":
        factor_rows = _codes(model.user_ids, requested[rows])
    frames = []
    for start in range(0, len(rows), block_users):
        block_rows = rows[start : start + block_users]
        block_history = history[block_rows]
        if model.algorithm == "ease":
            scores = np.asarray(block_history @ model.item_similarity, dtype=np.float32)
        else:
            block_factors = model.user_factors[factor_rows[start : start + block_users]]
            scores = block_factors @ model.item_factors.T
        _exclude_history(scores, block_history)
        top_tracks, top_scores = _top_k(scores, k)
        frames.append(_as_frame(requested[block_rows], model.track_ids[top_tracks], top_scores))
    return pd.concat(frames, ignore_index=True)


def _recommend_fallback(
    model: RecommenderModel,
    requested: np.ndarray,
    rows: np.ndarray,
    genre_codes: np.ndarray,
    history: sp.csr_matrix,
    k: int,
) -> pd.DataFrame:
    """Genre popularity, then global popularity, scored only over the tracks that can win.

    A user's k best unheard tracks are among the first k + len(history) tracks of the
    popularity order of their genre, or of the global order: only those columns are scored.
    """
    popularity = model.track_popularity
    global_order = np.argsort(-popularity, kind="stable")
    genre_bonus = np.float32(popularity.max() + 1)
    track_genres = model.track_genre_codes
    genre_orders = {}
    if track_genres is not None:
        for genre in np.unique(genre_codes[genre_codes >= 0]):
            genre_orders[genre] = global_order[track_genres[global_order] == genre]

    history_lengths = np.diff(history.indptr)
    block_users = _block_users(model)  # a heavy listener can make every track a candidate
    frames = []
    for start in range(0, len(rows), block_users):
        block_rows = rows[start : start + block_users]
        block_genres = genre_codes[start : start + block_users]
        depth = k + int(history_lengths[block_rows].max())
        block_genre_set = np.unique(block_genres[block_genres >= 0])
        candidate_lists = [global_order[:depth]] + [genre_orders[g][:depth] for g in block_genre_set]
        candidates = np.unique(np.concatenate(candidate_lists))

        scores = np.tile(popularity[candidates], (len(block_rows), 1))
        if track_genres is not None:
            in_genre = track_genres[candidates][np.newaxis, :] == block_genres[:, np.newaxis]
            scores += genre_bonus * in_genre
        _exclude_history(scores, history[block_rows], candidates)
        top_columns, top_scores = _top_k(scores, k)
        frames.append(
            _as_frame(requested[block_rows], model.track_ids[candidates[top_columns]], top_scores)
        )
    return pd.concat(frames, ignore_index=True)


def _user_genre_codes(
    model: RecommenderModel, user_ids: np.ndarray, users: pd.DataFrame | None
) -> np.ndarray:
    """Code of each user's favourite genre; -1 when unknown, or for the plain popularity model.

    Genres in ``users`` take precedence over those known at training.
    """
    if not model.has_genres or model.algorithm == "popularity":
        return np.full(len(user_ids), -1)
    favorite_genres = model.user_favorite_genres
    if users is not None:
        given = users.drop_duplicates("user_id").set_index("user_id")["favorite_genre"]
        favorite_genres = given if favorite_genres is None else given.combine_first(favorite_genres)
    if favorite_genres is None:
        return np.full(len(user_ids), -1)
    return _genre_codes(model.genres, favorite_genres.reindex(user_ids).to_numpy())


def _history_matrix(
    interactions: pd.DataFrame, user_ids: np.ndarray, track_ids: np.ndarray
) -> sp.csr_matrix:
    """Binary CSR (requested users × model tracks) of what each user has listened to."""
    rows = _codes(user_ids, interactions["user_id"].to_numpy())
    columns = _codes(track_ids, interactions["track_id"].to_numpy())
    known = (rows >= 0) & (columns >= 0)
    history = sp.csr_matrix(
        (np.ones(known.sum(), dtype=np.float32), (rows[known], columns[known])),
        shape=(len(user_ids), len(track_ids)),
    )
    history.sum_duplicates()
    history.data[:] = 1.0
    return history


def _exclude_history(
    scores: np.ndarray, history: sp.csr_matrix, columns: np.ndarray | None = None
) -> None:
    """Set to -inf the score of every track the user has.

    ``columns``: the track index of each score column, when only some tracks are scored.
    """
    rows = np.repeat(np.arange(history.shape[0]), np.diff(history.indptr))
    tracks = history.indices
    if columns is not None:
        positions = np.minimum(np.searchsorted(columns, tracks), len(columns) - 1)
        scored = columns[positions] == tracks
        rows, tracks = rows[scored], positions[scored]
    scores[rows, tracks] = -np.inf


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and score of each row's k best entries, best first, ties to the lower column.

    Overwrites ``scores``. Entries at -inf (excluded tracks) come back with score -inf and
    are dropped by the caller.
    """
    n_rows, n_columns = scores.shape
    k = min(k, n_columns)
    costs = np.negative(scores, out=scores)  # ascending cost = best first
    if k < n_columns:
        top = np.argpartition(costs, k - 1, axis=1)[:, :k]
    else:
        top = np.tile(np.arange(n_columns), (n_rows, 1))
    top_costs = np.take_along_axis(costs, top, axis=1)

    # argpartition picks arbitrarily among entries tied with the k-th: redo those rows with a
    # stable sort so the lower column always wins.
    kth_cost = top_costs.max(axis=1, keepdims=True)
    ties_left_out = (costs == kth_cost).sum(axis=1) > (top_costs == kth_cost).sum(axis=1)
    for row in np.flatnonzero(ties_left_out):
        top[row] = np.argsort(costs[row], kind="stable")[:k]
        top_costs[row] = costs[row, top[row]]

    order = np.lexsort((top, top_costs), axis=1)
    return np.take_along_axis(top, order, axis=1), -np.take_along_axis(top_costs, order, axis=1)


def _as_frame(user_ids: np.ndarray, track_ids: np.ndarray, scores: np.ndarray) -> pd.DataFrame:
    n_rows, k = track_ids.shape
    kept = np.isfinite(scores).ravel()
    return pd.DataFrame(
        {
            "user_id": np.repeat(user_ids, k)[kept],
            "rank": np.tile(np.arange(1, k + 1), n_rows)[kept],
            "track_id": track_ids.ravel()[kept],
            "score": scores.ravel()[kept],
        }
    )


def _empty_recommendations() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype=np.int64),
            "rank": pd.Series(dtype=np.int64),
            "track_id": pd.Series(dtype=np.int64),
            "score": pd.Series(dtype=np.float32),
            "source": pd.Series(dtype=object),
        }
    )


def _block_users(model: RecommenderModel) -> int:
    return max(1, _SCORE_BLOCK_ELEMENTS // len(model.track_ids))


def _codes(vocabulary: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in the sorted ``vocabulary``, -1 when absent."""
    if len(vocabulary) == 0:
        return np.full(len(values), -1)
    positions = np.minimum(np.searchsorted(vocabulary, values), len(vocabulary) - 1)
    return np.where(vocabulary[positions] == values, positions, -1)


def _genre_codes(genres: np.ndarray, values: np.ndarray) -> np.ndarray:
    codes = pd.Categorical(values, categories=genres).codes  # -1 for unknown or missing
    return codes.astype(np.int16)


# ----------------------------------------------------------------------------- evaluation


def evaluate(
    model: RecommenderModel, train: pd.DataFrame, test: pd.DataFrame, k: int = 10
) -> dict[str, float]:
    """Ranking metrics at k for every user with a test track.

    Recommendations rank the full catalogue minus the user's train tracks (no sampled
    negatives), as they would in production.
    """
    relevant = test[["user_id", "track_id"]].drop_duplicates()
    recommendations = recommend(model, train, relevant["user_id"].unique(), k)
    return ranking_metrics(recommendations, relevant, k, catalogue_size=len(model.track_ids))


def ranking_metrics(
    recommendations: pd.DataFrame, relevant: pd.DataFrame, k: int, catalogue_size: int
) -> dict[str, float]:
    """precision@k, recall@k and NDCG@k (binary relevance) averaged over the users in
    ``relevant``, plus the share of the catalogue recommended to them.

    precision = hits / k; recall = hits / |relevant|; NDCG = DCG / IDCG with
    DCG = Σ_hits 1 / log2(rank + 1) and IDCG the DCG of min(|relevant|, k) hits at the top.
    A user with no recommendation scores 0.
    """
    relevant = relevant[["user_id", "track_id"]].drop_duplicates()
    relevant_per_user = relevant.groupby("user_id").size()
    recommended = recommendations.loc[
        (recommendations["rank"] <= k)
        & recommendations["user_id"].isin(relevant_per_user.index),
        ["user_id", "track_id", "rank"],
    ]
    hits = recommended.merge(relevant, on=["user_id", "track_id"])
    hits = hits.assign(gain=1.0 / np.log2(hits["rank"] + 1.0))
    per_user = hits.groupby("user_id").agg(hits=("gain", "size"), dcg=("gain", "sum"))
    per_user = per_user.reindex(relevant_per_user.index, fill_value=0)

    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal_dcg = np.cumsum(discounts)[np.minimum(relevant_per_user.to_numpy(), k) - 1]
    return {
        "precision_at_k": float((per_user["hits"] / k).mean()),
        "recall_at_k": float((per_user["hits"] / relevant_per_user).mean()),
        "ndcg_at_k": float((per_user["dcg"] / ideal_dcg).mean()),
        "catalogue_coverage": recommended["track_id"].nunique() / catalogue_size,
        "users_evaluated": int(len(relevant_per_user)),
        "k": k,
    }


def compare_models(
    models: Mapping[str, RecommenderModel], train: pd.DataFrame, test: pd.DataFrame, k: int = 10
) -> pd.DataFrame:
    """One row of ``evaluate`` metrics per named model, best NDCG first."""
    table = pd.DataFrame(
        {name: evaluate(model, train, test, k) for name, model in models.items()}
    ).T
    return table.sort_values("ndcg_at_k", ascending=False)
