"""The label-free guard: is there enough pseudo-label signal in this pool to train on?

    statistics = guard_statistics(labels, cameras, sources, previous_labels=..., eps_stability=..., drift=...)
    decision, reasons = guard_decision(statistics, config.guard)   # "train" or "hold"

Self-training on pseudo-labels amplifies whatever they say. When they are mostly outliers, group
images only within one camera, or fall apart as soon as eps moves, the loss pulls wrong pairs
together and pushes true matches apart, and a good starting model gets worse. Every statistic here
comes from the training pool and the model's own features; no identity is read:

- ``clustered_share``: images in a pseudo-identity of two or more, over the pool;
- ``cross_camera_share``: clustered images whose pseudo-identity spans two or more cameras,
  counted in the sources (pooled folders) that have several cameras (None where none has). Re-ID is matching across cameras:
  clusters confined to one camera teach the camera's look, not the person;
- ``eps_stability``: the share of DBSCAN's clustered images that stay reliable when eps moves by
  the reliability margin (None without one);
- ``epoch_stability``: pair F-score between this epoch's pseudo-labels and the last one's (None
  on the first epoch; recorded, not a criterion: early epochs legitimately regroup);
- ``drift``: how far the features' own neighbourhoods have moved from the starting model's, the
  mean share of each image's ``k`` nearest neighbours that are no longer among its starting ones.

The decision is ``hold`` when a share falls below its minimum or the drift passes its maximum,
with one reason each; the trainer then makes no update for the epoch and ends the adaptation there
(the next clustering would see the same features). The features judged are those of the model the
last update made, so that update is undone too: the run keeps the last model whose own features
passed (the starting model when the first epoch holds). The last epoch's update has no next epoch
to judge it; ``guard.check_final`` judges it the same way after that epoch.
"""

from __future__ import annotations

import numpy as np

from hhcl.cluster.diagnostics import pair_scores


def clustered_share(labels) -> float:
    """Share of images whose label ``>= 0`` is shared with at least one other image."""
    labels = np.asarray(labels, dtype=np.int64)
    if labels.size == 0:
        return 0.0
    clustered = labels[labels >= 0]
    if clustered.size == 0:
        return 0.0
    counts = np.bincount(clustered)
    return float((counts[clustered] >= 2).sum() / labels.size)


def in_multi_camera_source(cameras, sources=None) -> np.ndarray:
    """``(N,)`` whether each image's source (pooled folder; one source when None) has two or more cameras."""
    cameras = np.asarray(cameras, dtype=np.int64)
    sources = np.zeros_like(cameras) if sources is None else np.asarray(sources, dtype=np.int64)
    if cameras.size == 0:
        return np.zeros(0, dtype=bool)
    _, source_index = np.unique(sources, return_inverse=True)
    distinct = np.unique(np.stack([source_index, cameras], axis=1), axis=0)
    return (np.bincount(distinct[:, 0], minlength=int(source_index.max()) + 1) >= 2)[source_index]


def cross_camera_share(labels, cameras, sources=None) -> float | None:
    """Share of clustered images whose cluster spans two or more cameras, counted in the sources that have
    two or more cameras (a single-camera folder has nothing to span); None when no source has two."""
    labels = np.asarray(labels, dtype=np.int64)
    cameras = np.asarray(cameras, dtype=np.int64)
    multi_camera = in_multi_camera_source(cameras, sources)
    if not multi_camera.any():
        return None
    clustered = np.flatnonzero((labels >= 0) & multi_camera)
    if clustered.size == 0:
        return 0.0
    cluster_camera = np.unique(np.stack([labels[clustered], cameras[clustered]], axis=1), axis=0)
    cameras_per_cluster = np.bincount(cluster_camera[:, 0], minlength=int(labels.max()) + 1)
    return float((cameras_per_cluster[labels[clustered]] >= 2).mean())


