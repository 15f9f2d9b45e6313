"""Straightforward reference implementations the tests hold the fast code to, and test data."""

import numpy as np
from scipy.spatial.distance import cdist
from sklearn.metrics import average_precision_score


def per_query_metrics(distmat, q_pids, g_pids, q_cams, g_cams, max_rank, cross_camera=True):
    """The protocol one query at a time, AP from scikit-learn (exact when distances do not tie)."""
    distmat, q_pids, g_pids = np.asarray(distmat, dtype=np.float64), np.asarray(q_pids), np.asarray(g_pids)
    q_cams, g_cams = np.asarray(q_cams), np.asarray(g_cams)
    average_precisions, inverse_penalties = [], []
    cmc = np.zeros(max_rank)
    skipped = 0
    for query in range(len(q_pids)):
        kept = np.ones(len(g_pids), dtype=bool)
        if cross_camera:
            kept = ~((g_pids == q_pids[query]) & (g_cams == q_cams[query]))
        is_match = g_pids[kept] == q_pids[query]
        if not is_match.any():
            skipped += 1
            continue
        distances = distmat[query, kept]
        average_precisions.append(average_precision_score(is_match, -distances))
        hits = is_match[np.argsort(distances, kind="stable")]
        cmc[np.argmax(hits) :] += 1
        inverse_penalties.append(is_match.sum() / (np.flatnonzero(hits)[-1] + 1))
    num_valid = len(average_precisions)
    return {
        "mAP": float(np.mean(average_precisions)),
        "cmc": cmc / num_valid,
        "mINP": float(np.mean(inverse_penalties)),
        "num_valid_queries": num_valid,
        "num_skipped_queries": skipped,
    }


def dense_rerank(q_feats, g_feats, k1=20, k2=6, lambda_value=0.3):
    """k-reciprocal re-ranking as the paper's reference code does it, with dense (N, N) matrices.

    Differences from that code, none of which changes the algorithm: float64 throughout (it keeps
    V in float16), a stable argsort (ties in index order, where its quicksort is arbitrary), and
    distances from scipy's cdist.
    """
    features = np.concatenate([q_feats, g_feats]).astype(np.float64)
    num_query, num_points = len(q_feats), len(features)
    distances = cdist(features, features, "sqeuclidean")
    original = (distances / distances.max(axis=0)).T
    ranks = np.argsort(original, axis=1, kind="stable")

    def k_reciprocal(point, k):
        forward = ranks[point, : k + 1]
        backward = ranks[forward, : k + 1]
        return forward[np.where(backward == point)[0]]

    weights = np.zeros((num_points, num_points))
    for point in range(num_points):
        reciprocal = k_reciprocal(point, k1)
        expansion = reciprocal
        for candidate in reciprocal:
            candidate_reciprocal = k_reciprocal(candidate, int(np.around(k1 / 2)))
            if len(np.intersect1d(candidate_reciprocal, reciprocal)) > 2 / 3 * len(candidate_reciprocal):
                expansion = np.append(expansion, candidate_reciprocal)
        expansion = np.unique(expansion)
        weight = np.exp(-original[point, expansion])
        weights[point, expansion] = weight / np.sum(weight)
    if k2 != 1:
        weights = np.stack([weights[ranks[point, :k2]].mean(axis=0) for point in range(num_points)])

    shared = np.zeros((num_query, num_points))
    for query in range(num_query):
        for column in np.flatnonzero(weights[query]):
            rows = np.flatnonzero(weights[:, column])
            shared[query, rows] += np.minimum(weights[query, column], weights[rows, column])
    jaccard = 1 - shared / (2 - shared)
    final = jaccard * (1 - lambda_value) + original[:num_query] * lambda_value
    return final[:, num_query:]


def clustered_features(seed, num_query=60, num_gallery=200, num_ids=15, dim=24, noise=1.0):
    """Query/gallery features around one centre per identity, plus pid-0 distractors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_ids + 1, dim))
    q_pids = rng.integers(1, num_ids + 1, num_query)
    g_pids = np.where(rng.random(num_gallery) < 0.15, 0, rng.integers(1, num_ids + 1, num_gallery))
    q_cams, g_cams = rng.integers(0, 4, num_query), rng.integers(0, 4, num_gallery)
    q_feats = centres[q_pids] + noise * rng.normal(size=(num_query, dim))
    g_feats = centres[g_pids] + noise * rng.normal(size=(num_gallery, dim))
    g_feats[g_pids == 0] = rng.normal(size=(int((g_pids == 0).sum()), dim))
    return q_feats, g_feats, q_pids, g_pids, q_cams, g_cams


def assert_identical(result, expected):
    assert result["mAP"] == expected["mAP"]
    assert result["mINP"] == expected["mINP"]
    np.testing.assert_array_equal(result["cmc"], expected["cmc"])
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    assert result["num_skipped_queries"] == expected["num_skipped_queries"]
