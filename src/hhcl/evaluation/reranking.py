"""k-reciprocal re-ranking (Zhong et al., "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017) with sparse neighbourhoods.

The textbook implementation allocates several dense (Q+G)^2 matrices (distances, ranks, the
neighbourhood weights V and their query expansion). Each row of V has only a few dozen non-zeros,
so here V is a scipy.sparse matrix, the ranking keeps only each row's nearest neighbours, and
the full distance matrix is only ever held one chunk of rows at a time. The numbers are those of
the textbook algorithm: the same neighbour sets, weights and Jaccard distances, the weights in
float64 (the textbook stores V in float16 to save memory; sparse storage makes that unnecessary).

Notation, for N = Q + G features (queries first):
- ``d(i, j)``: the original distance; ``od(i, j) = d(i, j) / max_j' d(i, j')``, each row scaled by
  its own maximum.
- ``nearest[i]``: all points ordered by ``od(i, .)``, equal values in index order; the first
  entry is normally ``i`` itself.
- ``R(i, k)``: the k-reciprocal neighbours, ``j`` in ``nearest[i, :k+1]`` with ``i`` in
  ``nearest[j, :k+1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sparse
import torch

from hhcl.cluster.jaccard import (
    expanded_neighbourhoods,
    half_width,
    k_reciprocal_sets,
    neighbour_pattern,
    stored_pair_values,
)
from hhcl.errors import HHCLError
from hhcl.evaluation.distances import distance_block, pair_distances, row_norms
from hhcl.evaluation.metrics import choose_rows_per_chunk

# Nearest neighbours kept per row, in units of k1 + 1: twice what the reciprocal sets need, so
# that most distances of the expanded neighbourhoods are already stored by the one pass and few
# are computed again (time and memory of re-ranking: docs/benchmarks.md, Evaluation).
STORED_NEIGHBOUR_FACTOR = 2


@dataclass(frozen=True)
class Neighbourhoods:
    """Each point's nearest neighbours from one pass over the distance matrix.

    ``nearest``: (N, K) int64, ordered by (od, index). ``nearest_od``: (N, K) float64, their
    ``od`` values. ``row_max``: (N,) float64, the scale of each row of ``od``.
    """

    nearest: np.ndarray
    nearest_od: np.ndarray
    row_max: np.ndarray


def check_rerank_parameters(k1: int, k2: int, lambda_value: float) -> tuple[int, int, float]:
    """The parameters as (int, int, float); HHCLError when out of range."""
    if int(k1) != k1 or k1 < 1:
        raise HHCLError(f"re-ranking k1 must be a positive integer, got {k1} (the paper uses 20)")
    if int(k2) != k2 or k2 < 1:
        raise HHCLError(f"re-ranking k2 must be a positive integer, got {k2} (the paper uses 6)")
    if not 0.0 <= lambda_value <= 1.0:
        raise HHCLError(f"re-ranking lambda_value must lie in [0, 1], got {lambda_value} (the paper uses 0.3)")
    return int(k1), int(k2), float(lambda_value)


def smallest_in_rows(values: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k smallest entries of each row, ordered by (value, column).

    ``values``: (R, C) finite; ``k`` <= C. Returns (R, k) int64. Ties at the k-th value go to
    the lower column, as a stable argsort would give.
    """
    if k == values.shape[1]:
        return np.argsort(values, axis=1, kind="stable")
    # torch.topk returns just the k picks, where argpartition would allocate a full index array.
    selected = torch.topk(torch.from_numpy(values), k, dim=1, largest=False, sorted=False).indices.numpy()
    kth_value = np.take_along_axis(values, selected, axis=1).max(axis=1)
    # topk picks arbitrarily among entries equal to the k-th value: redo those rows.
    ambiguous = np.flatnonzero(np.count_nonzero(values <= kth_value[:, None], axis=1) > k)
    if len(ambiguous):
        selected[ambiguous] = np.argsort(values[ambiguous], axis=1, kind="stable")[:, :k]
    selected.sort(axis=1)
    order = np.argsort(np.take_along_axis(values, selected, axis=1), axis=1, kind="stable")
    return np.take_along_axis(selected, order, axis=1)


