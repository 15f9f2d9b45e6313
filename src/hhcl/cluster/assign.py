"""One epoch's pseudo-labels: every labelling policy, in one place, in the order it applies.

    assignment = assign_pseudo_labels(features, cameras, sources, config.cluster, config.guard,
                                      previous_labels=..., initial_neighbours=...)
    assignment.labels        # (N,) int64, -1 = outlier: the pseudo-identities
    assignment.train_labels  # what the memory and the sampler use (outliers as instances, or -1)
    assignment.decision      # "train" or "hold" (the guard's), with assignment.reasons

The steps, each switched by a key of ``cluster``:

1. the features clustered on: the model's own, or camera-centred (``camera_centering``, with each
   camera's mean shrunk towards the pool's, ``camera_prior_images``; :mod:`hhcl.cluster.camera`);
2. k-reciprocal Jaccard distance and DBSCAN at ``eps`` (:mod:`hhcl.cluster.pseudo_labels`), or
   with eps chosen per epoch and unreliable images dropped (:mod:`hhcl.cluster.reliability`);
3. loose clusters dissolved (``min_compactness``): a cluster whose members are much less alike
   than each is to its nearest neighbour is a chain of different people, not one;
4. few-shot pairs (``pair_outliers``): two outliers that are each other's nearest neighbour in
   another camera (in a folder of several cameras; none in a single-camera folder) become a
   pseudo-identity of two, so that pools of two images a person still give positives, and
   positives that teach the cross-camera match rather than a camera's near-duplicates;
5. no pseudo-identity across two sources (``separate_sources``; pooled folders share nobody);
6. the clustering ensemble (``ensemble_eps``; :mod:`hhcl.cluster.ensemble`): the same features
   clustered at several eps besides, on one Jaccard graph, for the memory's extra terms, and
   which images nest from the finest clustering to the coarsest; the labels above stay the
   pseudo-identities (sampler, guard, main memory);
7. the guard (``guard.enabled``; :mod:`hhcl.cluster.guard`): label-free statistics and the
   decision to train on these labels or not;
8. outliers as one-image identities (``outliers: instances``) or dropped.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from hhcl.cluster.guard import (
    guard_decision,
    guard_statistics,
    in_multi_camera_source,
    neighbourhood_drift,
    own_neighbours,
)
from hhcl.cluster.pseudo_labels import cluster_statistics, outliers_as_instances, split_clusters_by_group

log = logging.getLogger("hhcl")


@dataclass
class Assignment:
    """One epoch's labels and what decided them."""

    labels: np.ndarray
    train_labels: np.ndarray
    stats: dict = field(default_factory=dict)
    decision: str = "train"
    reasons: list[str] = field(default_factory=list)
    initial_neighbours: np.ndarray | None = None  # the starting model's neighbour lists (the guard's drift)
    error: str | None = None  # no cluster at all, without a guard to hold: why, and what to try
    # cluster.ensemble_eps: (G, N) labels at each eps (ascending, stats["ensemble"]["eps"]), -1 outliers,
    # and (N,) whether each image's labels nest from the finest to the coarsest (hhcl.cluster.ensemble)
    ensemble_labels: np.ndarray | None = None
    ensemble_nested: np.ndarray | None = None

    @property
    def num_clusters(self) -> int:
        return int(self.labels.max()) + 1 if (self.labels >= 0).any() else 0


def identity_labels(pids) -> np.ndarray:
    """``(N,)`` labels ``0..C-1`` from true identities (``train.supervised``); unknown (``< 0``) stay ``-1``."""
    pids = np.asarray(pids, dtype=np.int64)
    labels = np.full(len(pids), -1, dtype=np.int64)
    known = pids >= 0
    _, labels[known] = np.unique(pids[known], return_inverse=True)
    return labels


def ranked_neighbours(features, k: int) -> np.ndarray:
    """``(N, min(k, N))`` each row's neighbours ranked by similarity (itself among them), for the helpers below."""
    from hhcl.cluster.knn import nearest_neighbours

    return nearest_neighbours(features, k=min(k, len(features))).indices


