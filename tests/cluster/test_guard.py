"""The label-free guard's statistics and decision (hhcl.cluster.guard)."""

import numpy as np
import pytest

from hhcl.cluster.guard import (
    clustered_share,
    cross_camera_share,
    guard_decision,
    guard_statistics,
    neighbourhood_drift,
    own_neighbours,
)
from hhcl.config import GuardConfig


def test_clustered_share_counts_only_clusters_of_two_or_more():
    assert clustered_share([0, 0, 1, -1, 2, 2, 2, -1]) == pytest.approx(5 / 8)
    assert clustered_share([-1, -1]) == 0.0
    assert clustered_share([]) == 0.0


def test_cross_camera_share_needs_a_source_with_two_cameras():
    labels = [0, 0, 1, 1, -1, 2, 2]
    cameras = [0, 1, 0, 0, 1, 1, 1]
    # cluster 0 spans cameras 0 and 1; clusters 1 and 2 stay in one camera
    assert cross_camera_share(labels, cameras) == pytest.approx(2 / 6)
    # one camera per source: nothing to span, no statistic
    assert cross_camera_share(labels, cameras, sources=cameras) is None
    assert cross_camera_share([-1, -1], [0, 1]) == 0.0


def test_neighbourhood_drift_is_the_share_of_neighbours_replaced():
    initial = np.array([[1, 2], [0, 2], [0, 1], [0, 1]])
    assert neighbourhood_drift(initial, initial) == 0.0
    moved = np.array([[2, 1], [2, 0], [0, 3], [1, 0]])  # order does not matter; row 2 swapped 1 for 3
    assert neighbourhood_drift(moved, initial) == pytest.approx(1 / 8)
    with pytest.raises(ValueError):
        neighbourhood_drift(initial[:, :1], initial)


def test_own_neighbours_leave_the_row_itself_out():
    ranked = np.array([[0, 3, 2], [2, 1, 0], [2, 0, 1], [3, 0, 1]])
    np.testing.assert_array_equal(own_neighbours(ranked, 2), [[3, 2], [2, 0], [0, 1], [0, 1]])


def test_the_decision_names_every_reason_to_hold():
    guard = GuardConfig(enabled=True)
    strong = guard_statistics([0, 0, 1, 1], [0, 1, 0, 1], eps_stability=0.9, drift=0.1)
    assert guard_decision(strong, guard) == ("train", [])
    weak = guard_statistics([0, 0, -1, -1, -1, -1, -1, -1, -1, -1], [0] * 5 + [1] * 5, eps_stability=0.3, drift=0.9)
    decision, reasons = guard_decision(weak, guard)
    assert decision == "hold"
    assert len(reasons) == 4
    assert "20% of the images clustered" in reasons[0]
    assert "cross-camera" in reasons[1] and "eps" in reasons[2] and "drifted" in reasons[3]


def test_epoch_stability_compares_with_the_previous_labels():
    stats = guard_statistics([0, 0, 1, 1], [0, 0, 0, 0], previous_labels=[5, 5, 6, 6])
    assert stats["epoch_stability"] == 1.0
    assert guard_statistics([0, 0, 1, 1], [0, 0, 0, 0])["epoch_stability"] is None


def test_single_camera_sources_do_not_count_against_cross_camera_support():
    labels = [0, 0, 1, 1, 2, 2]
    cameras = [0, 1, 2, 2, 3, 3]
    sources = [0, 0, 1, 1, 2, 2]  # source 0 has two cameras, the others one each
    assert cross_camera_share(labels, cameras, sources) == 1.0
