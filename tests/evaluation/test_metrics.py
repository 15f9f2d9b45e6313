"""evaluate_ranking: hand-worked examples, a per-query scikit-learn reference, bad input."""

import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch

from hhcl.errors import HHCLError
from hhcl.evaluation import evaluate_ranking
from hhcl.evaluation.metrics import GalleryIndex

from evaluation_oracles import per_query_metrics

# Gallery of 6 for the hand-worked 5x6 example.
#   index  0  1  2  3  4  5
#   pid    1  1  1  2  2  0   (pid 0: a distractor)
#   cam    0  1  2  0  1  1
G_PIDS = [1, 1, 1, 2, 2, 0]
G_CAMS = [0, 1, 2, 0, 1, 1]
Q_PIDS = [1, 2, 2, 3, 1]
Q_CAMS = [0, 2, 0, 0, 1]
DISTMAT = [
    # q0 pid 1 cam 0: g0 is junk (same pid and cam). Kept order g3 .2, g2 .3*, g5 .4, g1 .5*, g4 .9
    #   -> matches at ranks 2 and 4: AP = (1/2 + 2/4) / 2 = 1/2, first match 2, INP = 2/4.
    [0.1, 0.5, 0.3, 0.2, 0.9, 0.4],
    # q1 pid 2 cam 2: nothing is junk. g1 and g3 tie at .1 and the lower index goes first:
    #   g1 .1, g3 .1*, g4 .2*, g5 .3, g0 .6, g2 .8 -> ranks 2, 3: AP = 7/12, first 2, INP = 2/3.
    [0.6, 0.1, 0.8, 0.1, 0.2, 0.3],
    # q2 pid 2 cam 0: g3 (the closest) is junk. g5 .2, g0 .4, g1 .5, g2 .6, g4 .7*
    #   -> rank 5: AP = 1/5, first 5, INP = 1/5.
    [0.4, 0.5, 0.6, 0.05, 0.7, 0.2],
    # q3 pid 3: no such pid in the gallery -> skipped.
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
    # q4 pid 1 cam 1: g1 is junk. Three-way tie at .3 in index order:
    #   g5 .2, g0 .3*, g2 .3*, g3 .3, g4 .5 -> ranks 2, 3: AP = (1/2 + 2/3) / 2 = 7/12, first 2, INP 2/3.
    [0.3, 0.01, 0.3, 0.3, 0.5, 0.2],
]