def nearest_other(features, ranked: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(index, similarity)`` of each row's nearest other row, ``(N,)`` each (L2-normalised ``(N, D)`` features);
    ``ranked``: the rows' ranked neighbour lists when already computed (:func:`ranked_neighbours`)."""
    features = torch.as_tensor(features).float()
    n = features.shape[0]
    if n < 2:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
    if ranked is None:
        ranked = ranked_neighbours(features, 3)
    nearest = own_neighbours(ranked, 1)[:, 0]
    similarity = (features * features[torch.from_numpy(nearest)]).sum(dim=1).numpy()
    return nearest, similarity


def cluster_compactness(features, labels, nearest_similarity) -> np.ndarray:
    """``(C,)`` each cluster's mean pairwise cosine similarity over its members' mean nearest-neighbour similarity.

    A cluster of one person is about as tight as its members' own nearest pairs (close to 1); a
    chain that DBSCAN grew through density links between different people has members each close
    to a neighbour, but far from each other (well below 1). The ratio is relative to the pool's own
    density, so it needs no threshold in units of distance.
    """
    features = torch.as_tensor(features).float()
    labels = np.asarray(labels, dtype=np.int64)
    num_clusters = int(labels.max(initial=-1)) + 1
    if num_clusters == 0:
        return np.zeros(0)
    clustered = np.flatnonzero(labels >= 0)
    sums = features.new_zeros(num_clusters, features.shape[1]).index_add_(
        0, torch.from_numpy(labels[clustered]), features[clustered])
    sizes = np.bincount(labels[clustered], minlength=num_clusters).astype(np.float64)
    squared = (sums.double() ** 2).sum(dim=1).numpy()
    mean_pair = np.where(sizes > 1, (squared - sizes) / np.maximum(sizes * (sizes - 1), 1), 1.0)
    neighbour = np.bincount(labels[clustered], weights=np.asarray(nearest_similarity, dtype=np.float64)[clustered],
                            minlength=num_clusters) / np.maximum(sizes, 1)
    return mean_pair / np.maximum(neighbour, 1e-6)


def dissolve_loose_clusters(labels, compactness, min_compactness: float) -> np.ndarray:
    """``labels`` with the clusters below ``min_compactness`` made outliers, the others renumbered ``0..C'-1``."""
    labels = np.asarray(labels, dtype=np.int64)
    kept = np.flatnonzero(np.asarray(compactness) >= min_compactness)
    result = np.full(labels.shape, -1, dtype=np.int64)
    members = np.isin(labels, kept) & (labels >= 0)
    result[members] = np.searchsorted(kept, labels[members])
    return result


CROSS_CAMERA_SEARCH = 50  # neighbours searched for the nearest one in another camera


def nearest_in_other_camera(features, cameras, sources, ranked: np.ndarray | None = None) -> np.ndarray:
    """``(N,)`` each image's nearest neighbour in another camera of its own source (-1 when none is among
    its nearest ``CROSS_CAMERA_SEARCH``, and for every image of a single-camera source).

    A pair is a positive that teaches the cross-camera match. Within one camera, an image's mutual
    nearest neighbour is most often the next frame of its own track, or a look-alike in the same
    background: nothing to learn, or the wrong thing. Such sources keep DBSCAN's clusters only.
    ``ranked``: the rows' ranked neighbour lists (:func:`ranked_neighbours`), searched as far as they go."""
    cameras = np.asarray(cameras, dtype=np.int64)
    sources = np.asarray(sources, dtype=np.int64)
    n = cameras.shape[0]
    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    if ranked is None:
        ranked = ranked_neighbours(features, CROSS_CAMERA_SEARCH + 1)
    multi_camera = in_multi_camera_source(cameras, sources)
    rows = np.arange(n)[:, None]
    allowed = (ranked != rows) & (ranked >= 0)
    allowed &= multi_camera[:, None] & (sources[ranked] == sources[:, None]) & (cameras[ranked] != cameras[:, None])
    first = allowed.argmax(axis=1)
    found = allowed[np.arange(n), first]
    return np.where(found, ranked[np.arange(n), first], -1)


def mutual_neighbour_pairs(features, labels, nearest: np.ndarray | None = None) -> np.ndarray:
    """``labels`` where two outliers that are each other's nearest neighbour form a new pseudo-identity.

    ``features``: ``(N, D)`` L2-normalised (those clustered on); ``nearest``: each row's nearest
    other row when already known. New ids follow the existing ones, in order of the pair's first
    image. A mutual nearest neighbour is the tightest, parameter-free pairing there is: it asks no
    distance threshold, and each image joins at most one pair.
    """
    labels = np.array(labels, dtype=np.int64)
    n = labels.shape[0]
    if n < 2 or not (labels < 0).any():
        return labels
    if nearest is None:
        nearest, _ = nearest_other(features)
    rows = np.arange(n)
    valid = nearest >= 0
    partner = np.where(valid, nearest, 0)
    pair = valid & (nearest[partner] == rows) & (rows < partner) & (labels < 0) & (labels[partner] < 0)
    first = np.flatnonzero(pair)
    new_ids = labels.max(initial=-1) + 1 + np.arange(first.size)
    labels[first] = new_ids
    labels[partner[first]] = new_ids
    return labels


def no_cluster_message(features, cluster) -> str:
    """Why DBSCAN found nothing, with the eps that would have clustered half the images."""
    from hhcl.cluster import jaccard_distance
    from hhcl.cluster.reliability import kth_neighbour_distances

    distances = jaccard_distance(features, k1=cluster.k1, k2=cluster.k2)
    neighbour_distance = kth_neighbour_distances(distances, cluster.min_samples - 1)
    spread = {f"q{int(p * 100)}": float(np.quantile(neighbour_distance, p)) for p in (0.1, 0.5, 0.9)}
    suggestion = float(np.quantile(neighbour_distance, 0.5)) if len(neighbour_distance) else cluster.eps
    return (f"DBSCAN found no cluster among {features.shape[0]} training images with cluster.eps = {cluster.eps} "
            f"and min_samples = {cluster.min_samples}: the Jaccard distance to each image's "
            f"{max(cluster.min_samples - 1, 1)}th neighbour has quantiles "
            + ", ".join(f"{name} {value:.3f}" for name, value in spread.items())
            + f"; try --set cluster.eps={math.ceil(suggestion * 100) / 100:.2f}")


def _dbscan(features, cluster, progress: bool) -> tuple[np.ndarray, dict]:
    from hhcl.cluster import pseudo_labels

    if cluster.eps_candidates or cluster.eps_quantile is not None or cluster.reliability_margin > 0:
        from hhcl.cluster.reliability import adaptive_pseudo_labels

        labels, stats = adaptive_pseudo_labels(
            features, eps=cluster.eps, min_samples=cluster.min_samples, k1=cluster.k1, k2=cluster.k2,
            eps_quantile=cluster.eps_quantile, eps_candidates=cluster.eps_candidates,
            reliability_margin=cluster.reliability_margin, reliability_threshold=cluster.reliability_threshold,
            eps_selection=cluster.eps_selection, knn=cluster.knn, knn_nprobe=cluster.knn_nprobe or None)
        log.info("eps %.3f, %d DBSCAN clusters, %d unreliable images left out", stats["eps"],
                 stats["dbscan_clusters"], stats["unreliable_images"])
    else:
        labels, stats = pseudo_labels(features, eps=cluster.eps, min_samples=cluster.min_samples,
                                      k1=cluster.k1, k2=cluster.k2, knn=cluster.knn, progress=progress,
                                      knn_nprobe=cluster.knn_nprobe or None)
    log.info("pseudo-label kNN: %s", stats["knn"])
    return np.asarray(labels, dtype=np.int64), stats


def _ensemble(clustered_on, sources, cluster) -> tuple[np.ndarray, np.ndarray, dict]:
    """The ensemble's ``(G, N)`` labels at each eps (ascending; cut by ``sources`` unless None), the ``(N,)``
    nested images, and its statistics."""
    from hhcl.cluster.ensemble import labels_at_eps, nested_images

    tick = time.perf_counter()
    eps_values = sorted(float(eps) for eps in cluster.ensemble_eps)
    labels_by_eps = labels_at_eps(clustered_on, eps_values, cluster.min_samples, cluster.k1, cluster.k2, cluster.knn,
                                  cluster.knn_nprobe or None)
    if sources is not None:
        labels_by_eps = np.stack([split_clusters_by_group(labels, sources) for labels in labels_by_eps])
    nested = nested_images(labels_by_eps)
    clustered = (labels_by_eps >= 0).any(axis=0)
    stats = {"eps": eps_values, "num_clusters": [int(labels.max(initial=-1)) + 1 for labels in labels_by_eps],
             "num_outliers": [int((labels < 0).sum()) for labels in labels_by_eps],
             "not_nested": int((clustered & ~nested).sum()), "seconds": time.perf_counter() - tick}
    log.info("clustering ensemble: %s; %d images do not nest from eps %g to %g and are left out of its terms",
             ", ".join(f"eps {eps:g} {count} clusters" for eps, count in zip(eps_values, stats["num_clusters"])),
             stats["not_nested"], eps_values[0], eps_values[-1])
    return labels_by_eps, nested, stats


def assign_pseudo_labels(features, cameras, sources, cluster, guard, *, previous_labels=None,
                         initial_neighbours=None, progress: bool = False) -> Assignment:
    """Pseudo-labels of the ``(N, D)`` L2-normalised ``features`` (the model's own) of one epoch.

    ``cameras`` and ``sources`` are ``(N,)`` integers (the pooled folder of each image; zeros for
    one source). ``cluster`` and ``guard`` are the config's sections. ``previous_labels`` (last
    epoch's) and ``initial_neighbours`` (the first epoch's neighbour lists, returned in the
    assignment) feed the guard's stability and drift.
    """
    start = time.perf_counter()
    features = torch.as_tensor(features).float()
    cameras = np.asarray(cameras, dtype=np.int64)
    sources = np.asarray(sources, dtype=np.int64)
    clustered_on = features
    extra: dict = {}
    if cluster.camera_centering:
        from hhcl.cluster.camera import camera_centered_features

        clustered_on, own_weight = camera_centered_features(features, cameras, cluster.camera_prior_images)
        few = int((own_weight < 0.5).sum())
        extra["cameras_mostly_uncentred"] = few
        if few:
            log.info("%d of %d cameras hold fewer than %g images: their mean is shrunk towards the pool's, so they "
                     "are mostly left uncentred", few, len(own_weight), cluster.camera_prior_images)

    labels, stats = _dbscan(clustered_on, cluster, progress)
    stats = {**stats, **extra}
    # one neighbour search on the clustered features serves the loose-cluster test and the pairs
    ranked = None
    if cluster.pair_outliers or (cluster.min_compactness > 0 and (labels >= 0).any()):
        ranked = ranked_neighbours(clustered_on, CROSS_CAMERA_SEARCH + 1 if cluster.pair_outliers else 3)
    if cluster.min_compactness > 0 and (labels >= 0).any():
        _, nearest_similarity = nearest_other(clustered_on, ranked)
        compactness = cluster_compactness(clustered_on, labels, nearest_similarity)
        loose = compactness < cluster.min_compactness
        stats["loose_clusters"] = int(loose.sum())
        stats["loose_images"] = int(np.isin(labels, np.flatnonzero(loose)).sum())
        labels = dissolve_loose_clusters(labels, compactness, cluster.min_compactness)
        if loose.any():
            log.info("%d loose clusters (%d images) dissolved: their members are far less alike than each is to its "
                     "nearest neighbour (a chain of different people)", stats["loose_clusters"], stats["loose_images"])
    if cluster.pair_outliers:
        before = int(labels.max(initial=-1)) + 1
        labels = mutual_neighbour_pairs(clustered_on, labels,
                                        nearest_in_other_camera(clustered_on, cameras, sources, ranked))
        stats["mutual_pairs"] = int(labels.max(initial=-1)) + 1 - before
        log.info("%d pseudo-identities of two from mutual nearest neighbours among the outliers", stats["mutual_pairs"])
    several_sources = cluster.separate_sources and len(np.unique(sources)) > 1
    if several_sources:
        labels = split_clusters_by_group(labels, sources)
    stats.update(cluster_statistics(labels))

    assignment = Assignment(labels=labels, train_labels=labels, stats=stats)
    if cluster.ensemble_eps:
        assignment.ensemble_labels, assignment.ensemble_nested, stats["ensemble"] = _ensemble(
            clustered_on, sources if several_sources else None, cluster)
    if guard.enabled:
        tick = time.perf_counter()
        from hhcl.cluster.knn import nearest_neighbours

        k = min(guard.neighbours, max(len(labels) - 1, 1))
        current = own_neighbours(nearest_neighbours(features, k=min(k + 1, len(labels))).indices, k)
        if initial_neighbours is None or np.shape(initial_neighbours) != current.shape:
            initial_neighbours = current
        eps_stability = None
        if "unreliable_images" in stats:
            reliable = int((labels >= 0).sum())
            eps_stability = reliable / max(reliable + int(stats["unreliable_images"]), 1)
        statistics = guard_statistics(labels, cameras, sources, previous_labels=previous_labels,
                                      eps_stability=eps_stability,
                                      drift=neighbourhood_drift(current, initial_neighbours))
        assignment.decision, assignment.reasons = guard_decision(statistics, guard)
        assignment.initial_neighbours = np.asarray(initial_neighbours)
        stats["guard"] = {**statistics, "decision": assignment.decision, "reasons": list(assignment.reasons),
                          "seconds": time.perf_counter() - tick}
    if not (labels >= 0).any():
        if guard.enabled:
            assignment.decision = "hold"
            if not assignment.reasons:
                assignment.reasons = ["no pseudo-identity formed"]
        else:
            assignment.error = no_cluster_message(clustered_on, cluster)
    elif cluster.outliers == "instances":
        assignment.train_labels = outliers_as_instances(labels)
    if assignment.error is None and int(assignment.train_labels.max(initial=-1)) == 0:
        # one pseudo-identity: every sample is its positive and there is no negative, the loss is 0
        assignment.decision = "hold"
        assignment.reasons = [*assignment.reasons, "all the clustered images form one pseudo-identity: nothing to "
                              "contrast (lower cluster.eps)"]
    stats["assign_seconds"] = time.perf_counter() - start
    return assignment


__all__ = ["Assignment", "assign_pseudo_labels", "cluster_compactness", "dissolve_loose_clusters", "identity_labels",
           "mutual_neighbour_pairs", "nearest_in_other_camera", "nearest_other", "no_cluster_message", "ranked_neighbours"]
