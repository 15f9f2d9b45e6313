import numpy as np
import pytest

from hhcl.retrieval.inspection_page import cluster_view, merges_and_splits, size_histogram


def test_cluster_view_majority_purity_and_borders_on_a_hand_example():
    labels = np.array([0, 0, 0, 1, 1, -1, 2])
    cameras = np.array([1, 2, 1, 3, 3, 1, 2])
    identities = np.array([7, 7, 5, 4, -1, 7, -1])
    view = cluster_view(labels, cameras, identities)
    assert view.sizes.tolist() == [3, 2, 1]
    assert view.camera_counts.tolist() == [2, 1, 1]
    assert view.majority.tolist() == [7, 4, -1]
    assert view.purity[:2] == pytest.approx([2 / 3, 1.0]) and np.isnan(view.purity[2])
    # green for the majority, red for another identity, grey when unknown, for outliers too
    assert view.borders.tolist() == ["majority", "majority", "other", "majority", "unknown", "unknown", "unknown"]


def test_a_tie_goes_to_the_smallest_identity():
    view = cluster_view(np.array([0, 0]), np.array([0, 1]), np.array([9, 3]))
    assert view.majority.tolist() == [3] and view.purity[0] == pytest.approx(0.5)
    assert view.borders.tolist() == ["other", "majority"]


def test_merges_and_splits_count_parts_of_two_images_or_more():
    previous = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, -1])
    current = np.array([5, 5, 5, 5, 5, 1, 1, 2, 2, 5, 5])
    merges, splits = merges_and_splits(previous, current)
    # current 5 holds 3 of previous 0, 2 of previous 1 (and single images of 3 and an outlier: not parts)
    assert merges == [(5, [0, 1])]
    assert splits == [(2, [1, 2])]
    assert merges_and_splits(previous, np.full(11, -1)) == ([], [])


def test_size_histogram_bins_from_the_smallest_used_to_the_largest():
    assert size_histogram([2, 2, 4, 7, 60]) == [("2", 2), ("3", 0), ("4", 1), ("5", 0), ("6-10", 1), ("11-20", 0),
                                                 ("21-50", 0), ("51-100", 1)]
    assert size_histogram([1000]) == [("501+", 1)]
    assert size_histogram([]) == []
