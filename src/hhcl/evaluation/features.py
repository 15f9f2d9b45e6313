"""Evaluation straight from features: distances, optional re-ranking and metrics, one chunk of
query rows at a time, so the (Q, G) distance matrix is never held whole."""

from __future__ import annotations

import numpy as np
import torch

from hhcl.errors import HHCLError
from hhcl.evaluation.distances import as_features, check_metric, check_same_width, iter_distance_chunks, stack_features
from hhcl.evaluation.metrics import (
    GalleryIndex,
    QueryResults,
    as_distance_rows,
    as_labels,
    choose_rows_per_chunk,
    clip_max_rank,
    rank_query_chunk,
    summarize,
)
from hhcl.evaluation.reranking import check_rerank_parameters, iter_reranked_chunks


def evaluate_features(
    q_feats,
    g_feats,
    q_pids,
    g_pids,
    q_cams,
    g_cams,
    max_rank: int = 50,
    rerank: bool = False,
    cross_camera: bool = True,
    chunk_size: int | None = None,
    metric: str = "squared_euclidean",
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    dtype: torch.dtype = torch.float64,
    device=None,
) -> dict:
    """Market-1501-protocol metrics of query features against gallery features.

    Args:
        q_feats: (Q, D) and g_feats: (G, D) numpy arrays or tensors (any device).
        q_pids, q_cams: (Q,) integers; g_pids, g_cams: (G,) integers.
        max_rank, cross_camera: as in :func:`hhcl.evaluation.evaluate_ranking`.
        rerank: apply k-reciprocal re-ranking (k1, k2, lambda_value) first.
        chunk_size: query rows per chunk; the default keeps a chunk of distances near 4M
            entries (32 MiB in float64). Memory: the features in ``dtype`` plus
            O(chunk_size x (Q + G)); never the (Q, G) matrix.
        metric: "squared_euclidean" or "cosine".
        dtype: precision of the distances (float64 keeps rankings independent of chunking).
        device: where distances are computed (default: where ``q_feats`` is); ranking runs on CPU.

    Returns:
        The dict of :func:`hhcl.evaluation.evaluate_ranking`, with identical numbers to
        ``evaluate_ranking(pairwise_distance(q_feats, g_feats, metric, dtype), ...)`` (or to the
        re-ranked matrix of :func:`hhcl.evaluation.rerank_distances`).
    """
    check_metric(metric)
    if rerank:
        check_rerank_parameters(k1, k2, lambda_value)
    queries, gallery = as_features(q_feats, "q_feats"), as_features(g_feats, "g_feats")
    check_same_width(queries, gallery)
    num_query, num_gallery = queries.shape[0], gallery.shape[0]
    if num_query == 0:
        raise HHCLError("the query set is empty (q_feats has 0 rows): evaluation needs at least one query")
    q_pids = as_labels(q_pids, "q_pids", num_query, "query features")
    q_cams = as_labels(q_cams, "q_cams", num_query, "query features")
    g_pids = as_labels(g_pids, "g_pids", num_gallery, "gallery features")
    g_cams = as_labels(g_cams, "g_cams", num_gallery, "gallery features")
    max_rank = clip_max_rank(max_rank, num_gallery)
    index = GalleryIndex.build(g_pids, g_cams)

    if rerank:
        rows_per_chunk = choose_rows_per_chunk(chunk_size, num_query + num_gallery)
        features = stack_features(queries, gallery, dtype, device)
        chunks = iter_reranked_chunks(features, num_query, k1, k2, lambda_value, metric, rows_per_chunk)
    else:
        rows_per_chunk = choose_rows_per_chunk(chunk_size, num_gallery)
        device = device or queries.device
        queries, gallery = queries.to(device=device, dtype=dtype), gallery.to(device=device, dtype=dtype)
        chunks = iter_distance_chunks(queries, gallery, rows_per_chunk, metric)
    results = [
        rank_query_chunk(as_distance_rows(chunk, start), q_pids[start:stop], q_cams[start:stop], index, cross_camera)
        for start, stop, chunk in chunks
    ]
    return summarize(QueryResults.concatenate(results), max_rank)


def rerank_distances(
    q_feats,
    g_feats,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "squared_euclidean",
    dtype: torch.dtype = torch.float64,
    device=None,
    chunk_size: int | None = None,
) -> np.ndarray:
    """k-reciprocal re-ranked query x gallery distances, (Q, G) float64 numpy.

    Holds the (Q, G) result; use ``evaluate_features(..., rerank=True)`` to evaluate without it.
    """
    check_metric(metric)
    check_rerank_parameters(k1, k2, lambda_value)
    queries, gallery = as_features(q_feats, "q_feats"), as_features(g_feats, "g_feats")
    features = stack_features(queries, gallery, dtype, device)
    reranked = np.empty((queries.shape[0], gallery.shape[0]))
    rows_per_chunk = choose_rows_per_chunk(chunk_size, features.shape[0])
    chunks = iter_reranked_chunks(features, queries.shape[0], k1, k2, lambda_value, metric, rows_per_chunk)
    for start, stop, chunk in chunks:
        reranked[start:stop] = chunk
    return reranked
