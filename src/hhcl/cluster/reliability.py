"""Pseudo-labels that adapt to the data: eps read off the distance distribution, and only the
clusters that survive a tighter and a looser eps.

    labels, stats = adaptive_pseudo_labels(features, eps=0.6, eps_quantile=0.5, reliability_margin=0.02)
    labels, stats = adaptive_pseudo_labels(features, eps=0.6, eps_candidates=[0.4, 0.5, 0.6],
                                           reliability_margin=0.02)

Both options answer the same problem of adapting a pretrained model to new cameras without
labels: a fixed eps fitted to another dataset merges or splits people on this one, and a merged
cluster trained on pulls its people together, so the next clustering merges more.

- ``eps_quantile``: eps is that quantile of every image's Jaccard distance to its
  ``min_samples - 1``-th nearest other image (the DBSCAN "k-distance" rule). With 0.5, half of
  the images are core points; the radius follows the features as they tighten epoch by epoch.
- ``reliability_margin``: DBSCAN also runs at ``eps - margin`` and ``eps + margin`` (as SpCL
  does). An image keeps its label only when its cluster overlaps its cluster at the looser eps
  (independence: the cluster is not a fragment of something that merges as soon as eps grows)
  and its cluster at the tighter eps (compactness: it does not fall apart as eps shrinks) with an
  intersection-over-union of at least ``reliability_threshold``. The others become outliers.
- ``eps_candidates``: try each eps and keep the one with the most reliable images
  (``eps_selection="images"``) or the most reliable clusters (``"clusters"``). Too small an eps
  leaves people out as outliers; too large a one merges them, and merged clusters move as eps
  moves. Neither count is a perfect signal: a giant cluster is stable too, so counting images
  can choose the largest candidate, and counting clusters favours the smallest eps, which splits
  people and leaves many images out (how each selection did on real cameras: the adaptation
  variants in docs/benchmarks.md). No label is used either way.
"""

from __future__ import annotations

import time

import numpy as np
from scipy import sparse
from sklearn.cluster import DBSCAN

from hhcl.cluster.jaccard import jaccard_distance
from hhcl.cluster.knn import describe_method
from hhcl.cluster.pseudo_labels import cluster_statistics
from hhcl.config import EPS_SELECTIONS
from hhcl.errors import HHCLError

EPS_RANGE = (0.05, 0.95)


def kth_neighbour_distances(distances, k: int) -> np.ndarray:
    """``(N,)`` distance of each row to its ``k``-th nearest other row, from a sparse or dense ``(N, N)`` matrix.

    Entries absent from a sparse matrix, and any distance above 1, count as 1 (the Jaccard
    distance's maximum). One sort of all stored entries, no loop over rows.
    """
    k = max(int(k), 1)
    if not sparse.issparse(distances):
        dense = np.array(distances, dtype=np.float64, copy=True)
        np.fill_diagonal(dense, np.inf)
        if dense.shape[1] - 1 < k:
            return np.ones(dense.shape[0], dtype=np.float64)
        return np.minimum(np.partition(dense, k - 1, axis=1)[:, k - 1], 1.0)
    matrix = sparse.csr_matrix(distances)
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
    off_diagonal = matrix.indices != rows
    rows, values = rows[off_diagonal], matrix.data[off_diagonal].astype(np.float64)
    order = np.lexsort((values, rows))  # by row, then by distance
    counts = np.bincount(rows, minlength=matrix.shape[0])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    result = np.ones(matrix.shape[0], dtype=np.float64)
    enough = counts >= k
    result[enough] = values[order][starts[enough] + k - 1]
    return np.minimum(result, 1.0)


def eps_from_distances(distances: sparse.csr_matrix, min_samples: int, quantile: float) -> float:
    """The ``quantile`` of the ``min_samples - 1``-th neighbour distances, kept inside ``EPS_RANGE``."""
    if not 0.0 < quantile < 1.0:
        raise HHCLError(f"eps_quantile={quantile!r} must be in (0, 1) (0.5: half of the images are core points)")
    value = float(np.quantile(kth_neighbour_distances(distances, min_samples - 1), quantile))
    return float(np.clip(value, *EPS_RANGE))


def dbscan_labels(distances: sparse.csr_matrix, eps: float, min_samples: int) -> np.ndarray:
    """``(N,)`` int64 DBSCAN labels on a precomputed sparse distance matrix (absent = not a neighbour)."""
    return DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed").fit_predict(
        distances).astype(np.int64)


