import numpy as np
import pytest
import torch
from sklearn.cluster import DBSCAN

from hhcl.cluster import PHASES, knn, pseudo_labels
from hhcl.cluster.jaccard import symmetric_graph
from hhcl.errors import HHCLError

needs_faiss = pytest.mark.skipif(not knn.faiss_available(), reason="faiss is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@pytest.mark.parametrize("eps", [0.4, 0.5, 0.7])
def test_labels_equal_dbscan_on_the_dense_reference(reference, clustered_2000, eps):
    features, expected_distance = clustered_2000
    # No pair so close to eps that float rounding could put it on either side.
    assert np.abs(expected_distance - eps).min() > 2e-6
    labels, stats = pseudo_labels(features, eps=eps)
    expected = reference.dbscan(expected_distance, eps, 4)
    np.testing.assert_array_equal(labels, expected)
    assert labels.dtype == np.int64
    assert stats["num_clusters"] == expected.max() + 1 > 10


def test_eps_changes_the_clustering(clustered_2000):
    # Guards that the comparison above is not trivially the same partition at every eps.
    features, _ = clustered_2000
    counts = {eps: pseudo_labels(features, eps=eps)[1]["num_clusters"] for eps in (0.4, 0.7)}
    assert counts[0.4] > counts[0.7]


@pytest.mark.parametrize("knn_method", ["matmul", pytest.param("faiss", marks=needs_faiss)])
def test_tied_and_duplicate_features_equal_the_dense_reference(reference, knn_method):
    features = reference.sign_features(300, seed=4)
    expected = reference.dbscan(reference.jaccard_distance(features, 30, 6), 0.5, 4)
    labels, _ = pseudo_labels(features.astype(np.float32), eps=0.5, knn=knn_method)
    np.testing.assert_array_equal(labels, expected)


def test_identical_images_form_clusters():
    # Two triples of identical images at distance exactly 0 to each other: with min_samples=3
    # each triple is a cluster only if the zero distances reach DBSCAN as neighbours.
    features = np.repeat(np.eye(2), 3, axis=0)
    labels, stats = pseudo_labels(features, eps=0.1, min_samples=3, k1=3, k2=3)
    np.testing.assert_array_equal(labels, [0, 0, 0, 1, 1, 1])
    assert stats["num_clusters"] == 2 and stats["num_outliers"] == 0


def test_the_dbscan_graph_keeps_zero_distances_and_sorts_rows_by_distance():
    rows, cols = np.array([0, 0, 1, 3]), np.array([1, 2, 2, 4])
    distances = np.array([0.0, 0.3, 0.0, 0.2], dtype=np.float32)
    diagonal = np.array([1, 1, 1, 1, 0], dtype=np.float32)  # image 4 overlaps nothing
    graph = symmetric_graph(5, rows, cols, distances, diagonal, 0.5, sort_rows_by="value")
    # 4 pairs both ways and 4 diagonal entries; the 4 zero distances and 4 zero diagonals stay.
    assert graph.nnz == 12 and (graph.data == 0).sum() == 8
    for row in range(5):
        assert (np.diff(graph.data[graph.indptr[row] : graph.indptr[row + 1]]) >= 0).all()
    # Images 0, 1, 2 are within 0.5 of each other: a cluster for min_samples=3, which it would
    # not be if the zeros were pruned.
    dense = np.ones((5, 5))
    coo = graph.tocoo()
    dense[coo.row, coo.col] = coo.data
    labels = DBSCAN(eps=0.5, min_samples=3, metric="precomputed").fit_predict(graph)
    np.testing.assert_array_equal(labels, [0, 0, 0, -1, -1])
    np.testing.assert_array_equal(labels, DBSCAN(eps=0.5, min_samples=3, metric="precomputed").fit_predict(dense))


def test_no_cluster_found_is_reported_not_raised(reference):
    # Random directions in 512-d: no two neighbourhoods overlap enough (the closest pair is at
    # about 0.49).
    rng = np.random.default_rng(0)
    features = rng.standard_normal((200, 512))
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    labels, stats = pseudo_labels(features, eps=0.4)
    np.testing.assert_array_equal(labels, np.full(200, -1))
    np.testing.assert_array_equal(labels, reference.dbscan(reference.jaccard_distance(features, 30, 6), 0.4, 4))
    assert stats["num_clusters"] == 0 and stats["num_outliers"] == 200
    assert stats["size_quantiles"] == {}


def test_statistics(reference, clustered_2000):
    features, _ = clustered_2000
    labels, stats = pseudo_labels(features, eps=0.5)
    for clock in ("seconds", "cpu_seconds"):
        assert set(stats[clock]) == set(PHASES) | {"total"}
        assert stats[clock]["total"] == pytest.approx(sum(stats[clock][phase] for phase in PHASES))
    sizes = np.bincount(labels[labels >= 0])
    assert stats["num_images"] == 2000
    assert stats["num_outliers"] == (labels == -1).sum() and sizes.sum() + stats["num_outliers"] == 2000
    quantiles = stats["size_quantiles"]
    assert quantiles["min"] == sizes.min() and quantiles["max"] == sizes.max()
    assert quantiles["min"] <= quantiles["p25"] <= quantiles["median"] <= quantiles["p75"] <= quantiles["max"]
    assert (stats["k1"], stats["k2"], stats["eps"], stats["min_samples"]) == (30, 6, 0.5, 4)


def test_fewer_images_than_k1(reference):
    features, _ = reference.clustered_features(20, 16, seed=1)
    with pytest.warns(UserWarning, match="using k1=20"):
        labels, stats = pseudo_labels(features, eps=0.6, k1=30)
    assert stats["k1"] == 20
    expected = reference.dbscan(reference.jaccard_distance(features, 20, 6), 0.6, 4)
    np.testing.assert_array_equal(labels, expected)


def test_same_input_same_labels(reference):
    features, _ = reference.clustered_features(600, 32, seed=2)
    first, _ = pseudo_labels(features, eps=0.6)
    second, _ = pseudo_labels(features.copy(), eps=0.6)
    np.testing.assert_array_equal(first, second)


def test_float16_features_give_the_float32_labels(reference):
    features, _ = reference.clustered_features(600, 64, seed=3)
    as_float32 = torch.from_numpy(features).float()
    labels_32, _ = pseudo_labels(as_float32, eps=0.6)
    labels_16, _ = pseudo_labels(as_float32.half(), eps=0.6)
    np.testing.assert_array_equal(labels_16, labels_32)


@needs_faiss
@pytest.mark.parametrize("knn_method", ["faiss-ivf", "faiss-hnsw"])
def test_approximate_neighbours_give_nearly_the_exact_labels(reference, knn_method):
    from sklearn.metrics import adjusted_rand_score

    features, _ = reference.clustered_features(1000, 32, seed=5, identities_per_group=3, group_cosine=0.7)
    features = features.astype(np.float32)
    exact, _ = pseudo_labels(features, eps=0.5)
    approximate, _ = pseudo_labels(features, eps=0.5, knn=knn_method)
    assert adjusted_rand_score(exact, approximate) > 0.95


@needs_faiss
def test_the_approximate_search_takes_its_probes_and_says_so(reference):
    features, _ = reference.clustered_features(1000, 32, seed=5, identities_per_group=3, group_cosine=0.7)
    features = features.astype(np.float32)
    _, stats = pseudo_labels(features, eps=0.5, knn="approximate", knn_nprobe=3)
    assert stats["knn"] == "faiss (IndexIVFFlat, approximate, 62 lists, nprobe 3) on CPU (knn approximate)"


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_features_give_the_cpu_labels(reference, dtype):
    features, _ = reference.clustered_features(600, 64, seed=3)
    on_cpu = torch.from_numpy(features).to(dtype)
    np.testing.assert_array_equal(pseudo_labels(on_cpu.cuda(), eps=0.6)[0], pseudo_labels(on_cpu, eps=0.6)[0])


@pytest.mark.parametrize("eps", [0, 1, -0.1, 1.5, "0.5", True])
def test_bad_eps_raises_a_clear_error(eps):
    with pytest.raises(HHCLError, match="eps"):
        pseudo_labels(np.eye(4), eps=eps)


@pytest.mark.parametrize("min_samples", [0, 2.5, True])
def test_bad_min_samples_raises_a_clear_error(min_samples):
    with pytest.raises(HHCLError, match="min_samples"):
        pseudo_labels(np.eye(4), eps=0.5, min_samples=min_samples)


def test_outliers_as_instances_gives_each_outlier_its_own_identity():
    from hhcl.cluster.pseudo_labels import outliers_as_instances

    labels = np.array([1, -1, 0, -1, 1, -1])
    result = outliers_as_instances(labels)
    np.testing.assert_array_equal(result, [1, 2, 0, 3, 1, 4])
    np.testing.assert_array_equal(labels, [1, -1, 0, -1, 1, -1])  # the input is left as it was
    np.testing.assert_array_equal(outliers_as_instances([-1, -1]), [0, 1])
    assert outliers_as_instances(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_split_clusters_by_group_cuts_clusters_that_span_groups():
    from hhcl.cluster.pseudo_labels import split_clusters_by_group

    labels = np.array([0, 0, 0, 0, 1, 1, 1, -1, 2, 2])
    groups = np.array([0, 0, 1, 1, 0, 0, 1, 0, 2, 2])
    result = split_clusters_by_group(labels, groups)
    # cluster 0 -> two pieces of two; cluster 1 -> a piece of two and a lone image (outlier)
    np.testing.assert_array_equal(result, [0, 0, 1, 1, 2, 2, -1, -1, 3, 3])
    np.testing.assert_array_equal(split_clusters_by_group(labels, np.zeros(10, dtype=np.int64)), labels)
    np.testing.assert_array_equal(split_clusters_by_group(labels, groups, min_size=3), np.full(10, -1))
    np.testing.assert_array_equal(split_clusters_by_group([-1, -1], [0, 1]), [-1, -1])
    with pytest.raises(ValueError, match="groups"):
        split_clusters_by_group(labels, groups[:3])
