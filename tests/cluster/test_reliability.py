import numpy as np
import pytest
import torch
from scipy import sparse

from hhcl.cluster.reliability import (
    _overlaps,
    adaptive_pseudo_labels,
    dbscan_labels,
    eps_from_distances,
    kth_neighbour_distances,
    reliable_labels,
)
from hhcl.errors import HHCLError


def test_kth_neighbour_distances_ignore_the_diagonal_and_count_absent_as_one():
    # stored: the diagonal (0), 0-1 at 0.2, 0-2 at 0.5, 1-2 at 0.3
    rows = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    cols = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2])
    values = np.array([0.0, 0.2, 0.5, 0.2, 0.0, 0.3, 0.5, 0.3, 0.0])
    matrix = sparse.csr_matrix((values, (rows, cols)), shape=(3, 3))
    assert kth_neighbour_distances(matrix, 1) == pytest.approx([0.2, 0.2, 0.3])
    assert kth_neighbour_distances(matrix, 2) == pytest.approx([0.5, 0.3, 0.5])
    assert kth_neighbour_distances(matrix, 3) == pytest.approx([1.0, 1.0, 1.0])


def test_eps_from_distances_takes_the_quantile_inside_the_range():
    rows = np.array([0, 1, 1, 2, 2, 3])
    cols = np.array([1, 0, 2, 1, 3, 2])
    values = np.array([0.1, 0.1, 0.3, 0.3, 0.7, 0.7])
    matrix = sparse.csr_matrix((values, (rows, cols)), shape=(4, 4))
    # first-neighbour distances: 0.1, 0.1, 0.3, 0.7
    assert eps_from_distances(matrix, min_samples=2, quantile=0.5) == pytest.approx(0.2)
    assert eps_from_distances(matrix, min_samples=2, quantile=0.01) >= 0.05
    with pytest.raises(HHCLError, match="eps_quantile"):
        eps_from_distances(matrix, min_samples=2, quantile=1.0)


def test_overlaps_hand_worked():
    labels = np.array([0, 0, 0, 1, 1])
    looser = np.array([0, 0, 0, 0, 0])  # both merge into one
    assert _overlaps(labels, looser) == pytest.approx([3 / 5] * 3 + [2 / 5] * 2)
    tighter = np.array([0, 0, -1, 1, 1])  # image 2 falls out of its cluster
    assert _overlaps(labels, tighter) == pytest.approx([2 / 3, 2 / 3, 1 / 3, 1.0, 1.0])


def test_reliable_labels_drop_merging_and_crumbling_images():
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2, 2, -1])
    looser = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 3])  # clusters 1 and 2 merge when eps grows
    tighter = np.array([0, 0, 0, -1, 1, 1, 2, 2, 2, -1])  # image 3 falls off cluster 0
    result = reliable_labels(labels, tighter, looser, threshold=0.5)
    # cluster 0 keeps 0..2 (IoU 3/4); image 3 (IoU 1/4) goes; cluster 1 (IoU 2/5) goes; cluster 2 (3/5) stays
    assert result.tolist() == [0, 0, 0, -1, -1, -1, 1, 1, 1, -1]
    assert reliable_labels(labels, labels, labels, threshold=1.0).tolist() == labels.tolist()


def test_reliable_labels_drop_clusters_left_with_one_image():
    labels = np.array([0, 0, 1, 1])
    tighter = np.array([0, -1, 1, 1])
    result = reliable_labels(labels, tighter, labels, threshold=0.6)
    assert result.tolist() == [-1, -1, 0, 0]


def blobs(num_identities=6, per_identity=8, dim=32, spread=0.15, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_identities, dim, generator=generator), dim=1)
    features = centres.repeat_interleave(per_identity, 0) + spread * torch.randn(
        num_identities * per_identity, dim, generator=generator)
    return torch.nn.functional.normalize(features, dim=1), np.repeat(np.arange(num_identities), per_identity)


def test_adaptive_pseudo_labels_find_well_separated_identities():
    features, truth = blobs()
    labels, stats = adaptive_pseudo_labels(features, eps=0.6, min_samples=4, k1=10, k2=3, eps_quantile=0.5,
                                           reliability_margin=0.02)
    assert stats["num_clusters"] == 6
    assert 0.05 <= stats["eps"] <= 0.95
    # each cluster holds one identity
    for cluster in range(stats["num_clusters"]):
        assert len(set(truth[labels == cluster])) == 1


