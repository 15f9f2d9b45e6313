import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from hhcl.cluster import jaccard, jaccard_distance, knn
from hhcl.errors import HHCLError

needs_faiss = pytest.mark.skipif(not knn.faiss_available(), reason="faiss is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

# Eight points' ranked lists (k1 = 6, so the half lists hold round(6/2) + 1 = 4), worked by hand
# in the comments of the tests below.
HAND_RANKED = np.array(
    [
        [0, 1, 2, 3, 4, 6],
        [1, 0, 2, 5, 3, 4],
        [2, 1, 0, 5, 3, 7],
        [3, 0, 4, 1, 2, 6],
        [4, 3, 0, 1, 7, 6],
        [5, 1, 2, 6, 7, 0],
        [6, 7, 5, 3, 4, 0],
        [7, 6, 5, 4, 2, 3],
    ]
)


def rows_as_sets(matrix: sp.csr_matrix) -> list[set]:
    return [set(matrix.indices[matrix.indptr[i] : matrix.indptr[i + 1]].tolist()) for i in range(matrix.shape[0])]


def as_dense(distance: sp.csr_matrix) -> np.ndarray:
    """Absent entries are at distance 1."""
    dense = np.ones(distance.shape)
    coo = distance.tocoo()
    dense[coo.row, coo.col] = coo.data
    return dense


def test_half_width_rounds_half_to_even_like_the_reference():
    assert [jaccard.half_width(k1) for k1 in (1, 2, 3, 6, 20, 25, 30)] == [1, 2, 3, 4, 11, 13, 16]


def test_k_reciprocal_sets_by_hand():
    # j is in R(i) when j is among i's first 6 and i among j's first 6: 0 lists 5 nowhere, so
    # 5 is not in R(0), while 0 lists 6 and 6 lists 0.
    assert rows_as_sets(jaccard.k_reciprocal_sets(HAND_RANKED, 6)) == [
        {0, 1, 2, 3, 4, 6},
        {0, 1, 2, 3, 4, 5},
        {0, 1, 2, 3, 5, 7},
        {0, 1, 2, 3, 4, 6},
        {0, 1, 3, 4, 6, 7},
        {1, 2, 5, 6, 7},
        {0, 3, 4, 5, 6, 7},
        {2, 4, 5, 6, 7},
    ]
    # With the first 4 only: 3 lists 1 but 1 does not list 3, and so on.
    assert rows_as_sets(jaccard.k_reciprocal_sets(HAND_RANKED, 4)) == [
        {0, 1, 2, 3},
        {0, 1, 2, 5},
        {0, 1, 2, 5},
        {0, 3, 4},
        {3, 4},
        {1, 2, 5, 6},
        {5, 6, 7},
        {6, 7},
    ]


def test_expansion_by_hand():
    # E(0): R(0) = {0,1,2,3,4,6}; R_half(1) = {0,1,2,5} shares {0,1,2}, 3 > 2/3 * 4, so 5 joins;
    # R_half(6) = {5,6,7} shares only {6}, so 7 does not.
    # E(2): R_half(3) = {0,3,4} shares {0,3}: 2 is not > 2, so 4 stays out; R_half(5) brings 6.
    # E(4): R_half(0) = {0,1,2,3} shares {0,1,3}, bringing 2; R_half(6) = {5,6,7} shares {6,7}:
    # 2 is not > 2, so 5 stays out.
    assert rows_as_sets(jaccard.expanded_neighbourhoods(HAND_RANKED, 6)) == [
        {0, 1, 2, 3, 4, 5, 6},
        {0, 1, 2, 3, 4, 5, 6},
        {0, 1, 2, 3, 5, 6, 7},
        {0, 1, 2, 3, 4, 5, 6},
        {0, 1, 2, 3, 4, 6, 7},
        {0, 1, 2, 5, 6, 7},
        {0, 3, 4, 5, 6, 7},
        {1, 2, 4, 5, 6, 7},
    ]


def test_weights_are_a_softmax_of_minus_the_squared_distance():
    pattern = sp.csr_matrix((np.ones(3, dtype=np.int32), [0, 1, 2], [0, 3, 3]), shape=(2, 3))
    # Similarities 1, 0.5, 0 are squared distances 0, 1, 2: weights e^0, e^-1, e^-2, normalised.
    weights = jaccard.neighbourhood_weights(pattern, np.array([1.0, 0.5, 0.0]))
    expected = np.array([1, math.exp(-1), math.exp(-2)]) / (1 + math.exp(-1) + math.exp(-2))
    np.testing.assert_allclose(weights.toarray(), [expected, [0, 0, 0]], rtol=1e-6)


def test_query_expansion_averages_the_first_k2_rows():
    weights = sp.csr_matrix(np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.25, 0.75]], dtype=np.float32))
    ranked = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    expanded = jaccard.query_expansion(weights, ranked, 2)
    np.testing.assert_allclose(
        expanded.toarray(), [[0.25, 0.75, 0.0], [0.0, 0.625, 0.375], [0.25, 0.375, 0.375]]
    )
    assert jaccard.query_expansion(weights, ranked, 1) is weights


