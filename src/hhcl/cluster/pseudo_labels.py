"""Pseudo-identities for an epoch: DBSCAN on the sparse k-reciprocal Jaccard distance."""

from __future__ import annotations

import numpy as np
from sklearn.cluster import DBSCAN

from hhcl.cluster.jaccard import PhaseClock, close_pairs, neighbourhood_weights_of, self_overlaps, symmetric_graph
from hhcl.cluster.knn import describe_method
from hhcl.errors import HHCLError

PHASES = ("knn", "reciprocal_sets", "weights", "query_expansion", "jaccard", "dbscan")


def cluster_statistics(labels: np.ndarray) -> dict:
    """num_clusters, num_outliers and size_quantiles (min, p25, median, p75, max; empty when no
    cluster) of a label array (N,) with -1 for outliers."""
    clustered = labels[labels >= 0]
    sizes = np.bincount(clustered) if clustered.size else np.zeros(0, dtype=np.int64)
    quantiles = {}
    if sizes.size:
        values = np.quantile(sizes, [0.0, 0.25, 0.5, 0.75, 1.0])
        quantiles = dict(zip(("min", "p25", "median", "p75", "max"), (float(v) for v in values)))
    return {
        "num_clusters": int(sizes.size),
        "num_outliers": int((labels < 0).sum()),
        "size_quantiles": quantiles,
    }


def outliers_as_instances(labels) -> np.ndarray:
    """``(N,)`` labels where each outlier (``-1``) becomes a pseudo-identity of its own.

    The clusters keep their ids ``0..C-1``; the outliers take ``C, C+1, ...`` in image order.
    Trained on, a one-image identity is contrasted against every cluster and every other
    outlier instead of being left out of the epoch (SpCL's un-clustered instances).
    """
    labels = np.array(labels, dtype=np.int64)
    outliers = labels < 0
    labels[outliers] = labels.max(initial=-1) + 1 + np.arange(int(outliers.sum()))
    return labels


def split_clusters_by_group(labels, groups, min_size: int = 2) -> np.ndarray:
    """``(N,)`` labels where no cluster spans two groups: each cluster is cut along ``groups``.

    ``groups`` (``(N,)`` integers) marks images that can never show the same person as images of
    another group, such as crops from separate sites pooled into one training set. A piece with
    fewer than ``min_size`` images becomes an outlier (``-1``). Clusters are renumbered
    ``0..C'-1`` in order of (old cluster, group).
    """
    labels = np.asarray(labels, dtype=np.int64)
    groups = np.asarray(groups, dtype=np.int64)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(f"labels {labels.shape} and groups {groups.shape} must be (N,) arrays of one length")
    result = np.full(labels.shape, -1, dtype=np.int64)
    clustered = np.flatnonzero(labels >= 0)
    if not len(clustered):
        return result
    pieces, piece_of = np.unique(np.stack([labels[clustered], groups[clustered]], axis=1), axis=0,
                                 return_inverse=True)
    piece_of = piece_of.reshape(-1)
    large = np.bincount(piece_of, minlength=len(pieces)) >= min_size
    new_id = np.cumsum(large) - 1
    keep = large[piece_of]
    result[clustered[keep]] = new_id[piece_of[keep]]
    return result


def pseudo_labels(
    features,
    eps: float,
    min_samples: int = 4,
    k1: int = 30,
    k2: int = 6,
    knn: str = "auto",
    block_size: int | None = None,
    progress: bool = False,
    knn_nprobe: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Cluster the training images into pseudo-identities.

    features: (N, D) L2-normalised, torch (CPU or CUDA) or numpy; float16/32/64.
    eps: DBSCAN radius on the Jaccard distance, in (0, 1) (0.45 Market, 0.6 Duke in HHCL).
    min_samples: DBSCAN's core-point count, the image itself included.
    k1, k2, knn, block_size, progress, knn_nprobe: see hhcl.cluster.jaccard_distance.
    Returns (labels, stats): labels (N,) int64, 0..C-1, -1 for outliers; stats has num_images,
    num_clusters, num_outliers, size_quantiles, k1, k2, eps, min_samples, num_close_pairs,
    seconds (wall clock per phase of PHASES, plus total), cpu_seconds (the same in process
    CPU time, all threads) and knn (the search that ran, in words). Finding no cluster is not an error: every label is -1 and
    num_clusters is 0.
    """
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0 < eps < 1:
        raise HHCLError(
            f"eps={eps!r} must be a number in (0, 1): Jaccard distances lie in [0, 1] and 1 means "
            "no shared neighbour (HHCL uses 0.45 on Market, 0.6 on Duke)"
        )
    if isinstance(min_samples, bool) or not isinstance(min_samples, (int, np.integer)) or min_samples < 1:
        raise HHCLError(f"min_samples={min_samples!r} must be a positive integer (HHCL uses 4)")
    clock = PhaseClock()
    neighbourhoods = neighbourhood_weights_of(
        features, k1=k1, k2=k2, knn=knn, block_size=block_size, progress=progress, clock=clock, knn_nprobe=knn_nprobe
    )
    with clock.phase("jaccard"):
        rows, cols, distances = close_pairs(neighbourhoods.weights, float(eps), exact_distances=False)
    with clock.phase("dbscan"):
        num_images = neighbourhoods.weights.shape[0]
        # Rows sorted by distance, as scikit-learn would otherwise re-sort them one by one.
        # Stored zeros (duplicate images) stay: scikit-learn takes every stored entry as a
        # distance and every absent one as "not a neighbour".
        graph = symmetric_graph(
            num_images, rows, cols, distances, self_overlaps(neighbourhoods.weights), float(eps), sort_rows_by="value"
        )
        labels = DBSCAN(eps=float(eps), min_samples=int(min_samples), metric="precomputed").fit_predict(graph)
        labels = labels.astype(np.int64)
    seconds = {phase: clock.seconds[phase] for phase in PHASES}
    seconds["total"] = sum(seconds.values())
    cpu_seconds = {phase: clock.cpu_seconds[phase] for phase in PHASES}
    cpu_seconds["total"] = sum(cpu_seconds.values())

    stats = {
        "num_images": int(labels.shape[0]),
        **cluster_statistics(labels),
        "k1": neighbourhoods.k1,
        "k2": neighbourhoods.k2,
        "eps": float(eps),
        "min_samples": int(min_samples),
        "num_close_pairs": int(rows.shape[0]),
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "knn": describe_method(knn, features, knn_nprobe),
    }
    return labels, stats