def test_hand_worked_example_cross_camera():
    result = evaluate_ranking(np.array(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5)
    assert result["num_valid_queries"] == 4
    assert result["num_skipped_queries"] == 1
    assert result["mAP"] == pytest.approx(float(Fraction(7, 15)), abs=1e-15)  # (1/2 + 7/12 + 1/5 + 7/12) / 4
    np.testing.assert_allclose(result["cmc"], [0, 3 / 4, 3 / 4, 3 / 4, 1], atol=1e-15)
    assert result["mINP"] == pytest.approx(float(Fraction(61, 120)), abs=1e-15)  # (1/2 + 2/3 + 1/5 + 2/3) / 4


def test_hand_worked_example_same_camera_kept():
    # Nothing is junk now:
    # q0: g0 .1*, g3 .2, g2 .3*, g5 .4, g1 .5*, g4 .9 -> AP (1 + 2/3 + 3/5) / 3 = 34/45, first 1, INP 3/5
    # q1: as before -> 7/12, first 2, INP 2/3
    # q2: g3 .05*, g5, g0, g1, g2, g4 .7* -> AP (1 + 2/6) / 2 = 2/3, first 1, INP 2/6
    # q4: g1 .01*, g5 .2, g0 .3*, g2 .3*, g3 .3, g4 -> AP (1 + 2/3 + 3/4) / 3 = 29/36, first 1, INP 3/4
    result = evaluate_ranking(np.array(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=3, cross_camera=False)
    assert (result["num_valid_queries"], result["num_skipped_queries"]) == (4, 1)
    assert result["mAP"] == pytest.approx(float(Fraction(253, 360)), abs=1e-15)
    np.testing.assert_allclose(result["cmc"], [3 / 4, 1, 1], atol=1e-15)
    assert result["mINP"] == pytest.approx(float(Fraction(47, 80)), abs=1e-15)


def test_single_shot():
    # VIPeR/PRID style: queries in camera 0, one true match each in camera 1, plus a distractor.
    g_pids, g_cams = [1, 2, 3, 4, 5, 0], [1] * 6
    q_pids, q_cams = [1, 2, 3, 4, 5], [0] * 5
    distmat = [
        [0.1, 0.5, 0.6, 0.7, 0.8, 0.9],  # true match first
        [0.2, 0.4, 0.9, 0.3, 0.8, 0.7],  # g0, g3 come first: rank 3
        [0.9, 0.8, 0.0, 0.7, 0.6, 0.5],  # rank 1
        [0.1, 0.2, 0.3, 0.9, 0.4, 0.5],  # last: rank 6
        [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],  # all tie, index order: rank 5
    ]
    result = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=6)
    # One match per query: AP = INP = 1 / rank.
    expected = float(Fraction(1) + Fraction(1, 3) + 1 + Fraction(1, 6) + Fraction(1, 5)) / 5
    assert result["mAP"] == pytest.approx(expected, abs=1e-15)
    assert result["mINP"] == pytest.approx(expected, abs=1e-15)
    np.testing.assert_allclose(result["cmc"], [2 / 5, 2 / 5, 3 / 5, 3 / 5, 4 / 5, 1], atol=1e-15)
    assert result["num_valid_queries"] == 5


def random_problem(rng, num_query, num_gallery, num_ids, num_cams, dtype=np.float64):
    """Random labels and tie-free distances (each row a permutation of distinct values)."""
    q_pids = rng.integers(0, num_ids, num_query)
    g_pids = rng.integers(0, num_ids, num_gallery)
    q_cams = rng.integers(0, num_cams, num_query)
    g_cams = rng.integers(0, num_cams, num_gallery)
    distmat = np.stack([rng.permutation(num_gallery) for _ in range(num_query)]).astype(dtype) / num_gallery
    distmat += rng.random((num_query, 1)).astype(dtype)
    return distmat, q_pids, g_pids, q_cams, g_cams


def assert_same_metrics(result, expected, exact=False):
    assert result["num_valid_queries"] == expected["num_valid_queries"]
    assert result["num_skipped_queries"] == expected["num_skipped_queries"]
    if exact:
        assert result["mAP"] == expected["mAP"] and result["mINP"] == expected["mINP"]
        np.testing.assert_array_equal(result["cmc"], expected["cmc"])
    else:
        assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
        assert result["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
        np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_matches_per_query_sklearn_reference(seed):
    rng = np.random.default_rng(seed)
    num_query, num_gallery = int(rng.integers(1, 80)), int(rng.integers(2, 300))
    problem = random_problem(rng, num_query, num_gallery, int(rng.integers(2, 25)), int(rng.integers(1, 5)))
    cross_camera = bool(seed % 3)
    max_rank = min(20, num_gallery)
    if not has_valid_query(*problem[1:], cross_camera):
        with pytest.raises(HHCLError, match="none of the"):
            evaluate_ranking(*problem, max_rank=max_rank, cross_camera=cross_camera)
        return
    expected = per_query_metrics(*problem, max_rank, cross_camera)
    for chunk_size in (None, 1, int(rng.integers(2, 30))):
        result = evaluate_ranking(*problem, max_rank=max_rank, cross_camera=cross_camera, chunk_size=chunk_size)
        assert_same_metrics(result, expected)


def has_valid_query(q_pids, g_pids, q_cams, g_cams, cross_camera):
    true_match = q_pids[:, None] == g_pids[None, :]
    if cross_camera:
        true_match &= q_cams[:, None] != g_cams[None, :]
    return bool(true_match.any())


def test_market_like_problem_with_distractors_matches_reference():
    rng = np.random.default_rng(7)
    num_ids, num_cams = 40, 6
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, 500), np.zeros(100, dtype=np.int64)])
    g_cams = rng.integers(0, num_cams, len(g_pids))
    q_pids, q_cams = rng.integers(1, num_ids + 1, 120), rng.integers(0, num_cams, 120)
    centres = rng.normal(size=(num_ids + 1, 16))
    q_feats = centres[q_pids] + rng.normal(size=(120, 16))
    g_feats = centres[g_pids] + rng.normal(size=(len(g_pids), 16))
    distmat = ((q_feats[:, None, :] - g_feats[None, :, :]) ** 2).sum(-1)
    expected = per_query_metrics(distmat, q_pids, g_pids, q_cams, g_cams, 50)
    assert 0.1 < expected["mAP"] < 0.99  # neither trivial nor hopeless
    assert_same_metrics(evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams), expected)


