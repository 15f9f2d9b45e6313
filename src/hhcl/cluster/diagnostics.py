"""How two labellings of the same images agree, counted over pairs of images.

    scores = pair_scores(pseudo_labels, true_ids)   # precision, recall, F-score of "same cluster"
    pair_scores(labels_epoch_2, labels_epoch_1)["f_score"]   # stability between epochs, no label used

A pair of images is *predicted together* when both carry the same label ``>= 0`` (an outlier,
``-1``, is together with nothing) and *truly together* when both carry the same reference id
``>= 0``. Precision is the fraction of predicted pairs that are true pairs: low precision means
merged identities. Recall is the fraction of true pairs that are predicted: low recall means split
identities, or images left out as outliers. The counts come from the contingency table of the two
labellings, so the cost is O(N log N), not O(N^2).
"""

from __future__ import annotations

import numpy as np


def _pairs(counts: np.ndarray) -> int:
    counts = counts.astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _as_labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-d integer array, got shape {array.shape} and dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def pair_counts(labels, reference) -> dict[str, int]:
    """Pairs together in ``labels``, in ``reference``, and in both; ``(N,)`` integer arrays, ``-1`` = none."""
    labels = _as_labels(labels, "labels")
    reference = _as_labels(reference, "reference")
    if labels.shape != reference.shape:
        raise ValueError(f"labels {labels.shape} and reference {reference.shape} must have the same length")
    predicted = _pairs(np.unique(labels[labels >= 0], return_counts=True)[1])
    true = _pairs(np.unique(reference[reference >= 0], return_counts=True)[1])
    both_known = (labels >= 0) & (reference >= 0)
    joint = np.stack([labels[both_known], reference[both_known]], axis=1)
    common = _pairs(np.unique(joint, axis=0, return_counts=True)[1]) if len(joint) else 0
    return {"predicted_pairs": predicted, "true_pairs": true, "common_pairs": common}


def pair_scores(labels, reference) -> dict[str, float | int]:
    """Pair precision, recall and F-score of ``labels`` against ``reference`` (both ``(N,)`` int).

    With no predicted pair the precision is 1 (nothing wrong was claimed); with no true pair the
    recall is 1 (nothing was missed). The F-score is symmetric in its two arguments, so it also
    measures how stable clusters are from one epoch to the next without any ground truth.
    """
    counts = pair_counts(labels, reference)
    precision = counts["common_pairs"] / counts["predicted_pairs"] if counts["predicted_pairs"] else 1.0
    recall = counts["common_pairs"] / counts["true_pairs"] if counts["true_pairs"] else 1.0
    f_score = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f_score": f_score, **counts}


__all__ = ["pair_counts", "pair_scores"]
