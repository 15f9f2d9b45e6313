"""The dense textbook k-reciprocal Jaccard distance, written from its description (one row at a
time, N x N arrays everywhere), as the oracle for the sparse implementation; and test features."""

from types import SimpleNamespace

import numpy as np
import pytest
from sklearn.cluster import DBSCAN


def dense_ranked_lists(features: np.ndarray, k1: int) -> np.ndarray:
    """(N, k1): each row's nearest points by decreasing inner product, ties by increasing index."""
    sims = features @ features.T
    return np.argsort(-sims, axis=1, kind="stable")[:, :k1]


def dense_jaccard_distance(features: np.ndarray, k1: int, k2: int) -> np.ndarray:
    """(N, N) float64 Jaccard distance of SpCL / cluster-contrast / HHCL, computed densely."""
    features = np.asarray(features, dtype=np.float64)
    n = features.shape[0]
    sims = features @ features.T
    ranked = dense_ranked_lists(features, k1)
    half = int(np.around(k1 / 2)) + 1

    def reciprocal_sets(width):
        forward = [set(row[:width].tolist()) for row in ranked]
        return [{j for j in forward[i] if i in forward[j]} for i in range(n)]

    full_sets = reciprocal_sets(k1)
    half_sets = reciprocal_sets(half)

    weights = np.zeros((n, n))
    for i in range(n):
        members = full_sets[i]
        expanded = set(members)
        for candidate in members:
            candidate_set = half_sets[candidate]
            if len(candidate_set & members) > 2 / 3 * len(candidate_set):
                expanded |= candidate_set
        expanded = np.array(sorted(expanded), dtype=np.int64)
        if expanded.size:
            logits = -(2 - 2 * sims[i, expanded])  # minus the squared distance
            exps = np.exp(logits - logits.max())
            weights[i, expanded] = exps / exps.sum()

    if k2 != 1:
        weights = np.stack([weights[ranked[i, :k2]].mean(axis=0) for i in range(n)])

    # Like the reference: for each row i, walk the inverted index of its non-zero columns and
    # add min(V[i, k], V[j, k]) to every j holding column k.
    holders = [np.flatnonzero(weights[:, column]) for column in range(n)]
    distance = np.ones((n, n))
    for i in range(n):
        overlap = np.zeros(n)
        for column in np.flatnonzero(weights[i]):
            rows = holders[column]
            overlap[rows] += np.minimum(weights[i, column], weights[rows, column])
        distance[i] = 1 - overlap / (2 - overlap)
    distance[distance < 0] = 0
    return distance


def dense_dbscan(distance: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    return DBSCAN(eps=eps, min_samples=min_samples, metric="precomputed").fit_predict(distance)


def clustered_features(
    num_images: int,
    dim: int,
    seed: int,
    images_per_identity: int = 17,
    cosine: tuple[float, float] = (0.6, 0.8),
    outlier_fraction: float = 0.03,
    identities_per_group: int = 1,
    group_cosine: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float64 unit vectors around random identity centres, and their identities
    (N,) with -1 for outliers. Two images of an identity have cosine about `cosine`; the
    centres of identities in one group (look-alikes) have cosine about `group_cosine`."""
    rng = np.random.default_rng(seed)
    num_outliers = int(round(outlier_fraction * num_images))
    num_identities = max(1, (num_images - num_outliers) // images_per_identity)
    identities = np.concatenate(
        [rng.integers(0, num_identities, num_images - num_outliers), np.full(num_outliers, -1)]
    )
    rng.shuffle(identities)
    group_centres = rng.standard_normal((num_identities // identities_per_group + 1, dim))
    group_centres /= np.linalg.norm(group_centres, axis=1, keepdims=True)
    centres = rng.standard_normal((num_identities, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    if identities_per_group > 1:
        group_of = np.arange(num_identities) // identities_per_group
        centres = np.sqrt(group_cosine) * group_centres[group_of] + np.sqrt(1 - group_cosine) * centres
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    closeness = rng.uniform(*cosine, size=num_identities)
    noise = rng.standard_normal((num_images, dim))
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    # sqrt(c) centre + sqrt(1 - c) noise: two such images have cosine about c.
    mix = np.where(identities >= 0, closeness[identities], 0.0)[:, None]
    features = np.sqrt(mix) * centres[np.maximum(identities, 0)] + np.sqrt(1 - mix) * noise
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    return features, identities


def sign_features(num_images: int, seed: int, num_groups: int = 6, flips: int = 3) -> np.ndarray:
    """(N, 16) vectors with entries +-1/4 (unit length, all inner products exact multiples of
    1/8): groups around random sign patterns with a few signs flipped, so ties and duplicates
    abound and every backend computes them bit for bit."""
    rng = np.random.default_rng(seed)
    centres = rng.choice([-1.0, 1.0], size=(num_groups, 16))
    groups = rng.integers(0, num_groups, num_images)
    features = centres[groups].copy()
    for row in range(num_images):
        flipped = rng.choice(16, size=rng.integers(0, flips + 1), replace=False)
        features[row, flipped] *= -1
    return features / 4


@pytest.fixture(scope="session")
def reference():
    return SimpleNamespace(
        ranked_lists=dense_ranked_lists,
        jaccard_distance=dense_jaccard_distance,
        dbscan=dense_dbscan,
        clustered_features=clustered_features,
        sign_features=sign_features,
    )


@pytest.fixture(scope="session")
def clustered_2000(reference):
    """2,000 clustered float64 features (look-alike identities in threes, so that eps matters)
    and their dense reference distance with k1=30, k2=6, computed once per session."""
    features, _ = clustered_features(2000, 64, seed=0, cosine=(0.5, 0.8), identities_per_group=3, group_cosine=0.7)
    return features, dense_jaccard_distance(features, 30, 6)
