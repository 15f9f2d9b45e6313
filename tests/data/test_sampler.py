"""The camera-aware PK sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hhcl.data.sampler import PKSampler, pk_indices


def groups_of(indices: list[int], num_instances: int) -> list[list[int]]:
    return [indices[start : start + num_instances] for start in range(0, len(indices), num_instances)]


def test_each_identity_once_anchor_first_others_from_other_cameras():
    # identity 0: cameras 0,0,1,1,2 ; identity 1: cameras 3,3,3,4 ; identity 2: one camera only
    labels = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    cams = np.array([0, 0, 1, 1, 2, 3, 3, 3, 4, 5, 5, 5])
    for seed in range(20):
        indices = list(PKSampler(labels, cams, num_instances=3, seed=seed))
        groups = groups_of(indices, 3)
        assert len(indices) == 9
        assert sorted(labels[group[0]] for group in groups) == [0, 1, 2]
        for group in groups:
            anchor, others = group[0], group[1:]
            assert all(labels[other] == labels[anchor] for other in others)
            pool = [i for i in range(len(labels)) if labels[i] == labels[anchor] and cams[i] != cams[anchor]]
            if pool:
                assert all(cams[other] != cams[anchor] for other in others)
                if len(pool) >= 2:
                    assert len(set(others)) == 2  # without replacement when the pool is big enough
            else:
                assert all(other != anchor for other in others)


def test_with_replacement_when_the_pool_is_small():
    labels = np.array([0, 0, 0])
    cams = np.array([0, 1, 0])
    groups = groups_of(list(PKSampler(labels, cams, num_instances=6, seed=0)), 6)
    assert len(groups) == 1
    anchor, others = groups[0][0], groups[0][1:]
    if anchor == 1:
        assert set(others) <= {0, 2}
    else:
        assert others == [1] * 5  # the only image from another camera, five times


def test_clusters_of_two_and_unknown_cameras():
    labels = np.array([0, 1, 0, 1, 2, 2])
    for seed in range(10):
        groups = groups_of(list(PKSampler(labels, None, num_instances=4, seed=seed)), 4)
        assert len(groups) == 3
        for group in groups:
            # with one camera the pool is the other image of the pair, drawn with replacement
            assert len(set(group)) == 2 and labels[group[0]] == labels[group[1]]
            assert group[1:] == [group[1]] * 3


def test_outliers_and_singletons_are_left_out():
    labels = np.array([-1, -1, 3, 3, 7, 5, 5, 5])
    cams = np.array([0, 1, 0, 1, 0, 0, 1, 2])
    sampler = PKSampler(torch.tensor(labels), torch.tensor(cams), num_instances=2, seed=1)
    indices = list(sampler)
    assert len(sampler) == len(indices) == 4
    assert set(labels[indices]) == {3, 5}


def test_deterministic_by_seed_and_new_pass_each_iteration():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 30, 400)
    cams = rng.integers(0, 6, 400)
    first = PKSampler(labels, cams, num_instances=4, seed=7)
    second = PKSampler(labels, cams, num_instances=4, seed=7)
    passes = [list(first) for _ in range(3)]
    assert passes == [list(second) for _ in range(3)]
    assert passes[0] != passes[1]
    assert list(PKSampler(labels, cams, num_instances=4, seed=8)) != passes[0]
    first.set_epoch(1)
    assert list(first) == passes[1]


def test_anchor_and_draws_are_spread_over_the_identity():
    labels = np.zeros(6, dtype=np.int64)
    cams = np.array([0, 0, 0, 1, 1, 1])
    anchors, drawn = np.zeros(6), np.zeros(6)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        group = pk_indices(labels, cams, 3, rng)
        anchors[group[0]] += 1
        np.add.at(drawn, group[1:], 1)
    assert np.allclose(anchors / anchors.sum(), 1 / 6, atol=0.03)
    assert np.allclose(drawn / drawn.sum(), 1 / 6, atol=0.03)


def test_nothing_to_sample():
    assert pk_indices(np.array([-1, -1]), np.array([0, 1]), 4, np.random.default_rng(0)).size == 0
    assert len(PKSampler([0, 1, 2], None, num_instances=4)) == 0


def test_mismatched_lengths():
    with pytest.raises(ValueError, match="cams has shape"):
        PKSampler([0, 0, 1], [0, 1], num_instances=2)