def test_overlaps_and_distances_by_hand():
    weights = sp.csr_matrix(np.array([[0.5, 0.5, 0.0], [0.25, 0.25, 0.5], [0.0, 1.0, 0.0]], dtype=np.float32))
    # s(0,1) = min(.5,.25) + min(.5,.25) = .5; s(0,2) = min(.5, 1) = .5; s(1,2) = .25.
    upper = jaccard.overlap_sums(weights)
    np.testing.assert_allclose(upper.toarray(), [[0, 0.5, 0.5], [0, 0, 0.25], [0, 0, 0]])
    np.testing.assert_allclose(jaccard.self_overlaps(weights), [1, 1, 1])
    # d = 1 - s / (2 - s): 1 - .5/1.5 = 2/3 and 1 - .25/1.75 = 6/7; d(i, i) = 0.
    distance = jaccard.symmetric_distance(upper, jaccard.self_overlaps(weights))
    np.testing.assert_allclose(
        distance.toarray(), [[0, 2 / 3, 2 / 3], [2 / 3, 0, 6 / 7], [2 / 3, 6 / 7, 0]], atol=1e-7
    )
    assert distance.nnz == 9  # the diagonal zeros are stored


@pytest.fixture(scope="module")
def distance_2000(clustered_2000):
    features, _ = clustered_2000
    return jaccard_distance(features, k1=30, k2=6)


def test_2000_clustered_features_match_the_dense_reference(clustered_2000, distance_2000):
    _, expected = clustered_2000
    distance = distance_2000
    assert distance.dtype == np.float32 and distance.has_sorted_indices
    np.testing.assert_allclose(as_dense(distance), expected, atol=1e-5)
    assert (distance != distance.T).nnz == 0


def test_2000_clustered_features_exercise_expansion_and_recomputed_similarities(clustered_2000):
    # Guards that the comparison above covers every branch: some expansions add members from
    # outside R(i), and some of those lie outside i's kNN list, so their similarity is computed.
    features, _ = clustered_2000
    ranked = knn.nearest_neighbours(features, 30).indices
    expanded = jaccard.expanded_neighbourhoods(ranked, 30)
    reciprocal = jaccard.k_reciprocal_sets(ranked, 30)
    assert (expanded - reciprocal).nnz > 0
    assert (expanded - expanded.multiply(jaccard.neighbour_pattern(ranked, 30))).nnz > 0


@pytest.mark.parametrize("max_distance", [0.3, 0.55, 0.8, 1.0])
def test_max_distance_keeps_exactly_the_pairs_within_it(clustered_2000, distance_2000, max_distance):
    features, _ = clustered_2000
    full = distance_2000.tocoo()
    pruned = jaccard_distance(features, max_distance=max_distance).tocoo()
    kept = set(zip(pruned.row.tolist(), pruned.col.tolist()))

    def pairs_within(limit):
        inside = full.data <= limit
        return set(zip(full.row[inside].tolist(), full.col[inside].tolist()))

    # The two paths sum in different orders: a pair within float32 rounding of the limit may
    # land on either side of it.
    assert pairs_within(max_distance - 2e-6) <= kept <= pairs_within(max_distance + 2e-6)
    full_csr = distance_2000.tocsr()
    np.testing.assert_allclose(pruned.data, np.asarray(full_csr[pruned.row, pruned.col]).ravel(), atol=1e-6)


def arbitrary_weights(seed: int, n: int = 300) -> sp.csr_matrix:
    """(n, n) CSR float32 rows summing to 1: noisy copies of 30 uneven prototypes (so that some
    pairs overlap a lot) plus light entries scattered at random."""
    rng = np.random.default_rng(seed)
    prototypes = (rng.random((30, n)) < 0.07) * rng.random((30, n)) ** 3
    jitter = rng.uniform(0, 0.8, (n, 1))  # how far each row strays from its prototype
    dense = prototypes[rng.integers(0, 30, n)] * rng.uniform(1 - jitter, 1 + jitter, (n, n))
    dense *= rng.random((n, n)) > jitter / 3
    dense += (rng.random((n, n)) < 0.1) * rng.random((n, n)) ** 4 * rng.uniform(0, 0.3, (n, 1))
    dense /= np.maximum(dense.sum(axis=1, keepdims=True), 1e-12)
    weights = sp.csr_matrix(dense.astype(np.float32))
    weights.sort_indices()
    return weights


