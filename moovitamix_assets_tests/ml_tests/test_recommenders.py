import pickle

import numpy as np
import pandas as pd
import pytest

from moovitamix_assets.ml.recommenders import (
    ALGORITHMS,
    ModelParams,
    default_algorithm,
    evaluate,
    ranking_metrics,
    recommend,
    split_interactions,
    train_model,
)

N_GENRES = 4
TRACKS_PER_GENRE = 40
SCENE_SIZE = 10  # tracks listened to together by the same people, within one genre


def make_listens(n_users=400, seed=0):
    """Listens where users have a favourite genre and scene and track popularity is long-tailed.

    Track and user ids are offset from 0 so index/id mix-ups show.
    """
    rng = np.random.default_rng(seed)
    n_tracks = N_GENRES * TRACKS_PER_GENRE
    track_genre = np.arange(n_tracks) // TRACKS_PER_GENRE
    track_scene = np.arange(n_tracks) // SCENE_SIZE
    popularity = 1.0 / (rng.permutation(n_tracks) + 1.0)
    rows = []
    favorite_genres = rng.integers(N_GENRES, size=n_users)
    for user, genre in enumerate(favorite_genres):
        scene = genre * (TRACKS_PER_GENRE // SCENE_SIZE) + rng.integers(TRACKS_PER_GENRE // SCENE_SIZE)
        pools = [track_scene == scene, track_genre == genre, np.ones(n_tracks, dtype=bool)]
        n_listens = rng.integers(8, 40)
        sources = rng.choice(3, size=n_listens, p=[0.6, 0.25, 0.15])
        for source in sources:
            weights = np.where(pools[source], popularity, 0.0)
            rows.append((user + 1000, rng.choice(n_tracks, p=weights / weights.sum()) + 500))
    listens = pd.DataFrame(rows, columns=["user_id", "track_id"])
    listens["position"] = listens.groupby("user_id").cumcount() + 1
    users = pd.DataFrame(
        {"user_id": np.arange(n_users) + 1000, "favorite_genre": [f"g{g}" for g in favorite_genres]}
    )
    tracks = pd.DataFrame(
        {"track_id": np.arange(n_tracks) + 500, "genre": [f"g{g}" for g in track_genre]}
    )
    return listens, users, tracks


@pytest.fixture(scope="module")
def catalogue():
    return make_listens()


@pytest.fixture(scope="module")
def split(catalogue):
    listens, _, _ = catalogue
    return split_interactions(listens, test_share=0.2, seed=0)


@pytest.fixture(scope="module")
def models(catalogue, split):
    _, users, tracks = catalogue
    train, _ = split
    params = {
        "ease": {"algorithm": "ease", "l2": 50.0},
        "als": {"algorithm": "als", "factors": 16, "iterations": 10},
        "popularity": {"algorithm": "popularity"},
        "genre_popularity": {"algorithm": "genre_popularity"},
    }
    return {
        name: train_model(train, p, users=users, tracks=tracks) for name, p in params.items()
    }


def pair_set(frame):
    return set(zip(frame["user_id"], frame["track_id"]))


# ----------------------------------------------------------------------------- split


def test_split_partitions_rows_and_keeps_pairs_apart(catalogue, split):
    listens, _, _ = catalogue
    train, test = split
    assert len(train) + len(test) == len(listens)
    assert not pair_set(train) & pair_set(test)
    assert pair_set(train) | pair_set(test) == pair_set(listens)


def test_split_holds_out_a_share_of_each_users_distinct_tracks(catalogue, split):
    listens, _, _ = catalogue
    train, test = split
    distinct = listens.drop_duplicates(["user_id", "track_id"]).groupby("user_id").size()
    held_out = test.drop_duplicates(["user_id", "track_id"]).groupby("user_id").size()
    held_out = held_out.reindex(distinct.index, fill_value=0)
    expected = np.clip(np.rint(0.2 * distinct), 1, distinct - 1)
    expected[distinct < 2] = 0
    pd.testing.assert_series_equal(held_out, expected.astype(held_out.dtype))


def test_split_is_deterministic_whatever_the_row_order(catalogue, split):
    listens, _, _ = catalogue
    _, test = split
    shuffled = listens.sample(frac=1.0, random_state=7)
    _, test_again = split_interactions(shuffled, test_share=0.2, seed=0)
    _, test_other_seed = split_interactions(listens, test_share=0.2, seed=1)
    assert pair_set(test_again) == pair_set(test)
    assert pair_set(test_other_seed) != pair_set(test)


def test_split_leaves_light_users_in_train():
    listens = pd.DataFrame({"user_id": [1, 1, 1, 2, 2, 2, 2], "track_id": [1, 2, 2, 1, 2, 3, 4]})
    train, test = split_interactions(listens, test_share=0.5, min_user_listens=3)
    assert set(test["user_id"]) == {2}
    assert len(test) == 2
    assert pair_set(train) >= {(1, 1), (1, 2)}


def test_time_split_holds_out_the_latest_discoveries():
    listens = pd.DataFrame(
        {
            "user_id": [1] * 6,
            "track_id": [10, 11, 10, 12, 13, 11],
            "position": [1, 2, 3, 4, 5, 6],
        }
    )
    train, test = split_interactions(listens, test_share=0.5, method="time")
    # Tracks 10 and 11 were discovered first: they stay in train with all their listens.
    assert set(test["track_id"]) == {12, 13}
    assert sorted(train["position"]) == [1, 2, 3, 6]
    with pytest.raises(ValueError, match="position"):
        split_interactions(listens.drop(columns="position"), method="time")


# ----------------------------------------------------------------------------- recommend


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_recommend_gives_k_unheard_tracks_per_user(algorithm, models, split, catalogue):
    train, _ = split
    _, users, _ = catalogue
    recommendations = recommend(models[algorithm], train, users["user_id"], k=10)
    assert list(recommendations.columns) == ["user_id", "rank", "track_id", "score", "source"]
    assert set(recommendations["source"]) == {"model"}  # every user here has listens
    ranks = recommendations.groupby("user_id")["rank"].agg(list)
    assert all(user_ranks == list(range(1, 11)) for user_ranks in ranks)
    assert set(recommendations["user_id"]) == set(users["user_id"])
    assert not pair_set(recommendations) & pair_set(train)
    assert not recommendations.duplicated(["user_id", "track_id"]).any()
    # Scores never increase down the ranking.
    assert (recommendations.groupby("user_id")["score"].diff().dropna() <= 0).all()


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_recommend_returns_what_is_left_when_the_catalogue_runs_out(algorithm, models, split):
    train, _ = split
    model = models[algorithm]
    heard_nearly_everything = pd.DataFrame({"user_id": 1000, "track_id": model.track_ids[3:]})
    recommendations = recommend(model, heard_nearly_everything, [1000], k=10)
    assert sorted(recommendations["track_id"]) == sorted(model.track_ids[:3])
    assert list(recommendations["rank"]) == [1, 2, 3]


@pytest.mark.parametrize("algorithm", ["ease", "als"])
def test_cold_start_users_get_genre_popularity(algorithm, models, catalogue):
    _, users, tracks = catalogue
    model = models[algorithm]
    newcomers = pd.DataFrame({"user_id": [1, 2], "favorite_genre": ["g2", "unheard-of genre"]})
    no_history = pd.DataFrame({"user_id": [], "track_id": []}, dtype=np.int64)
    recommendations = recommend(model, no_history, [1, 2], k=5, users=newcomers)

    popularity = pd.Series(model.track_popularity, index=model.track_ids)
    genre_of = tracks.set_index("track_id")["genre"]
    g2_order = popularity[genre_of.reindex(model.track_ids).to_numpy() == "g2"]
    expected_g2 = g2_order.sort_values(ascending=False, kind="stable").index[:5]
    expected_global = popularity.sort_values(ascending=False, kind="stable").index[:5]
    got = recommendations.groupby("user_id")["track_id"].agg(list)
    assert got[1] == list(expected_g2)
    assert got[2] == list(expected_global)
    sources = recommendations.groupby("user_id")["source"].agg(set)
    assert sources[1] == {"genre_fallback"} and sources[2] == {"popularity_fallback"}


def test_fallback_still_excludes_history(models):
    model = models["popularity"]
    most_popular = model.track_ids[np.argsort(-model.track_popularity, kind="stable")[:3]]
    history = pd.DataFrame({"user_id": 7, "track_id": most_popular})
    recommendations = recommend(model, history, [7], k=5)
    assert not set(recommendations["track_id"]) & set(most_popular)
    assert len(recommendations) == 5


def test_ties_go_to_the_lower_track_id():
    listens = pd.DataFrame({"user_id": [1, 2, 3, 3], "track_id": [30, 20, 10, 40]})
    model = train_model(listens, {"algorithm": "popularity"})
    recommendations = recommend(model, listens.iloc[:0], [9], k=2)
    assert list(recommendations["track_id"]) == [10, 20]


def test_recommendations_do_not_depend_on_row_order(models, split, catalogue):
    train, _ = split
    _, users, _ = catalogue
    shuffled = train.sample(frac=1.0, random_state=3)
    for model in models.values():
        pd.testing.assert_frame_equal(
            recommend(model, train, users["user_id"], k=10),
            recommend(model, shuffled, users["user_id"], k=10),
        )


# ----------------------------------------------------------------------------- models


def test_ease_matches_the_closed_form(split):
    train, _ = split
    model = train_model(train, {"algorithm": "ease", "l2": 50.0})
    user_codes = np.searchsorted(model.user_ids, train["user_id"])
    track_codes = np.searchsorted(model.track_ids, train["track_id"])
    listened = np.zeros((len(model.user_ids), len(model.track_ids)))
    listened[user_codes, track_codes] = 1.0
    precision = np.linalg.inv(listened.T @ listened + 50.0 * np.eye(len(model.track_ids)))
    expected = -precision / np.diag(precision)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(model.item_similarity, expected, atol=1e-5)


def test_ease_beats_the_popularity_baselines(models, split):
    train, test = split
    ndcg = {name: evaluate(model, train, test)["ndcg_at_k"] for name, model in models.items()}
    assert ndcg["ease"] > ndcg["genre_popularity"] > ndcg["popularity"]
    assert ndcg["als"] > ndcg["popularity"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_models_survive_pickling(algorithm, models, split):
    train, _ = split
    model = models[algorithm]
    restored = pickle.loads(pickle.dumps(model))
    assert restored.algorithm == algorithm
    assert restored.params == model.params
    some_users = model.user_ids[:50]
    pd.testing.assert_frame_equal(
        recommend(restored, train, some_users), recommend(model, train, some_users)
    )


def test_als_is_reproducible_with_its_seed(split):
    train, _ = split
    params = ModelParams(algorithm="als", factors=8, iterations=3, seed=5)
    first, second = train_model(train, params), train_model(train, params)
    np.testing.assert_array_equal(first.item_factors, second.item_factors)


def test_params_are_checked():
    with pytest.raises(ValueError, match="unknown algorithm"):
        ModelParams(algorithm="svd")
    with pytest.raises(TypeError):
        ModelParams(**{"algorithm": "ease", "lambda": 1.0})


def test_default_algorithm_switches_to_als_for_large_catalogues():
    assert default_algorithm(20_000) == "ease"
    assert default_algorithm(20_001) == "als"


# ----------------------------------------------------------------------------- metrics


def test_ranking_metrics_on_a_hand_computed_case():
    recommendations = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 2],
            "rank": [1, 2, 3, 1, 2, 3],
            "track_id": [10, 11, 12, 10, 13, 14],
        }
    )
    # User 1 hits at rank 2 of 2 relevant; user 2 hits at rank 1 of 1; user 3 got nothing.
    relevant = pd.DataFrame({"user_id": [1, 1, 2, 3], "track_id": [11, 15, 10, 10]})
    metrics = ranking_metrics(recommendations, relevant, k=3, catalogue_size=10)

    user_1_ndcg = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
    assert metrics["precision_at_k"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    assert metrics["recall_at_k"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert metrics["ndcg_at_k"] == pytest.approx((user_1_ndcg + 1 + 0) / 3)
    assert metrics["catalogue_coverage"] == pytest.approx(5 / 10)
    assert metrics["users_evaluated"] == 3


def test_ranking_metrics_ignore_ranks_beyond_k():
    recommendations = pd.DataFrame({"user_id": [1, 1], "rank": [1, 2], "track_id": [10, 11]})
    relevant = pd.DataFrame({"user_id": [1], "track_id": [11]})
    metrics = ranking_metrics(recommendations, relevant, k=1, catalogue_size=2)
    assert metrics["precision_at_k"] == metrics["recall_at_k"] == metrics["ndcg_at_k"] == 0.0


def test_evaluate_counts_users_with_a_test_track(models, split):
    train, test = split
    metrics = evaluate(models["ease"], train, test, k=10)
    assert metrics["users_evaluated"] == test["user_id"].nunique()
    assert 0 < metrics["precision_at_k"] < 1
    assert 0 < metrics["catalogue_coverage"] <= 1
