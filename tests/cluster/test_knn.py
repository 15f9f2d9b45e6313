import numpy as np
import pytest
import torch

from hhcl.cluster import knn
from hhcl.cluster.knn import nearest_neighbours
from hhcl.errors import HHCLError

needs_faiss = pytest.mark.skipif(not knn.faiss_available(), reason="faiss is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


# Blocks smaller than the lists (3), uneven (16 into 150) and one block for all (10,000).
@pytest.mark.parametrize("block_size", [3, 16, 10_000])
def test_matmul_lists_equal_a_stable_argsort_of_all_similarities(reference, block_size):
    features, _ = reference.clustered_features(150, 32, seed=3)
    neighbours = nearest_neighbours(features, 30, method="matmul", block_size=block_size)
    np.testing.assert_array_equal(neighbours.indices, reference.ranked_lists(features, 30))
    expected_sims = np.take_along_axis(features @ features.T, neighbours.indices, axis=1)
    np.testing.assert_allclose(neighbours.similarities, expected_sims, atol=1e-12)
    assert neighbours.exact


def test_equal_similarities_are_ranked_by_index():
    axis_x, axis_y = [1.0, 0.0], [0.0, 1.0]
    features = np.array([axis_x, axis_x, axis_y, axis_x, axis_y])
    neighbours = nearest_neighbours(features, 3, block_size=2)
    np.testing.assert_array_equal(
        neighbours.indices,
        [[0, 1, 3], [0, 1, 3], [2, 4, 0], [0, 1, 3], [2, 4, 0]],
    )


@pytest.mark.parametrize("block_size", [3, 4096])
def test_ties_straddling_the_cut_keep_the_smallest_indices(block_size):
    # Ten copies of one vector: each copy's 4 nearest are the first four copies, whatever order
    # the tiles happened to deliver them in.
    rng = np.random.default_rng(0)
    others = rng.standard_normal((5, 8))
    others /= np.linalg.norm(others, axis=1, keepdims=True)
    copy = np.zeros(8)
    copy[0] = 1.0
    features = np.vstack([others[:2], np.tile(copy, (10, 1)), others[2:]])
    neighbours = nearest_neighbours(features, 4, block_size=block_size)
    np.testing.assert_array_equal(neighbours.indices[2:12], np.tile([2, 3, 4, 5], (10, 1)))


@pytest.mark.parametrize("method", ["matmul", pytest.param("faiss", marks=needs_faiss)])
@pytest.mark.parametrize("block_size", [16, None])
def test_exact_methods_agree_with_the_reference_on_tied_features(reference, method, block_size):
    features = reference.sign_features(300, seed=1)
    neighbours = nearest_neighbours(features.astype(np.float32), 30, method=method, block_size=block_size)
    np.testing.assert_array_equal(neighbours.indices, reference.ranked_lists(features, 30))


def test_cuda_chunk_path_gives_the_reference_lists(reference):
    # The path CUDA features take, run here on CPU.
    features, _ = reference.clustered_features(300, 32, seed=2)
    sims, idx = knn._chunked_top_torch(torch.from_numpy(features), 20, rows_per_chunk=17, progress=False)
    _, idx = knn.rank_rows(sims, idx)
    np.testing.assert_array_equal(idx.numpy(), reference.ranked_lists(features, 20))


@needs_faiss
@pytest.mark.parametrize("method", ["faiss-ivf", "approximate", "faiss-hnsw"])
def test_approximate_indexes_find_most_true_neighbours(reference, method):
    features, _ = reference.clustered_features(1000, 32, seed=4)
    features = features.astype(np.float32)
    exact = nearest_neighbours(features, 10).indices
    approximate = nearest_neighbours(features, 10, method=method)
    assert approximate.indices.shape == (1000, 10) and not approximate.exact
    found = [len(set(a) & set(e)) for a, e in zip(approximate.indices, exact)]
    assert np.mean(found) / 10 > 0.9


def test_float16_features_are_ranked_as_their_float32_values(reference):
    features, _ = reference.clustered_features(400, 64, seed=5)
    half = torch.from_numpy(features).half()
    np.testing.assert_array_equal(
        nearest_neighbours(half, 20).indices,
        nearest_neighbours(half.float(), 20).indices,
    )


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_features_give_the_cpu_lists(reference, dtype):
    features = torch.from_numpy(reference.sign_features(300, seed=6)).to(dtype)
    on_gpu = nearest_neighbours(features.cuda(), 30)
    np.testing.assert_array_equal(on_gpu.indices, nearest_neighbours(features, 30).indices)


@pytest.mark.parametrize(
    "features, message",
    [
        (np.ones((4, 3)), "L2-normalised"),
        (np.array([[1.0, 0.0], [np.nan, 0.0]]), "NaN"),
        (np.ones(3), r"shape \(N, D\)"),
        (np.eye(3, dtype=np.int64), "floating point"),
        ([[1.0, 0.0]], "torch tensor or numpy array"),
    ],
)
def test_bad_features_raise_a_clear_error(features, message):
    with pytest.raises(HHCLError, match=message):
        nearest_neighbours(features, 1)


def test_bad_arguments_raise_a_clear_error():
    features = np.eye(3)
    with pytest.raises(HHCLError, match="unknown kNN method"):
        nearest_neighbours(features, 2, method="annoy")
    with pytest.raises(HHCLError, match="between 1 and N"):
        nearest_neighbours(features, 4)
    with pytest.raises(HHCLError, match="block_size"):
        nearest_neighbours(features, 2, block_size=0)


def test_auto_is_the_matmul_search_on_cpu_and_says_so():
    features = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    assert knn.resolve_method("auto", features) == "matmul" and knn.resolve_method("auto") == "matmul"
    described = knn.describe_method("auto", features)
    assert described.startswith("matmul search (exact) on CPU (knn auto: 20 images, approximate from 200,000; faiss ")
    assert ("faiss installed" in described) == knn.faiss_available()
    assert knn.describe_method("faiss", features) == "faiss (IndexFlatIP, exact) on CPU"
    assert knn.describe_method("faiss-hnsw", features) == "faiss (IndexHNSWFlat, approximate) on CPU"
    assert knn.describe_method("exact", features) == "matmul search (exact) on CPU (knn exact)"
    with pytest.raises(HHCLError, match="unknown kNN method 'flat'; choose one of auto, exact, approximate, matmul"):
        knn.resolve_method("flat", features)


@pytest.mark.parametrize("faiss_installed", [True, False])
def test_auto_turns_approximate_from_the_threshold_when_faiss_is_installed(monkeypatch, faiss_installed):
    monkeypatch.setattr(knn, "faiss_available", lambda: faiss_installed)
    monkeypatch.setattr(knn, "APPROXIMATE_FROM", 50)
    small = torch.nn.functional.normalize(torch.randn(49, 8), dim=1)
    large = torch.nn.functional.normalize(torch.randn(50, 8), dim=1)
    assert knn.resolve_method("auto", small) == "matmul"
    assert knn.resolve_method("auto", large) == ("faiss-ivf" if faiss_installed else "matmul")
    described = knn.describe_method("auto", large, nprobe=2)
    if faiss_installed:
        assert described.startswith("faiss (IndexIVFFlat, approximate, 3 lists, nprobe 2) on CPU (knn auto: 50 images")
    else:
        assert described.startswith("matmul search (exact) on CPU (knn auto: 50 images, approximate from 50; "
                                    "faiss not installed")
    assert knn.resolve_method("approximate", small) == "faiss-ivf"  # a method named is the method run


def test_inverted_file_lists_grow_as_the_square_root():
    assert [knn.ivf_lists(n) for n in (10, 1_000, 100_000, 1_000_000)] == [1, 62, 1024, 4096]
    assert all(knn.ivf_lists(n) * 16 <= n for n in (16, 100, 5_000))


def test_nprobe_must_be_positive():
    features = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    with pytest.raises(HHCLError, match="nprobe=0 must be a positive number of lists"):
        nearest_neighbours(features, 3, method="matmul", nprobe=0)


@pytest.mark.parametrize("gpu_faiss", [True, False])
def test_auto_on_cuda_features_is_faiss_on_the_gpu_when_faiss_has_gpu_support(monkeypatch, gpu_faiss):
    # No GPU needed: CUDA features and faiss's GPU support are what the choice reads.
    monkeypatch.setattr(knn, "_on_cuda", lambda features: True)
    monkeypatch.setattr(knn, "faiss_gpu_available", lambda: gpu_faiss)
    monkeypatch.setattr(knn, "faiss_available", lambda: True)
    features = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    assert knn.resolve_method("auto", features) == ("faiss" if gpu_faiss else "matmul")
    expected = "faiss (IndexFlatIP, exact) on GPU" if gpu_faiss else "matmul search (exact) on CUDA"
    assert knn.describe_method("auto", features).startswith(expected)
    assert knn.resolve_method("matmul", features) == "matmul"  # a method named is the method run


def test_faiss_asked_without_faiss_is_a_one_line_error(monkeypatch):
    monkeypatch.setattr(knn, "faiss_available", lambda: False)
    features = torch.nn.functional.normalize(torch.randn(20, 8), dim=1)
    with pytest.raises(HHCLError, match=r"needs faiss; pip install 'hhcl\[faiss\]' .*cluster.knn: matmul"):
        nearest_neighbours(features, 5, method="faiss")


@needs_faiss
def test_faiss_flat_gives_the_matmul_lists_and_pseudo_labels(reference):
    from hhcl.cluster import pseudo_labels

    features, _ = reference.clustered_features(2000, 64, seed=5)
    features = features.astype(np.float32)
    by_matmul = nearest_neighbours(features, 30, method="matmul")
    by_faiss = nearest_neighbours(features, 30, method="faiss")
    np.testing.assert_array_equal(by_faiss.indices, by_matmul.indices)
    labels_matmul, stats_matmul = pseudo_labels(features, eps=0.6, k1=30, k2=6, knn="matmul")
    labels_faiss, stats_faiss = pseudo_labels(features, eps=0.6, k1=30, k2=6, knn="faiss")
    assert stats_matmul["num_clusters"] > 10
    np.testing.assert_array_equal(labels_faiss, labels_matmul)
    assert stats_faiss["knn"].startswith("faiss (IndexFlatIP") and stats_matmul["knn"].startswith("matmul")


@needs_faiss
def test_the_inverted_file_search_probing_every_list_is_exact(reference):
    features, _ = reference.clustered_features(1000, 32, seed=4)
    features = features.astype(np.float32)
    exact = nearest_neighbours(features, 10)
    few = nearest_neighbours(features, 10, method="approximate", nprobe=1)
    every = nearest_neighbours(features, 10, method="approximate", nprobe=knn.ivf_lists(1000))
    np.testing.assert_array_equal(every.indices, exact.indices)
    assert (few.indices == exact.indices).all(axis=1).mean() < 1.0  # one list of 64 misses some