def neighbourhood_drift(neighbours: np.ndarray, initial_neighbours: np.ndarray) -> float:
    """Mean share of each row's neighbours (``(N, k)`` indices, self excluded) not among its initial ones."""
    neighbours = np.asarray(neighbours, dtype=np.int64)
    initial_neighbours = np.asarray(initial_neighbours, dtype=np.int64)
    if neighbours.shape != initial_neighbours.shape:
        raise ValueError(f"neighbour lists of shapes {neighbours.shape} and {initial_neighbours.shape} do not match")
    if neighbours.size == 0:
        return 0.0
    n, k = neighbours.shape
    # membership of each current neighbour in the row's initial list, by sorted search per row
    offset = np.arange(n, dtype=np.int64)[:, None] * (n + 1)
    initial = np.sort((initial_neighbours + offset).ravel())
    current = (neighbours + offset).ravel()
    position = np.clip(np.searchsorted(initial, current), 0, initial.size - 1)
    kept = initial[position] == current
    return float(1.0 - kept.mean())


def own_neighbours(neighbour_indices: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` the first ``k`` neighbours of each row other than the row itself (from ``(N, >k)`` ranked lists)."""
    indices = np.asarray(neighbour_indices, dtype=np.int64)
    rows = np.arange(indices.shape[0])[:, None]
    others = indices != rows
    # stable order of the non-self entries, then the first k of them
    order = np.argsort(~others, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1)[:, :k]


def guard_statistics(labels, cameras, sources=None, *, previous_labels=None, eps_stability: float | None = None,
                     drift: float = 0.0) -> dict:
    """The guard's label-free statistics of one epoch's pseudo-labels (``-1`` = outlier, before instances)."""
    labels = np.asarray(labels, dtype=np.int64)
    epoch_stability = None
    if previous_labels is not None and len(previous_labels) == len(labels):
        epoch_stability = float(pair_scores(labels, np.asarray(previous_labels, dtype=np.int64))["f_score"])
    return {
        "clustered_share": clustered_share(labels),
        "cross_camera_share": cross_camera_share(labels, cameras, sources),
        "eps_stability": eps_stability,
        "epoch_stability": epoch_stability,
        "drift": float(drift),
    }


def guard_decision(statistics: dict, guard) -> tuple[str, list[str]]:
    """``("train" | "hold", reasons)`` from :func:`guard_statistics` and a :class:`hhcl.config.GuardConfig`."""
    reasons = []
    if statistics["clustered_share"] < guard.min_clustered_share:
        reasons.append(f"{statistics['clustered_share']:.0%} of the images clustered, below {guard.min_clustered_share:.0%}")
    cross = statistics.get("cross_camera_share")
    if cross is not None and cross < guard.min_cross_camera_share:
        reasons.append(f"{cross:.0%} of the clustered images in cross-camera clusters, below "
                       f"{guard.min_cross_camera_share:.0%}")
    stability = statistics.get("eps_stability")
    if stability is not None and stability < guard.min_eps_stability:
        reasons.append(f"{stability:.0%} of the clusters stable when eps moves, below {guard.min_eps_stability:.0%}")
    if statistics.get("drift", 0.0) > guard.max_drift:
        reasons.append(f"neighbourhoods drifted {statistics['drift']:.0%} from the starting model's, above "
                       f"{guard.max_drift:.0%}")
    return ("hold" if reasons else "train"), reasons


def hold_message(reasons: list[str], kept_epochs: int, undone_epoch: int | None = None) -> str:
    """The one line a run prints when the guard holds it back (``undone_epoch``: the 1-based epoch whose
    update was undone because its model's features are the ones that failed)."""
    kept = "kept the starting model" if kept_epochs == 0 else f"kept the model of {kept_epochs} trained epochs"
    if undone_epoch is not None:
        kept = f"undid epoch {undone_epoch}'s update, whose features these are, and {kept}"
    return f"pseudo-labels too weak on this pool ({'; '.join(reasons)}): {kept}"


__all__ = ["clustered_share", "cross_camera_share", "in_multi_camera_source", "guard_decision", "guard_statistics", "hold_message", "neighbourhood_drift",
           "own_neighbours"]