def cluster_intersections(labels: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each image, ``(N,)`` each: the size of the intersection of its cluster in ``labels``
    with its cluster in ``other``, the size of its cluster in ``labels``, and in ``other``.

    An outlier (-1) counts as a cluster of its own, on either side.
    """
    num_images = len(labels)
    labels = np.where(labels >= 0, labels, labels.max(initial=-1) + 1 + np.arange(num_images))
    other = np.where(other >= 0, other, other.max(initial=-1) + 1 + np.arange(num_images))
    _, cluster_index = np.unique(labels, return_inverse=True)
    _, other_index = np.unique(other, return_inverse=True)
    sizes = np.bincount(cluster_index)
    other_sizes = np.bincount(other_index)
    pair_key = cluster_index.astype(np.int64) * (other_index.max() + 1) + other_index
    _, pair_index, pair_sizes = np.unique(pair_key, return_inverse=True, return_counts=True)
    return pair_sizes[pair_index], sizes[cluster_index], other_sizes[other_index]


def _overlaps(labels: np.ndarray, other: np.ndarray) -> np.ndarray:
    """``(N,)`` IoU of each image's cluster in ``labels`` with its own cluster in ``other``
    (an outlier counts as a cluster of its own)."""
    intersection, size, other_size = cluster_intersections(labels, other)
    return intersection / (size + other_size - intersection)


def reliable_labels(labels: np.ndarray, tighter: np.ndarray, looser: np.ndarray, threshold: float
                    ) -> np.ndarray:
    """``labels`` with the unreliable images set to -1 and the clusters renumbered ``0..C-1``.

    A cluster left with a single image is dropped too: it has no positive pair to learn from.
    """
    kept = labels >= 0
    independence = _overlaps(labels, looser)
    compactness = _overlaps(labels, tighter)
    kept &= (independence >= threshold) & (compactness >= threshold)
    result = np.full(len(labels), -1, dtype=np.int64)
    if kept.any():
        _, renumbered, counts = np.unique(labels[kept], return_inverse=True, return_counts=True)
        large_enough = counts[renumbered] >= 2
        indices = np.flatnonzero(kept)[large_enough]
        _, result[indices] = np.unique(renumbered[large_enough], return_inverse=True)
    return result


def _filtered(distances, eps: float, min_samples: int, margin: float, threshold: float
              ) -> tuple[np.ndarray, np.ndarray]:
    """``(dbscan labels, reliable labels)`` at ``eps``."""
    labels = dbscan_labels(distances, eps, min_samples)
    tighter = dbscan_labels(distances, max(eps - margin, 1e-6), min_samples)
    looser = dbscan_labels(distances, min(eps + margin, 1.0 - 1e-6), min_samples)
    return labels, reliable_labels(labels, tighter, looser, threshold)


def adaptive_pseudo_labels(features, eps: float, min_samples: int = 4, k1: int = 30, k2: int = 6,
                           eps_quantile: float | None = None, eps_candidates=(), reliability_margin: float = 0.0,
                           reliability_threshold: float = 0.5, eps_selection: str = "images", knn: str = "auto",
                           knn_nprobe: int | None = None
                           ) -> tuple[np.ndarray, dict]:
    """Pseudo-labels ``(N,)`` int64 (-1 outliers) with eps from the data and reliability filtering.

    ``features``: ``(N, D)`` L2-normalised. eps is, in order of precedence: the candidate of
    ``eps_candidates`` that keeps the most reliable clusters or images (``eps_selection``; it
    needs ``reliability_margin > 0``; ties go to the smaller eps), the ``eps_quantile`` rule, or
    ``eps`` as given. Returns ``(labels, stats)``: stats as :func:`hhcl.cluster.pseudo_labels`
    gives them (clusters, outliers, sizes) plus ``eps`` (as used), ``dbscan_clusters`` (before
    filtering), ``unreliable_images``, ``eps_search`` (candidate -> reliable clusters or images),
    ``knn`` (the search that ran, in words; ``knn`` is one of KNN_METHODS, see
    :mod:`hhcl.cluster.knn`) and ``seconds``.
    """
    start = time.perf_counter()
    if reliability_margin < 0 or reliability_margin >= 0.5:
        raise HHCLError(f"reliability_margin={reliability_margin!r} must be in [0, 0.5) (SpCL uses 0.02)")
    if eps_selection not in EPS_SELECTIONS:
        raise HHCLError(f"eps_selection={eps_selection!r} must be one of {', '.join(EPS_SELECTIONS)}")
    candidates = [float(value) for value in eps_candidates]
    if candidates and reliability_margin <= 0:
        raise HHCLError("eps_candidates are ranked by the images that stay reliable: set a reliability_margin > 0 "
                        "(e.g. 0.02) too")
    if any(not 0 < value < 1 for value in candidates):
        raise HHCLError(f"eps_candidates={candidates} must lie in (0, 1): Jaccard distances lie in [0, 1]")
    distances = jaccard_distance(features, k1=k1, k2=k2, knn=knn, knn_nprobe=knn_nprobe)
    search: dict[float, int] = {}
    if candidates:
        best = None
        for candidate in sorted(candidates):
            labels, filtered = _filtered(distances, candidate, min_samples, reliability_margin, reliability_threshold)
            search[candidate] = (int(filtered.max(initial=-1)) + 1 if eps_selection == "clusters"
                                 else int((filtered >= 0).sum()))
            if best is None or search[candidate] > search[best[0]]:
                best = (candidate, labels, filtered)
        eps, labels, filtered = best
    else:
        if eps_quantile is not None:
            eps = eps_from_distances(distances, min_samples, eps_quantile)
        if reliability_margin > 0:
            labels, filtered = _filtered(distances, eps, min_samples, reliability_margin, reliability_threshold)
        else:
            labels = filtered = dbscan_labels(distances, eps, min_samples)
    stats = {"num_images": int(len(filtered)), **cluster_statistics(filtered), "eps": float(eps),
             "min_samples": int(min_samples), "dbscan_clusters": int(labels.max(initial=-1)) + 1,
             "unreliable_images": int(((labels >= 0) & (filtered < 0)).sum()), "eps_search": search,
             "knn": describe_method(knn, features, knn_nprobe), "seconds": {"total": time.perf_counter() - start}}
    return filtered, stats


__all__ = ["EPS_SELECTIONS", "adaptive_pseudo_labels", "cluster_intersections", "dbscan_labels", "eps_from_distances",
           "kth_neighbour_distances", "reliable_labels"]