def test_fixed_eps_and_no_filtering_is_plain_dbscan_on_the_jaccard_distance():
    from hhcl.cluster import jaccard_distance

    features, _ = blobs(seed=1)
    labels, stats = adaptive_pseudo_labels(features, eps=0.5, min_samples=4, k1=10, k2=3)
    expected = dbscan_labels(jaccard_distance(features, k1=10, k2=3), 0.5, 4)
    assert labels.tolist() == expected.tolist()
    assert stats["eps"] == 0.5 and stats["unreliable_images"] == 0


def test_rejects_a_margin_out_of_range():
    features, _ = blobs()
    with pytest.raises(HHCLError, match="reliability_margin"):
        adaptive_pseudo_labels(features, eps=0.5, k1=10, k2=3, reliability_margin=0.6)


@pytest.mark.parametrize("selection", ["clusters", "images"])
def test_eps_candidates_pick_the_eps_that_keeps_the_most_reliable(selection):
    features, truth = blobs(seed=2)
    labels, stats = adaptive_pseudo_labels(features, eps=0.9, min_samples=4, k1=10, k2=3,
                                           eps_candidates=[0.2, 0.5, 0.8], reliability_margin=0.02,
                                           eps_selection=selection)
    assert set(stats["eps_search"]) == {0.2, 0.5, 0.8}
    assert stats["eps"] == max(stats["eps_search"], key=lambda eps: (stats["eps_search"][eps], -eps))
    kept = stats["num_clusters"] if selection == "clusters" else int((labels >= 0).sum())
    assert stats["eps_search"][stats["eps"]] == kept
    with pytest.raises(HHCLError, match="reliability_margin"):
        adaptive_pseudo_labels(features, eps=0.5, k1=10, k2=3, eps_candidates=[0.5])


def test_counting_clusters_does_not_reward_a_merge(monkeypatch):
    from hhcl.cluster import reliability

    # two tight groups of 6 (distance 0.1 inside) that eps 0.6 merges into one stable cluster (0.5 across)
    groups = np.repeat([0, 1], 6)
    dense = np.where(groups[:, None] == groups[None, :], 0.1, 0.5)
    np.fill_diagonal(dense, 0.0)
    matrix = sparse.csr_matrix(dense)
    monkeypatch.setattr(reliability, "jaccard_distance", lambda features, k1, k2, knn="auto", knn_nprobe=None: matrix)
    features = np.zeros((12, 2))
    _, by_clusters = adaptive_pseudo_labels(features, eps=0.3, eps_candidates=[0.2, 0.6], reliability_margin=0.02,
                                            eps_selection="clusters")
    _, by_images = adaptive_pseudo_labels(features, eps=0.3, eps_candidates=[0.2, 0.6], reliability_margin=0.02,
                                          eps_selection="images")
    assert by_clusters["eps"] == 0.2 and by_clusters["num_clusters"] == 2
    assert by_images["eps_search"] == {0.2: 12, 0.6: 12}  # images alone cannot tell the merge apart
    with pytest.raises(HHCLError, match="eps_selection"):
        adaptive_pseudo_labels(features, eps=0.3, eps_selection="size")


def test_kth_neighbour_distance_dense_and_sparse():
    dense = np.array([[0.0, 0.2, 0.9], [0.2, 0.0, 0.4], [0.9, 0.4, 0.0]])
    assert kth_neighbour_distances(dense, 1).tolist() == [0.2, 0.2, 0.4]
    assert kth_neighbour_distances(dense, 2).tolist() == [0.9, 0.4, 0.9]
    matrix = sparse.csr_matrix(np.array([[0.0, 0.2, 0.0], [0.2, 0.0, 0.4], [0.0, 0.4, 0.0]]))
    # absent pairs are at the maximum distance, 1
    assert kth_neighbour_distances(matrix, 1).tolist() == pytest.approx([0.2, 0.2, 0.4])
    assert kth_neighbour_distances(matrix, 2).tolist() == pytest.approx([1.0, 0.4, 1.0])


def test_kth_neighbour_distances_match_a_per_row_sort_on_random_sparse_rows():
    generator = np.random.default_rng(0)
    matrix = sparse.random(60, 60, density=0.2, random_state=1, format="csr")
    matrix.data = generator.random(matrix.nnz)
    for k in (1, 3, 8):
        expected = []
        for row in range(60):
            start, end = matrix.indptr[row], matrix.indptr[row + 1]
            others = np.sort(matrix.data[start:end][matrix.indices[start:end] != row])
            expected.append(others[k - 1] if len(others) >= k else 1.0)
        np.testing.assert_allclose(kth_neighbour_distances(matrix, k), expected)
