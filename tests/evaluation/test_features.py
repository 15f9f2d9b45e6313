"""evaluate_features: chunked distances + ranking give exactly evaluate_ranking's numbers."""

import numpy as np
import pytest
import torch

from hhcl.errors import HHCLError
from hhcl.evaluation import evaluate_features, evaluate_ranking, pairwise_distance

from evaluation_oracles import assert_identical, clustered_features, per_query_metrics


@pytest.mark.parametrize("metric", ["squared_euclidean", "cosine"])
@pytest.mark.parametrize("cross_camera", [True, False])
def test_identical_to_evaluate_ranking_on_the_full_matrix(metric, cross_camera):
    q_feats, g_feats, q_pids, g_pids, q_cams, g_cams = clustered_features(seed=1)
    labels = (q_pids, g_pids, q_cams, g_cams)
    distmat = pairwise_distance(q_feats, g_feats, metric=metric)
    expected = evaluate_ranking(distmat, *labels, max_rank=20, cross_camera=cross_camera)
    assert 0.05 < expected["mAP"] < 0.95
    for chunk_size in (None, 1, 7, 60, 1000):
        result = evaluate_features(
            q_feats, g_feats, *labels, max_rank=20, cross_camera=cross_camera, chunk_size=chunk_size, metric=metric
        )
        assert_identical(result, expected)


def test_matches_the_per_query_reference_and_accepts_torch_float32():
    q_feats, g_feats, q_pids, g_pids, q_cams, g_cams = clustered_features(seed=2)
    labels = (q_pids, g_pids, q_cams, g_cams)
    distances = ((q_feats[:, None, :] - g_feats[None, :, :]) ** 2).sum(-1)
    expected = per_query_metrics(distances, *labels, 10)
    result = evaluate_features(q_feats, g_feats, *labels, max_rank=10, chunk_size=16)
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-12)
    assert result["mINP"] == pytest.approx(expected["mINP"], abs=1e-12)
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-12)
    # float32 features are widened to float64 before any arithmetic.
    as_torch = evaluate_features(
        torch.from_numpy(q_feats.astype(np.float32)), torch.from_numpy(g_feats.astype(np.float32)),
        *(torch.from_numpy(labels_) for labels_ in labels), max_rank=10,
    )
    reference = evaluate_ranking(
        pairwise_distance(q_feats.astype(np.float32), g_feats.astype(np.float32)), *labels, max_rank=10
    )
    assert_identical(as_torch, reference)


def test_cosine_equals_half_squared_euclidean_on_unit_features():
    q_feats, g_feats, *_ = clustered_features(seed=3, num_query=5, num_gallery=9)
    q_unit = q_feats / np.linalg.norm(q_feats, axis=1, keepdims=True)
    g_unit = g_feats / np.linalg.norm(g_feats, axis=1, keepdims=True)
    cosine = pairwise_distance(q_feats, g_feats, metric="cosine")
    np.testing.assert_allclose(cosine.numpy(), 1 - q_unit @ g_unit.T, atol=1e-14)
    np.testing.assert_allclose(pairwise_distance(q_unit, g_unit).numpy(), 2 * cosine.numpy(), atol=1e-14)
    np.testing.assert_allclose(
        pairwise_distance(q_feats, g_feats).numpy(), ((q_feats[:, None] - g_feats[None]) ** 2).sum(-1), atol=1e-12
    )


def test_distances_are_ranked_one_chunk_at_a_time(monkeypatch):
    import hhcl.evaluation.features as features_module

    ranked_rows = []
    rank_query_chunk = features_module.rank_query_chunk

    def recording_rank_query_chunk(distances, *args, **kwargs):
        ranked_rows.append(distances.shape)
        return rank_query_chunk(distances, *args, **kwargs)

    monkeypatch.setattr(features_module, "rank_query_chunk", recording_rank_query_chunk)
    q_feats, g_feats, *labels = clustered_features(seed=6, num_query=30, num_gallery=80)
    evaluate_features(q_feats, g_feats, *labels, max_rank=10, chunk_size=7)
    assert ranked_rows == [(7, 80)] * 4 + [(2, 80)]
    ranked_rows.clear()
    evaluate_features(q_feats, g_feats, *labels, max_rank=10, chunk_size=8, rerank=True)
    assert ranked_rows == [(8, 80)] * 3 + [(6, 80)]


def test_float32_distances_are_close_to_float64():
    q_feats, g_feats, *labels = clustered_features(seed=7)
    in_float64 = evaluate_features(q_feats, g_feats, *labels, max_rank=10)
    in_float32 = evaluate_features(q_feats, g_feats, *labels, max_rank=10, dtype=torch.float32, chunk_size=13)
    assert in_float32["mAP"] == pytest.approx(in_float64["mAP"], abs=1e-4)
    assert in_float32["mINP"] == pytest.approx(in_float64["mINP"], abs=1e-4)
    np.testing.assert_allclose(in_float32["cmc"], in_float64["cmc"], atol=0.02)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_gives_the_cpu_numbers():
    q_feats, g_feats, *labels = clustered_features(seed=4)
    on_cpu = evaluate_features(q_feats, g_feats, *labels, max_rank=20)
    on_gpu = evaluate_features(torch.from_numpy(q_feats).cuda(), torch.from_numpy(g_feats).cuda(), *labels, max_rank=20)
    assert_identical(on_gpu, on_cpu)
    assert_identical(evaluate_features(q_feats, g_feats, *labels, max_rank=20, rerank=True, device="cuda"),
                     evaluate_features(q_feats, g_feats, *labels, max_rank=20, rerank=True))


def test_bad_features_get_one_line_errors():
    q_feats, g_feats, q_pids, g_pids, q_cams, g_cams = clustered_features(seed=5, num_query=6, num_gallery=12)

    def refused(match, *args, **kwargs):
        with pytest.raises(HHCLError, match=match) as caught:
            evaluate_features(*args, max_rank=5, **kwargs)
        assert "\n" not in str(caught.value)

    refused("q_feats are 24-d but g_feats are 23-d", q_feats, g_feats[:, :23], q_pids, g_pids, q_cams, g_cams)
    refused("g_pids has 11 entries but there are 12 gallery", q_feats, g_feats, q_pids, g_pids[:11], q_cams, g_cams)
    refused("q_cams has 5 entries but there are 6 query", q_feats, g_feats, q_pids, g_pids, q_cams[:5], g_cams)
    refused("q_feats must be 2-D", q_feats[0], g_feats, q_pids, g_pids, q_cams, g_cams)
    with_nan = g_feats.copy()
    with_nan[4, 2] = np.nan
    refused(r"g_feats\[4\] holds NaN or inf", q_feats, with_nan, q_pids, g_pids, q_cams, g_cams)
    refused("unknown distance metric 'manhattan'", q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, metric="manhattan")
    refused("k1 must be a positive integer", q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, rerank=True, k1=0)
    refused("lambda_value must lie in", q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, rerank=True, lambda_value=1.5)
    refused("none of the 6 queries", q_feats, g_feats, q_pids + 100, g_pids, q_cams, g_cams)
    refused("chunk_size must be a positive number", q_feats, g_feats, q_pids, g_pids, q_cams, g_cams, chunk_size=0)
