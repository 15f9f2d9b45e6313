import itertools

import numpy as np
import pytest

from hhcl.cluster.diagnostics import pair_counts, pair_scores


def brute_force_counts(labels, reference):
    predicted = true = common = 0
    for i, j in itertools.combinations(range(len(labels)), 2):
        together = labels[i] >= 0 and labels[i] == labels[j]
        truly = reference[i] >= 0 and reference[i] == reference[j]
        predicted += together
        true += truly
        common += together and truly
    return {"predicted_pairs": predicted, "true_pairs": true, "common_pairs": common}


def test_hand_worked_example():
    # clusters {0,1,2} {3,4}, outlier 5; identities {0,1} {2,3,4,5}
    labels = np.array([0, 0, 0, 1, 1, -1])
    truth = np.array([7, 7, 9, 9, 9, 9])
    scores = pair_scores(labels, truth)
    assert scores["predicted_pairs"] == 3 + 1
    assert scores["true_pairs"] == 1 + 6
    assert scores["common_pairs"] == 1 + 1  # (0,1) and (3,4)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 7)
    assert scores["f_score"] == pytest.approx(2 * 0.5 * (2 / 7) / (0.5 + 2 / 7))


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(-1, 4, size=40)
    truth = rng.integers(-1, 6, size=40)
    assert pair_counts(labels, truth) == brute_force_counts(labels, truth)


def test_perfect_and_empty_labellings():
    truth = np.array([0, 0, 1, 1, 1])
    assert pair_scores(truth, truth)["f_score"] == 1.0
    nothing = pair_scores(np.full(5, -1), truth)
    assert nothing["precision"] == 1.0 and nothing["recall"] == 0.0 and nothing["f_score"] == 0.0


def test_f_score_is_symmetric_for_stability():
    a = np.array([0, 0, 1, 1, 2, -1, 2])
    b = np.array([3, 3, 3, 1, 1, 1, -1])
    assert pair_scores(a, b)["f_score"] == pytest.approx(pair_scores(b, a)["f_score"])


def test_rejects_mismatched_lengths_and_floats():
    with pytest.raises(ValueError, match="same length"):
        pair_counts(np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        pair_counts(np.array([0.0, 1.0]), np.array([0, 1]))
