"""k-reciprocal re-ranking: the sparse implementation against the dense textbook algorithm."""

import numpy as np
import pytest
import scipy.sparse as sparse

from hhcl.evaluation import evaluate_features, evaluate_ranking, rerank_distances
from hhcl.evaluation.reranking import reciprocal_neighbours, smallest_in_rows

from evaluation_oracles import assert_identical, clustered_features, dense_rerank


@pytest.mark.parametrize(
    "k1, k2, lambda_value",
    [(20, 6, 0.3), (7, 3, 0.5), (5, 1, 0.3), (9, 2, 0.0), (3, 4, 1.0)],  # k1=5, 9: round(k1/2) halves to even
)
def test_same_distances_as_the_dense_algorithm(k1, k2, lambda_value):
    q_feats, g_feats, *_ = clustered_features(seed=k1, num_query=35, num_gallery=110, dim=12, noise=0.8)
    expected = dense_rerank(q_feats, g_feats, k1, k2, lambda_value)
    for chunk_size in (None, 8):
        reranked = rerank_distances(q_feats, g_feats, k1, k2, lambda_value, chunk_size=chunk_size)
        np.testing.assert_allclose(reranked, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_ties_are_broken_like_a_stable_sort(seed):
    # Small integer features: exact distances with many ties, duplicates included.
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 3, size=(90, 4)).astype(np.float64)
    for k1, k2 in ((20, 6), (6, 3)):
        expected = dense_rerank(features[:30], features[30:], k1, k2, 0.3)
        reranked = rerank_distances(features[:30], features[30:], k1, k2, 0.3, chunk_size=7)
        np.testing.assert_allclose(reranked, expected, atol=1e-12)


def test_fewer_points_than_neighbours():
    q_feats, g_feats, *_ = clustered_features(seed=9, num_query=4, num_gallery=8, dim=5)
    np.testing.assert_allclose(rerank_distances(q_feats, g_feats), dense_rerank(q_feats, g_feats), atol=1e-12)


def test_evaluation_with_rerank_equals_ranking_the_reranked_matrix():
    q_feats, g_feats, q_pids, g_pids, q_cams, g_cams = clustered_features(seed=11, num_query=50, num_gallery=160)
    labels = (q_pids, g_pids, q_cams, g_cams)
    expected = evaluate_ranking(rerank_distances(q_feats, g_feats), *labels, max_rank=10)
    for chunk_size in (None, 9):
        result = evaluate_features(q_feats, g_feats, *labels, max_rank=10, rerank=True, chunk_size=chunk_size)
        assert_identical(result, expected)
    plain = evaluate_features(q_feats, g_feats, *labels, max_rank=10)
    assert expected["mAP"] != plain["mAP"]  # re-ranking did something


def test_smallest_in_rows_orders_like_a_stable_argsort():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 6, size=(50, 40)).astype(np.float64)
    for k in (1, 5, 17, 40):
        np.testing.assert_array_equal(smallest_in_rows(values, k), np.argsort(values, axis=1, kind="stable")[:, :k])


def test_reciprocal_neighbours_of_a_small_ranking():
    # nearest[i] lists i first; with k = 1 each point's 2-nearest are {i, nearest[i, 1]}.
    nearest = np.array([[0, 1, 2], [1, 0, 2], [2, 1, 0]])
    reciprocal = reciprocal_neighbours(nearest, 1)
    assert sparse.issparse(reciprocal)
    # 2 names 1 but 1 does not name 2.
    np.testing.assert_array_equal(reciprocal.toarray(), [[1, 1, 0], [1, 1, 0], [0, 0, 1]])