def nearest_neighbours(
    features: torch.Tensor, num_neighbours: int, metric: str, rows_per_chunk: int
) -> Neighbourhoods:
    """One chunked pass over all (N, N) distances of ``features`` (N, D)."""
    num_points = features.shape[0]
    norms = row_norms(features, metric)
    nearest = np.empty((num_points, num_neighbours), dtype=np.int64)
    nearest_od = np.empty((num_points, num_neighbours))
    row_max = np.empty(num_points)
    block = features.new_empty((min(rows_per_chunk, num_points), num_points))
    for start in range(0, num_points, rows_per_chunk):
        stop = min(start + rows_per_chunk, num_points)
        distances = distance_block(
            features[start:stop], norms[start:stop], features, norms, metric, out=block[: stop - start]
        )
        od = distances.cpu().numpy()
        block_max = od.max(axis=1)
        # A row of all-zero distances (every point identical) stays all zero instead of 0/0.
        block_max[block_max == 0] = 1.0
        od /= block_max[:, None]
        nearest[start:stop] = smallest_in_rows(od, num_neighbours)
        nearest_od[start:stop] = np.take_along_axis(od, nearest[start:stop], axis=1)
        row_max[start:stop] = block_max
    return Neighbourhoods(nearest, nearest_od, row_max)


def reciprocal_neighbours(nearest: np.ndarray, k: int) -> sparse.csr_matrix:
    """(N, N) 0/1 matrix of ``R(i, k)``: row i marks j when each is in the other's k+1 nearest."""
    return k_reciprocal_sets(nearest, k + 1)


def expanded_neighbours(nearest: np.ndarray, k1: int) -> sparse.csr_matrix:
    """(N, N) 0/1 pattern of the expanded set: ``R(i, k1)`` plus ``R(c, round(k1/2))`` of every
    c in ``R(i, k1)`` that shares more than 2/3 of ``R(c, round(k1/2))`` with ``R(i, k1)``.

    The clustering's sets: its prefixes count the point itself, k1 + 1 and round(k1/2) + 1 here.
    """
    return expanded_neighbourhoods(nearest, k1 + 1, half=half_width(k1))


def neighbourhood_weights(
    pattern: sparse.csr_matrix, neighbourhoods: Neighbourhoods, features: torch.Tensor, metric: str
) -> sparse.csr_matrix:
    """V: on row i, ``exp(-od(i, j))`` over the pattern's j, normalised to sum to 1. (N, N) float64."""
    num_points = pattern.shape[0]
    rows = np.repeat(np.arange(num_points), np.diff(pattern.indptr))
    od = _lookup_od(rows, pattern.indices, neighbourhoods, features, metric)
    weights = np.exp(-od)
    row_sums = np.bincount(rows, weights=weights, minlength=num_points)
    normalised = weights / row_sums[rows]
    return sparse.csr_matrix((normalised, pattern.indices.copy(), pattern.indptr.copy()), shape=pattern.shape)


def _lookup_od(rows, cols, neighbourhoods: Neighbourhoods, features: torch.Tensor, metric: str) -> np.ndarray:
    """``od(rows[t], cols[t])``: from the stored nearest neighbours, computing the rest. (M,) float64."""
    od, found = stored_pair_values(neighbourhoods.nearest, neighbourhoods.nearest_od, rows, cols)
    missing = np.flatnonzero(~found)
    if len(missing):
        distances = pair_distances(features, row_norms(features, metric), rows[missing], cols[missing], metric)
        od[missing] = distances / neighbourhoods.row_max[rows[missing]]
    return od


def query_expansion(weights: sparse.csr_matrix, nearest: np.ndarray, k2: int) -> sparse.csr_matrix:
    """Each row of V replaced by the mean of the rows of its k2 nearest neighbours. (N, N)."""
    width = min(k2, nearest.shape[1])
    averaged = (neighbour_pattern(nearest, width, dtype=np.float64) @ weights) / width
    averaged.sort_indices()
    return averaged