def test_torch_and_float32_inputs_give_the_same_numbers():
    rng = np.random.default_rng(3)
    distmat, q_pids, g_pids, q_cams, g_cams = random_problem(rng, 50, 120, 8, 3, dtype=np.float32)
    expected = evaluate_ranking(distmat, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    as_torch = evaluate_ranking(
        torch.from_numpy(distmat), torch.from_numpy(q_pids), torch.from_numpy(g_pids), torch.from_numpy(q_cams),
        torch.from_numpy(g_cams), max_rank=10,
    )
    assert_same_metrics(as_torch, expected, exact=True)
    as_float64 = evaluate_ranking(distmat.astype(np.float64), q_pids.tolist(), g_pids, q_cams, g_cams, max_rank=10)
    assert_same_metrics(as_float64, expected, exact=True)
    assert_same_metrics(expected, per_query_metrics(distmat, q_pids, g_pids, q_cams, g_cams, 10))


def test_same_pid_pairs_lists_each_querys_gallery_entries_in_order():
    index = GalleryIndex.build(np.array([3, 1, 3, 2, 1, 3]), np.zeros(6, dtype=np.int64))
    rows, cols = index.same_pid_pairs(np.array([1, 4, 3, 0, 2]))
    assert rows.tolist() == [0, 0, 2, 2, 2, 4]
    assert cols.tolist() == [1, 4, 0, 2, 5, 3]


# Bad input: each gets one line naming the problem.


def one_line_error(call, *args, match, **kwargs):
    with pytest.raises(HHCLError, match=match) as caught:
        call(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_shapes_and_lengths_must_agree():
    distmat = np.array(DISTMAT)
    one_line_error(evaluate_ranking, distmat[0], Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, match="2-D")
    one_line_error(
        evaluate_ranking, distmat, Q_PIDS[:4], G_PIDS, Q_CAMS, G_CAMS, match="q_pids has 4 entries.*5 distmat rows"
    )
    one_line_error(
        evaluate_ranking, distmat, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS[:5], match="g_cams has 5 entries.*6 distmat columns"
    )
    one_line_error(evaluate_ranking, distmat, Q_PIDS, [G_PIDS], Q_CAMS, G_CAMS, match="g_pids must be 1-D")
    one_line_error(
        evaluate_ranking, distmat, [1.5, 2, 2, 3, 1], G_PIDS, Q_CAMS, G_CAMS, match="q_pids must hold integers"
    )


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_distances_are_refused(bad_value):
    distmat = np.array(DISTMAT)
    distmat[2, 3] = bad_value
    one_line_error(
        evaluate_ranking, distmat, Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, match=r"distmat\[2, 3\] is .*finite"
    )
    one_line_error(
        evaluate_ranking, torch.from_numpy(distmat), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=5, chunk_size=2,
        match=r"distmat\[2, 3\]",
    )


def test_no_valid_query_is_refused():
    # Every query's only match sits in its own camera.
    one_line_error(
        evaluate_ranking, np.ones((2, 3)), [1, 2], [1, 2, 0], [0, 1], [0, 1, 0], max_rank=3,
        match="none of the 2 queries",
    )


def test_max_rank_larger_than_gallery_is_clipped_with_a_warning():
    with pytest.warns(UserWarning, match="max_rank=50 is larger than the gallery \\(6\\)"):
        result = evaluate_ranking(np.array(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS)
    assert result["cmc"].shape == (6,)
    assert result["cmc"][-1] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate_ranking(np.array(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=6)
    one_line_error(
        evaluate_ranking, np.array(DISTMAT), Q_PIDS, G_PIDS, Q_CAMS, G_CAMS, max_rank=0,
        match="max_rank must be at least",
    )
