"""One epoch's pseudo-labels with every policy (hhcl.cluster.assign)."""

import logging

import numpy as np
import torch
from torch.nn import functional as F

from hhcl.cluster.assign import assign_pseudo_labels, identity_labels, mutual_neighbour_pairs
from hhcl.config import ClusterConfig, GuardConfig


def people(num_people: int, per_person: int, noise: float, seed: int = 0, dim: int = 32) -> tuple[torch.Tensor, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    centres = F.normalize(torch.randn(num_people, dim, generator=generator), dim=1)
    person = torch.arange(num_people).repeat_interleave(per_person)
    features = F.normalize(centres[person] + noise * torch.randn(len(person), dim, generator=generator), dim=1)
    return features, person.numpy()


def test_mutual_nearest_outliers_pair_up_and_clusters_keep_their_ids():
    features = F.normalize(torch.tensor([[1.0, 0.0, 0.0], [0.99, 0.1, 0.0], [0.0, 1.0, 0.0], [0.1, 0.99, 0.0],
                                         [0.0, 0.0, 1.0], [0.0, 0.6, 0.8]]), dim=1)
    labels = mutual_neighbour_pairs(features, [-1, -1, -1, -1, 0, -1])
    # 0-1 and 2-3 are mutual nearest neighbours; 5's nearest (3) is taken by 2; 4 keeps its cluster
    np.testing.assert_array_equal(labels, [1, 1, 2, 2, 0, -1])
    # an outlier whose mutual neighbour is clustered stays an outlier
    np.testing.assert_array_equal(mutual_neighbour_pairs(features, [0, -1, -1, -1, -1, -1])[:2], [0, -1])


def test_pairs_form_in_a_two_images_a_person_pool_where_dbscan_leaves_people_out():
    features, person = people(40, 2, noise=0.1)

    def people_found(pair_outliers: bool) -> tuple[int, dict]:
        cluster = ClusterConfig(eps=0.5, min_samples=4, k1=10, k2=3, pair_outliers=pair_outliers)
        assignment = assign_pseudo_labels(features, np.tile([0, 1], 40), np.zeros(80), cluster, GuardConfig())
        labels = assignment.labels
        return sum(labels[i] == labels[i + 1] >= 0 for i in range(0, 80, 2)), assignment.stats

    alone, _ = people_found(False)
    paired, stats = people_found(True)
    assert alone < 20 and paired == 40
    assert stats["mutual_pairs"] == 40 - alone


def test_a_one_image_camera_is_clustered_without_a_crash_and_said_so(caplog):
    features, person = people(20, 4, noise=0.1, seed=1)
    cameras = np.arange(80) % 2
    cameras[7] = 5  # a camera holding a single image
    cluster = ClusterConfig(eps=0.6, k1=10, k2=3, camera_centering=True)
    with caplog.at_level(logging.INFO, logger="hhcl"):
        assignment = assign_pseudo_labels(features, cameras, np.zeros(80), cluster, GuardConfig(enabled=True))
    assert assignment.stats["cameras_mostly_uncentred"] == 1
    assert "1 of 3 cameras hold fewer than 4 images" in caplog.text
    assert assignment.num_clusters >= 15 and assignment.decision == "train"
    assert assignment.stats["guard"]["cross_camera_share"] > 0.9


def test_the_guard_holds_when_no_pseudo_identity_forms():
    features = F.normalize(torch.randn(60, 32, generator=torch.Generator().manual_seed(3)), dim=1)
    cluster = ClusterConfig(eps=0.05, k1=10, k2=3)
    guarded = assign_pseudo_labels(features, np.zeros(60), np.zeros(60), cluster, GuardConfig(enabled=True))
    assert guarded.decision == "hold" and guarded.error is None
    assert "0% of the images clustered" in guarded.reasons[0]
    unguarded = assign_pseudo_labels(features, np.zeros(60), np.zeros(60), cluster, GuardConfig())
    assert unguarded.error is not None and "try --set cluster.eps=" in unguarded.error


def test_outliers_become_instances_only_in_the_training_labels():
    features, _ = people(10, 5, noise=0.2, seed=4)
    features = torch.cat([features, F.normalize(torch.randn(5, 32, generator=torch.Generator().manual_seed(5)), dim=1)])
    cluster = ClusterConfig(eps=0.6, k1=10, k2=3, outliers="instances")
    assignment = assign_pseudo_labels(features, np.zeros(55), np.zeros(55), cluster, GuardConfig())
    outliers = assignment.labels < 0
    assert outliers.any()
    assert (assignment.train_labels >= 0).all()
    assert len(np.unique(assignment.train_labels[outliers])) == outliers.sum()


def test_the_drift_is_measured_against_the_first_epochs_neighbours():
    features, _ = people(10, 5, noise=0.2, seed=6)
    cluster, guard = ClusterConfig(eps=0.6, k1=10, k2=3), GuardConfig(enabled=True)
    first = assign_pseudo_labels(features, np.zeros(50), np.zeros(50), cluster, guard)
    assert first.stats["guard"]["drift"] == 0.0 and first.initial_neighbours.shape == (50, 10)
    shuffled = features[torch.randperm(50, generator=torch.Generator().manual_seed(0))]
    later = assign_pseudo_labels(shuffled, np.zeros(50), np.zeros(50), cluster, guard, previous_labels=first.labels,
                                 initial_neighbours=first.initial_neighbours)
    assert later.stats["guard"]["drift"] > 0.5
    assert later.decision == "hold" and "drifted" in later.reasons[-1]


def test_identity_labels_renumber_known_identities():
    np.testing.assert_array_equal(identity_labels([7, 7, -1, 3]), [1, 1, -1, 0])


def test_in_a_folder_of_two_cameras_pairs_cross_the_cameras():
    from hhcl.cluster.assign import nearest_in_other_camera

    # each person: two near-identical images in camera 0, one further away in camera 1
    features, person = people(10, 3, noise=0.05, seed=7)
    cameras = np.tile([0, 0, 1], 10)
    nearest = nearest_in_other_camera(features, cameras, np.zeros(30))
    assert (cameras[nearest] != cameras).all()
    assert (person[nearest] == person).mean() >= 0.9
    # a single-camera source has no cross-camera match to teach: no pair
    assert (nearest_in_other_camera(features, np.zeros(30), np.zeros(30)) == -1).all()
    cluster = ClusterConfig(eps=0.05, k1=10, k2=3, pair_outliers=True)
    labels = assign_pseudo_labels(features, cameras, np.zeros(30), cluster, GuardConfig()).labels
    paired = labels >= 0
    assert paired.sum() >= 10
    for label in np.unique(labels[paired]):
        assert sorted(cameras[labels == label]) == [0, 1]


def test_one_pseudo_identity_is_held_back_even_without_the_guard():
    features, _ = people(1, 30, noise=0.05, seed=8)
    assignment = assign_pseudo_labels(features, np.zeros(30), np.zeros(30), ClusterConfig(eps=0.6, k1=10, k2=3),
                                      GuardConfig())
    assert assignment.num_clusters == 1
    assert assignment.decision == "hold" and "one pseudo-identity" in assignment.reasons[-1]


def test_cluster_knn_reaches_the_pseudo_labels_and_the_log(caplog):
    import pytest

    from hhcl.cluster.knn import faiss_available

    features, _ = people(30, 4, noise=0.1, seed=3)

    def assign(method: str, **policies):
        cluster = ClusterConfig(eps=0.6, k1=10, k2=3, knn=method, **policies)
        return assign_pseudo_labels(features, np.arange(120) % 2, np.zeros(120), cluster, GuardConfig())

    caplog.set_level(logging.INFO, logger="hhcl")
    by_matmul = assign("matmul")
    assert by_matmul.stats["knn"] == "matmul search (exact) on CPU"
    assert "pseudo-label kNN: matmul search (exact) on CPU" in caplog.messages
    assert assign("auto").stats["knn"].startswith("matmul search (exact) on CPU (knn auto: 120 images, approximate from 200,000; faiss ")
    if not faiss_available():
        pytest.skip("faiss is not installed: the faiss pass-through is not checked")
    by_faiss = assign("faiss")
    assert by_faiss.stats["knn"] == "faiss (IndexFlatIP, exact) on CPU"
    np.testing.assert_array_equal(by_faiss.labels, by_matmul.labels)
    # the reliability path (eps from the data) takes the method too
    reliable = assign("faiss", reliability_margin=0.02)
    assert reliable.stats["knn"] == "faiss (IndexFlatIP, exact) on CPU"
    np.testing.assert_array_equal(reliable.labels, assign("matmul", reliability_margin=0.02).labels)
