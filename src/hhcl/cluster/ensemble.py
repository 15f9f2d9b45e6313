"""A multi-granularity clustering ensemble, after MGCE-HCL (Sun, Li and Li, ACPR 2021): the same
features clustered at several eps, and the images whose labels nest from the finest clustering to
the coarsest. Each granularity then gets a memory and a loss term of its own (hhcl.memory.EpochMemory);
where the paper weights positive pairs by their priority, an image that does not nest is simply
left out of the ensemble's terms.

    labels_by_eps = labels_at_eps(features, [0.5, 0.6, 0.7])     # (G, N) int64, -1 = outlier
    reliable = nested_images(labels_by_eps)                     # (N,) bool

One Jaccard graph serves every eps: the sparse k-reciprocal distance is computed once, with every
pair up to the largest eps (:func:`hhcl.cluster.jaccard_distance`), and DBSCAN runs on it at each
eps (:func:`hhcl.cluster.reliability.dbscan_labels`), which ignores the pairs beyond its own eps.
The labels at one eps are those :func:`hhcl.cluster.pseudo_labels` gives at that eps.

Nesting. DBSCAN on one graph at a growing eps can only merge: a core point stays a core point and
two core points once linked stay linked, so a fine cluster's core lands in a single coarse cluster.
What can break the nesting is an image on the border between two clusters, which DBSCAN hands to
whichever cluster it expands first, and a cluster cut apart afterwards (pooled sources). Such an
image is exactly the one whose pseudo-identity is in doubt. The test is per image, from each
granularity to the next coarser one: the image must land in the coarse cluster that receives more
than half of its fine cluster (:func:`nesting_shares` above ``NESTING_MAJORITY``). A majority
rather than "all members" singles out the image that changed sides instead of discarding its whole
fine cluster with it; a fine cluster split evenly keeps none of its images, since nothing says
which half moved. An outlier at the finer eps is a cluster of its own and nests anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hhcl.cluster.jaccard import jaccard_distance
from hhcl.cluster.reliability import cluster_intersections, dbscan_labels

NESTING_MAJORITY = 0.5  # an image must follow strictly more than this share of its fine cluster


def labels_at_eps(features, eps_values: Sequence[float], min_samples: int = 4, k1: int = 30, k2: int = 6,
                  knn: str = "auto", knn_nprobe: int | None = None) -> np.ndarray:
    """``(G, N)`` int64 DBSCAN labels (-1 outliers) of the ``(N, D)`` L2-normalised ``features`` at
    each of the ``G`` ``eps_values``, in their order, from one k-reciprocal Jaccard graph."""
    eps_values = [float(eps) for eps in eps_values]
    num_images = len(features)
    if not eps_values:
        return np.zeros((0, num_images), dtype=np.int64)
    distances = jaccard_distance(features, k1=k1, k2=k2, max_distance=max(eps_values), knn=knn,
                                 knn_nprobe=knn_nprobe)
    return np.stack([dbscan_labels(distances, eps, min_samples) for eps in eps_values])


def nesting_shares(fine, coarse) -> np.ndarray:
    """``(N,)`` for each image, the share of its cluster in ``fine`` that lies in its cluster in ``coarse``.

    1 when its fine cluster nests whole in its coarse cluster; an outlier counts as a cluster of
    its own on either side (an outlier at the finer eps always nests).
    """
    intersection, size, _ = cluster_intersections(np.asarray(fine, dtype=np.int64), np.asarray(coarse, dtype=np.int64))
    return intersection / size


def nested_images(labels_by_eps, majority: float = NESTING_MAJORITY) -> np.ndarray:
    """``(N,)`` bool: the images that, at each step from one granularity to the next coarser one,
    land in the coarse cluster holding more than ``majority`` of their fine cluster.

    ``labels_by_eps``: ``(G, N)`` labels ordered from the finest (smallest eps) to the coarsest.
    """
    labels_by_eps = np.asarray(labels_by_eps, dtype=np.int64)
    nested = np.ones(labels_by_eps.shape[1], dtype=bool)
    for fine, coarse in zip(labels_by_eps[:-1], labels_by_eps[1:]):
        nested &= nesting_shares(fine, coarse) > majority
    return nested


__all__ = ["NESTING_MAJORITY", "labels_at_eps", "nested_images", "nesting_shares"]