def min_overlap(query_weights: sparse.csr_matrix, gallery_weights_by_column: sparse.csc_matrix) -> np.ndarray:
    """``sum_k min(V[i, k], V[j, k])`` for query rows i and gallery rows j. (C, G) float64.

    ``query_weights``: (C, N) csr rows of V; ``gallery_weights_by_column``: (G, N) csc, the
    gallery rows of V, so column k lists the gallery rows that weigh k.
    """
    num_rows = query_weights.shape[0]
    num_gallery = gallery_weights_by_column.shape[0]
    query_rows = np.repeat(np.arange(num_rows), np.diff(query_weights.indptr))
    shared_columns = query_weights.indices
    column_starts = gallery_weights_by_column.indptr[shared_columns]
    column_lengths = gallery_weights_by_column.indptr[shared_columns + 1] - column_starts
    offsets = np.arange(column_lengths.sum()) - np.repeat(np.cumsum(column_lengths) - column_lengths, column_lengths)
    entries = np.repeat(column_starts, column_lengths) + offsets
    minima = np.minimum(np.repeat(query_weights.data, column_lengths), gallery_weights_by_column.data[entries])
    flat_targets = np.repeat(query_rows, column_lengths) * num_gallery + gallery_weights_by_column.indices[entries]
    return np.bincount(flat_targets, weights=minima, minlength=num_rows * num_gallery).reshape(num_rows, num_gallery)


def iter_reranked_chunks(
    features: torch.Tensor,
    num_query: int,
    k1: int = 20,
    k2: int = 6,
    lambda_value: float = 0.3,
    metric: str = "squared_euclidean",
    rows_per_chunk: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, re-ranked distances (stop - start, G) float64)`` for the queries.

    ``features``: (Q + G, D) checked tensor, the ``num_query`` queries first.
    Final distance: ``(1 - lambda) * jaccard + lambda * od``.
    """
    k1, k2, lambda_value = check_rerank_parameters(k1, k2, lambda_value)
    num_points = features.shape[0]
    rows_per_chunk = choose_rows_per_chunk(rows_per_chunk, num_points)
    num_stored = min(num_points, max(STORED_NEIGHBOUR_FACTOR * (k1 + 1), k2))
    neighbourhoods = nearest_neighbours(features, num_stored, metric, rows_per_chunk)
    weights = neighbourhood_weights(expanded_neighbours(neighbourhoods.nearest, k1), neighbourhoods, features, metric)
    if k2 != 1:
        weights = query_expansion(weights, neighbourhoods.nearest, k2)
    gallery_weights_by_column = weights[num_query:].tocsc()
    gallery_weights_by_column.sort_indices()

    norms = row_norms(features, metric)
    gallery, gallery_norms = features[num_query:], norms[num_query:]
    num_gallery = gallery.shape[0]
    # Buffers reused by every chunk; each yielded chunk is overwritten by the next.
    distance_buffer = features.new_empty((min(rows_per_chunk, num_query), num_gallery))
    denominator_buffer = np.empty((min(rows_per_chunk, num_query), num_gallery))
    for start in range(0, num_query, rows_per_chunk):
        stop = min(start + rows_per_chunk, num_query)
        distances = distance_block(
            features[start:stop], norms[start:stop], gallery, gallery_norms, metric, out=distance_buffer[: stop - start]
        )
        od = distances.cpu().numpy()
        od /= neighbourhoods.row_max[start:stop, None]
        reranked = min_overlap(weights[start:stop], gallery_weights_by_column)
        denominator = np.subtract(2.0, reranked, out=denominator_buffer[: stop - start])
        np.divide(reranked, denominator, out=reranked)
        np.subtract(1.0, reranked, out=reranked)  # the Jaccard distance, 1 - shared / (2 - shared)
        reranked *= 1 - lambda_value
        od *= lambda_value
        reranked += od
        yield start, stop, reranked
