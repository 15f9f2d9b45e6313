import numpy as np
import pytest

from hhcl.cluster import pseudo_labels
from hhcl.cluster.ensemble import labels_at_eps, nested_images, nesting_shares

EPS_VALUES = [0.4, 0.55, 0.7]


@pytest.fixture(scope="module")
def look_alikes(reference):
    """300 features, look-alike identities in threes: eps decides whether they merge."""
    features, _ = reference.clustered_features(300, 32, seed=1, images_per_identity=10, cosine=(0.5, 0.8),
                                               identities_per_group=3, group_cosine=0.7)
    return features


def test_each_granularity_is_the_pseudo_labels_at_its_eps(look_alikes):
    labels = labels_at_eps(look_alikes, EPS_VALUES, min_samples=4, k1=20, k2=6, knn="matmul")
    assert labels.shape == (3, 300) and labels.dtype == np.int64
    for eps, granularity in zip(EPS_VALUES, labels):
        expected, _ = pseudo_labels(look_alikes, eps=eps, min_samples=4, k1=20, k2=6, knn="matmul")
        np.testing.assert_array_equal(granularity, expected)
    counts = [int(granularity.max()) + 1 for granularity in labels]
    assert len(set(counts)) == 3, counts  # eps matters on these features: three different clusterings
    assert counts[0] > counts[-1]  # the coarser eps merges the look-alikes


def test_no_eps_gives_no_granularity(look_alikes):
    assert labels_at_eps(look_alikes, []).shape == (0, 300)


def test_nesting_shares_by_hand():
    fine = np.array([0, 0, 0, 1, 1, -1, 2, 2])
    coarse = np.array([0, 0, 1, 0, 0, 0, 1, -1])
    # image 2 leaves cluster 0 for another coarse cluster: 2 of its 3 stay, it alone moved;
    # cluster 1 nests whole; the outlier 5 nests anywhere; cluster 2 splits evenly (7 an outlier there)
    expected = [2 / 3, 2 / 3, 1 / 3, 1.0, 1.0, 1.0, 0.5, 0.5]
    assert nesting_shares(fine, coarse) == pytest.approx(expected)


def test_nested_images_follow_the_majority_at_every_step():
    labels_by_eps = np.array([
        [0, 0, 0, 1, 1, -1, 2, 2, -1],
        [0, 0, 1, 0, 0, 0, 1, -1, 3],
        [0, 0, 0, 0, 0, 0, 0, 0, 0],
    ])
    # step 1: image 2 moved (1/3), cluster 2 split evenly (1/2 each); step 2 everything merges and nests
    assert nested_images(labels_by_eps).tolist() == [True, True, False, True, True, True, False, False, True]
    assert nested_images(labels_by_eps[:1]).all()  # one granularity nests in itself


def test_dbscan_granularities_nest_but_for_border_images(look_alikes):
    labels = labels_at_eps(look_alikes, EPS_VALUES, min_samples=4, k1=20, k2=6, knn="matmul")
    nested = nested_images(labels)
    clustered = (labels >= 0).any(axis=0)
    # a growing eps only merges DBSCAN's cores: most clustered images nest
    assert nested[clustered].mean() > 0.8