@pytest.mark.parametrize("max_distance", [0.3, 0.5, 0.7, 0.95])
def test_pruning_never_loses_a_pair_on_arbitrary_weights(max_distance):
    weights = arbitrary_weights(seed=int(max_distance * 100))
    upper = jaccard.overlap_sums(weights).tocoo()
    within = jaccard.distance_from_overlap(upper.data) <= max_distance
    expected = set(zip(upper.row[within].tolist(), upper.col[within].tolist()))
    assert len(expected) > 10
    rows, cols, distances = jaccard.close_pairs(weights, max_distance)
    assert set(zip(rows.tolist(), cols.tolist())) == expected
    assert (distances <= max_distance).all()


@pytest.mark.parametrize("knn_method", ["matmul", pytest.param("faiss", marks=needs_faiss)])
@pytest.mark.parametrize("block_size", [16, None])
def test_ties_and_duplicates_match_the_dense_reference(reference, knn_method, block_size):
    features = reference.sign_features(300, seed=0)
    assert len(np.unique(features, axis=0)) < 300  # duplicates present
    expected = reference.jaccard_distance(features, 30, 6)
    distance = jaccard_distance(features.astype(np.float32), knn=knn_method, block_size=block_size)
    np.testing.assert_allclose(as_dense(distance), expected, atol=1e-5)


def test_pairs_at_distance_zero_are_present(reference):
    # Duplicate images are at distance 0 (up to float32 rounding): present, not absent (= 1).
    features = reference.sign_features(200, seed=3)
    expected = reference.jaccard_distance(features, 30, 6)
    off_diagonal_zeros = np.argwhere((expected == 0) & ~np.eye(200, dtype=bool))
    assert len(off_diagonal_zeros) > 0
    distance = jaccard_distance(features).todok()
    for i, j in off_diagonal_zeros:
        assert (i, j) in distance.keys() and distance[i, j] < 1e-6


def test_distances_rounding_below_zero_are_stored_as_explicit_zeros():
    # Two triples of identical images: each V row is 1/3 on its triple (k1 = k2 = 3), whose
    # float32 sum rounds above 1, so d = 1 - s / (2 - s) clips to exactly 0.
    features = np.repeat(np.eye(2), 3, axis=0)
    distance = jaccard_distance(features, k1=3, k2=3)
    assert distance.nnz == 18 and (distance.data == 0).all()
    pruned = jaccard_distance(features, k1=3, k2=3, max_distance=0.5)
    assert pruned.nnz == 18 and (pruned.data == 0).all()


def test_fewer_images_than_k1_adapt_k1_with_a_warning(reference):
    features, _ = reference.clustered_features(12, 16, seed=7)
    with pytest.warns(UserWarning, match="k1=30 is larger than the 12 images; using k1=12"):
        distance = jaccard_distance(features, k1=30, k2=6)
    np.testing.assert_allclose(as_dense(distance), reference.jaccard_distance(features, 12, 6), atol=1e-5)


def test_k2_above_k1_is_capped_with_a_warning(reference):
    features, _ = reference.clustered_features(60, 16, seed=8)
    with pytest.warns(UserWarning, match="k2=9 is larger than k1=5"):
        distance = jaccard_distance(features, k1=5, k2=9)
    np.testing.assert_allclose(as_dense(distance), reference.jaccard_distance(features, 5, 5), atol=1e-5)


def test_same_input_gives_the_same_matrix(reference):
    features, _ = reference.clustered_features(500, 32, seed=9)
    first, second = jaccard_distance(features), jaccard_distance(features)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))


def test_torch_and_float16_inputs(reference):
    features, _ = reference.clustered_features(300, 32, seed=10)
    from_numpy = jaccard_distance(features.astype(np.float32))
    from_torch = jaccard_distance(torch.from_numpy(features.astype(np.float32)))
    assert (from_numpy != from_torch).nnz == 0
    half = torch.from_numpy(features).half()
    np.testing.assert_allclose(
        as_dense(jaccard_distance(half)), reference.jaccard_distance(half.double().numpy(), 30, 6), atol=1e-5
    )


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_features_match_the_dense_reference(reference, dtype):
    features = torch.from_numpy(reference.sign_features(300, seed=11)).to(dtype)
    distance = jaccard_distance(features.cuda())
    np.testing.assert_allclose(as_dense(distance), reference.jaccard_distance(features.double().numpy(), 30, 6), atol=1e-5)


@pytest.mark.parametrize("k1, k2", [(0, 6), (30, 0), (2.5, 6), (True, 6)])
def test_bad_neighbourhood_sizes_raise_a_clear_error(k1, k2):
    with pytest.raises(HHCLError, match="must be a positive integer"):
        jaccard_distance(np.eye(4), k1=k1, k2=k2)


def test_bad_max_distance_raises_a_clear_error():
    with pytest.raises(HHCLError, match="max_distance"):
        jaccard_distance(np.eye(4), max_distance=1.5)
