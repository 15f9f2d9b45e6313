"""The k-reciprocal Jaccard distance of SpCL / cluster-contrast / HHCL, without any N x N array.

The textbook version (Zhong et al.'s re-ranking, as adapted by SpCL) on ranked lists of the
k1 nearest neighbours (each point itself included):

1. R(i): the j among the first k1 of i's list whose own first k1 contain i.
   R_half(i): the same with the first round(k1/2) + 1.
2. E(i) = R(i), plus R_half(c) for every c in R(i) with |R_half(c) & R(i)| > 2/3 |R_half(c)|.
3. V[i, j] = softmax over j in E(i) of -(2 - 2 <x_i, x_j>), the squared distance.
4. V[i] <- mean of V[j] over the first k2 of i's list (skipped when k2 = 1).
5. d(i, j) = 1 - s / (2 - s) with s = sum_k min(V[i, k], V[j, k]); negative d clipped to 0.

Here every set is a CSR matrix and every step runs over all rows at once with numpy and
scipy.sparse. V has about |E| entries per row, and step 5 only visits pairs that share a column
of V, so memory and time grow with N times the neighbourhood sizes, not with N^2.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from hhcl.cluster.knn import as_feature_tensor, nearest_neighbours
from hhcl.errors import HHCLError

# Pairwise minima summed in one go in step 5: keeps the temporary arrays (about 40 bytes per
# term) small enough for malloc to reuse instead of mapping fresh pages for every chunk.
_TERMS_PER_CHUNK = 1 << 20


def half_width(k1: int) -> int:
    """Length of the ranked-list prefix behind R_half: round(k1/2) + 1, rounding half to even
    like numpy's ``around`` in the reference code (k1=30 -> 16, k1=25 -> 13)."""
    return round(k1 / 2) + 1


def neighbour_pattern(ranked: np.ndarray, width: int, value: float = 1.0, dtype=np.int32) -> sp.csr_matrix:
    """(N, N) CSR with `value` at (i, j) for j among the first `width` entries of ranked[i].

    ranked: (N, >= width) int64, -1 for missing neighbours (skipped). Indices sorted per row.
    """
    n = ranked.shape[0]
    columns = ranked[:, :width]
    valid = columns >= 0
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(valid.sum(axis=1), out=indptr[1:])
    # Missing neighbours sort to the end of their row as n, then drop out.
    padded = np.sort(np.where(valid, columns, n), axis=1)
    indices = padded[padded < n]
    data = np.full(indices.shape[0], value, dtype=dtype)
    pattern = sp.csr_matrix((data, indices, indptr), shape=(n, n))
    pattern.sum_duplicates()  # an approximate index may list a neighbour twice
    return pattern


def k_reciprocal_sets(ranked: np.ndarray, width: int) -> sp.csr_matrix:
    """R(i) = {j in first `width` of ranked[i] : i in first `width` of ranked[j]}.

    ranked: (N, >= width) int64. Returns (N, N) CSR, data int32 ones, indices sorted per row.
    """
    forward = neighbour_pattern(ranked, width)
    forward.data[:] = 1
    mutual = forward.multiply(forward.T.tocsr()).tocsr()
    mutual.data[:] = 1
    mutual.sort_indices()
    return mutual


def expanded_neighbourhoods(ranked: np.ndarray, k1: int, half: int | None = None) -> sp.csr_matrix:
    """E(i): the k1-reciprocal set of i grown by the half-reciprocal sets of its members that
    overlap it by more than 2/3 (step 2 of the module docstring).

    ranked: (N, >= k1) int64. half: the prefix behind R_half, half_width(k1) unless given (the
    re-ranking counts k1 without the point itself, so its prefixes are k1 + 1 and half_width(k1)).
    Returns (N, N) CSR pattern, data int32 ones, sorted indices.
    """
    reciprocal = k_reciprocal_sets(ranked, k1)
    half = k_reciprocal_sets(ranked, half_width(k1) if half is None else half)
    half_sizes = np.diff(half.indptr)
    # overlap[i, c] = |R(i) & R_half(c)|, read only where c is in R(i).
    overlap = (reciprocal @ half).tocsr()  # the reciprocal relation is symmetric: half.T == half
    at_members = reciprocal.multiply(overlap).tocsr()
    at_members.sort_indices()
    # Written like the reference (a float 2/3 times the size) so that the rounding agrees.
    accepted = at_members.data > (2 / 3) * half_sizes[at_members.indices]
    member_rows = np.repeat(np.arange(ranked.shape[0]), np.diff(at_members.indptr))
    accepted_members = sp.csr_matrix(
        (np.ones(int(accepted.sum()), dtype=np.int32), (member_rows[accepted], at_members.indices[accepted])),
        shape=reciprocal.shape,
    )
    expanded = (reciprocal + accepted_members @ half).tocsr()
    expanded.sum_duplicates()
    expanded.data[:] = 1
    return expanded


def stored_pair_values(
    ranked: np.ndarray, stored: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The values stored with the ranked lists for the pairs (rows[t], cols[t]).

    ranked: (N, K) int64, -1 for missing neighbours. stored: (N, K), the value of each listed
    pair (a similarity, a distance). rows, cols: (P,) int64.
    Returns values (P,) float64, 0 where the pair is not listed, and found (P,) bool.
    """
    n = ranked.shape[0]
    by_index = np.argsort(ranked, axis=1)
    known_cols = np.take_along_axis(ranked, by_index, axis=1)
    known_values = np.take_along_axis(stored, by_index, axis=1).astype(np.float64)
    valid = known_cols >= 0
    # Sorted within rows and rows in order: the keys are sorted overall.
    known_keys = (np.arange(n, dtype=np.int64)[:, None] * n + known_cols)[valid]
    known_values = known_values[valid]
    wanted = rows.astype(np.int64) * n + cols
    slot = np.minimum(np.searchsorted(known_keys, wanted), known_keys.shape[0] - 1)
    found = known_keys[slot] == wanted
    return np.where(found, known_values[slot], 0.0), found


def pair_similarities(
    features: torch.Tensor,
    ranked: np.ndarray,
    ranked_similarities: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """<x_i, x_j> for the pairs (rows[t], cols[t]), in float64.

    Pairs found in the kNN lists reuse the similarity computed there; the few others (brought in
    by the expansion) are computed from `features` (N, D) on its device.
    ranked, ranked_similarities: (N, k) from the kNN. rows, cols: (P,) int64, sorted by (row, col).
    """
    sims, found = stored_pair_values(ranked, ranked_similarities, rows, cols)
    missing = np.flatnonzero(~found)
    pairs_per_batch = 1024
    points = features.numpy() if features.device.type == "cpu" else None
    for start in range(0, missing.shape[0], pairs_per_batch):
        batch = missing[start : start + pairs_per_batch]
        if points is not None:
            # numpy's row gather is several times faster than torch's on CPU here.
            sims[batch] = np.einsum("ij,ij->i", points[rows[batch]], points[cols[batch]])
        else:
            left = features[torch.from_numpy(rows[batch]).to(features.device)]
            right = features[torch.from_numpy(cols[batch]).to(features.device)]
            sims[batch] = (left * right).sum(dim=1).double().cpu().numpy()
    return sims


def neighbourhood_weights(expanded: sp.csr_matrix, similarities: np.ndarray) -> sp.csr_matrix:
    """V: per row of `expanded`, the softmax of -(2 - 2 s) over its entries (step 3).

    expanded: (N, N) CSR pattern. similarities: (nnz,) float64, aligned with expanded's entries.
    Returns (N, N) CSR float32 on the same pattern; each non-empty row sums to 1.
    """
    n = expanded.shape[0]
    row_lengths = np.diff(expanded.indptr)
    rows = np.repeat(np.arange(n), row_lengths)
    # softmax(-(2 - 2 s)) = softmax(2 s); subtracting the row maximum keeps exp in range.
    logits = 2.0 * similarities
    row_max = np.zeros(n)
    non_empty = row_lengths > 0
    if non_empty.any():
        row_max[non_empty] = np.maximum.reduceat(logits, expanded.indptr[:-1][non_empty])
    exps = np.exp(logits - row_max[rows])
    row_sums = np.bincount(rows, weights=exps, minlength=n)
    weights = (exps / row_sums[rows]).astype(np.float32)
    return sp.csr_matrix((weights, expanded.indices.copy(), expanded.indptr.copy()), shape=expanded.shape)


def query_expansion(weights: sp.csr_matrix, ranked: np.ndarray, k2: int) -> sp.csr_matrix:
    """V[i] <- mean of V[j] over the first k2 of ranked[i] (step 4); unchanged when k2 == 1.

    weights: (N, N) CSR float32. ranked: (N, >= k2) int64. Returns (N, N) CSR float32.
    """
    if k2 == 1:
        return weights
    averaging = neighbour_pattern(ranked, k2, value=1.0 / k2, dtype=np.float32)
    expanded = (averaging @ weights).tocsr()
    expanded.sort_indices()
    return expanded


def overlap_sums(weights: sp.csr_matrix) -> sp.csr_matrix:
    """s(i, j) = sum_k min(V[i, k], V[j, k]) for every pair i < j sharing a column of V (step 5).

    weights: (N, N) CSR float32, V after query expansion (or any part of it).
    Returns (N, N) CSR float32 holding s(i, j) for i < j only (s is symmetric); indices are not
    sorted.

    For each entry V[i, k], the rows j > i with an entry in column k are a contiguous run of
    V's CSC column k; the run's minima become one row of a sparse matrix B, and summing B's
    rows per i is the product A @ B with A the 0/1 matrix grouping entries by row, which
    scipy's C++ matmul does with a dense accumulator instead of a sort.
    """
    n = weights.shape[0]
    nnz = weights.nnz
    entry_ids = sp.csr_matrix((np.arange(nnz, dtype=np.int64), weights.indices, weights.indptr), shape=weights.shape)
    by_column = entry_ids.tocsc()  # row indices come out ascending within each column
    csc_rows = by_column.indices
    csc_values = weights.data[by_column.data]
    csc_position = np.empty(nnz, dtype=np.int64)
    csc_position[by_column.data] = np.arange(nnz)
    later_in_column = by_column.indptr[weights.indices + 1] - csc_position - 1

    terms_before_entry = np.concatenate([[0], np.cumsum(later_in_column)])
    cumulative = terms_before_entry[weights.indptr]  # (N + 1,) terms before each row
    boundaries = np.searchsorted(cumulative, np.arange(0, cumulative[-1], _TERMS_PER_CHUNK), side="right") - 1
    boundaries = np.unique(np.concatenate([boundaries, [0, n]]))

    chunks = []
    for first_row, end_row in zip(boundaries[:-1], boundaries[1:]):
        first_entry, end_entry = weights.indptr[first_row], weights.indptr[end_row]
        counts = later_in_column[first_entry:end_entry]
        b_indptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=b_indptr[1:])
        gather = np.repeat(csc_position[first_entry:end_entry] + 1 - b_indptr[:-1], counts)
        gather += np.arange(int(b_indptr[-1]))
        b_values = csc_values[gather]
        np.minimum(b_values, np.repeat(weights.data[first_entry:end_entry], counts), out=b_values)
        terms = sp.csr_matrix((b_values, csc_rows[gather], b_indptr), shape=(end_entry - first_entry, n))
        grouping = sp.csr_matrix(
            (
                np.ones(end_entry - first_entry, dtype=np.float32),
                np.arange(end_entry - first_entry),
                weights.indptr[first_row : end_row + 1] - first_entry,
            ),
            shape=(end_row - first_row, end_entry - first_entry),
        )
        chunks.append((grouping @ terms).tocsr())
    if not chunks:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.vstack(chunks, format="csr")


def self_overlaps(weights: sp.csr_matrix) -> np.ndarray:
    """s(i, i) = sum_k V[i, k]: (N,) float32 (1 for a non-empty row, 0 for an empty one)."""
    return np.asarray(weights.sum(axis=1), dtype=np.float32).reshape(-1)


def overlap_needed(max_distance: float) -> float:
    """The overlap s at which d = 1 - s / (2 - s) equals max_distance: d <= max_distance iff s >= it."""
    return 2.0 * (1.0 - max_distance) / (2.0 - max_distance)


def exact_overlaps(weights: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """s(rows[t], cols[t]) for a list of pairs: (P,) float32. weights: (N, N) CSR, sorted indices."""
    pairs_per_chunk = 1 << 18
    overlaps = np.empty(rows.shape[0], dtype=np.float32)
    for start in range(0, rows.shape[0], pairs_per_chunk):
        stop = start + pairs_per_chunk
        minima = weights[rows[start:stop]].minimum(weights[cols[start:stop]])
        overlaps[start:stop] = np.asarray(minima.sum(axis=1)).reshape(-1)
    return overlaps


def close_pairs(
    weights: sp.csr_matrix, max_distance: float, exact_distances: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs i < j at Jaccard distance <= max_distance, without summing all pairwise minima.

    weights: (N, N) CSR float32 with sorted indices, V after query expansion.
    exact_distances: False lets a pair that is certainly close report the distance of a lower
        bound of its overlap instead (a value still <= max_distance): enough for DBSCAN, which
        only asks whether a pair is within eps.
    Returns rows, cols (P,) int64 with rows < cols, and their distances (P,) float32.

    Pruning that cannot lose a pair: in each row, call "light" the entries below
    budget / (row length), so that the light entries of a row weigh at most `budget` together.
    A pair's overlap is at least its heavy-heavy part and at most that plus the light weight of
    both rows, since a shared column where either entry is light adds at most that entry. With
    budget < half the overlap needed, every close pair shares a heavy-heavy column, so summing
    the heavy-heavy minima (usually a small fraction of all of them) finds every candidate;
    only the candidates the two bounds leave undecided are summed exactly.
    """
    n = weights.shape[0]
    needed = overlap_needed(max_distance)
    # Margins far above float32 rounding in the sums: a pair within them of the limit is
    # decided by its exact sum.
    slack = 1e-4
    budget = 0.45 * max(needed - slack, 0.0)
    row_lengths = np.diff(weights.indptr)
    entry_rows = np.repeat(np.arange(n), row_lengths)
    light = weights.data < (budget / np.maximum(row_lengths, 1))[entry_rows]
    light_weight = np.bincount(entry_rows[light], weights=weights.data[light], minlength=n)
    heavy = weights.copy()
    heavy.data = np.where(light, 0, weights.data).astype(np.float32)
    heavy.eliminate_zeros()

    heavy_overlaps = overlap_sums(heavy)
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(heavy_overlaps.indptr))
    cols = heavy_overlaps.indices.astype(np.int64)
    lower = heavy_overlaps.data
    upper = lower + light_weight[rows] + light_weight[cols]
    candidate = upper >= needed - slack
    rows, cols, lower = rows[candidate], cols[candidate], lower[candidate]
    if exact_distances:
        undecided = np.ones(rows.shape[0], dtype=bool)
    else:
        undecided = lower < needed + slack
    distances = distance_from_overlap(lower)
    distances[undecided] = distance_from_overlap(exact_overlaps(weights, rows[undecided], cols[undecided]))
    close = distances <= max_distance
    return rows[close], cols[close], distances[close]


def distance_from_overlap(overlap: np.ndarray) -> np.ndarray:
    """d = 1 - s / (2 - s), clipped at 0. overlap: any shape, returns float32 of that shape."""
    overlap = np.asarray(overlap, dtype=np.float64)
    distance = 1.0 - overlap / (2.0 - overlap)
    return np.maximum(distance, 0.0).astype(np.float32)


def symmetric_distance(upper: sp.csr_matrix, diagonal: np.ndarray) -> sp.csr_matrix:
    """The full (N, N) CSR Jaccard distance from the upper-triangle overlaps and the diagonal
    overlaps (N,), with sorted indices.

    Entries are the pairs with a positive overlap; absent pairs are at distance 1. Distances of
    0 are stored as explicit zeros, which must not be pruned (they are the closest pairs).
    """
    n = upper.shape[0]
    diagonal_matrix = sp.diags(diagonal.astype(np.float32), format="csr")
    # Added as overlaps, which are all > 0, so that no sum can be mistaken for an absent entry.
    overlaps = (upper + upper.T.tocsr() + diagonal_matrix).tocsr()
    overlaps.sort_indices()
    return sp.csr_matrix((distance_from_overlap(overlaps.data), overlaps.indices, overlaps.indptr), shape=(n, n))


def symmetric_graph(
    n: int,
    rows: np.ndarray,
    cols: np.ndarray,
    distances: np.ndarray,
    diagonal: np.ndarray,
    max_distance: float,
    sort_rows_by: str = "column",
) -> sp.csr_matrix:
    """(N, N) symmetric CSR from upper-triangle pairs and the diagonal overlaps.

    rows, cols, distances: (P,) pairs i < j and their distances. diagonal: (N,) s(i, i); the
    diagonal entry is stored where it is within max_distance (an empty V row overlaps nothing,
    itself included: distance 1, as in the dense reference).
    sort_rows_by: "column", or "value" (increasing distance, as scikit-learn wants a sparse
    precomputed neighbourhood graph). Distances of 0 stay stored as explicit zeros.
    """
    diagonal_distances = distance_from_overlap(diagonal)
    self_rows = np.flatnonzero((diagonal > 0) & (diagonal_distances <= max_distance))
    all_rows = np.concatenate([rows, cols, self_rows]).astype(np.int64)
    all_cols = np.concatenate([cols, rows, self_rows]).astype(np.int64)
    values = np.concatenate([distances, distances, diagonal_distances[self_rows]]).astype(np.float32)
    # One int64 key per entry, row in the high bits: the bits of a non-negative float32 sort
    # like its value.
    within_row = values.view(np.uint32) if sort_rows_by == "value" else all_cols
    order = np.argsort((all_rows << 32) | within_row.astype(np.int64), kind="stable")
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(all_rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((values[order], all_cols[order], indptr), shape=(n, n))


class PhaseClock:
    """Wall-clock and process CPU seconds of named phases.

    CPU time counts every thread of this process; on a shared machine, wall time much above it
    means the process waited for a core.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[name] = time.perf_counter() - wall
            self.cpu_seconds[name] = time.process_time() - cpu


@dataclass(frozen=True)
class NeighbourhoodWeights:
    """V after steps 1-4.

    weights: (N, N) CSR float32 with sorted indices.
    k1, k2: the values used (adapted to N).
    """

    weights: sp.csr_matrix
    k1: int
    k2: int


def _checked_neighbourhood_sizes(n: int, k1: int, k2: int) -> tuple[int, int]:
    for name, value in (("k1", k1), ("k2", k2)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise HHCLError(f"{name}={value!r} must be a positive integer (the defaults are k1=30, k2=6)")
    if k1 > n:
        warnings.warn(f"k1={k1} is larger than the {n} images; using k1={n}", stacklevel=3)
        k1 = n
    if k2 > k1:
        # The reference's ranked lists hold k1 entries, so its query expansion averages over at
        # most k1 of them.
        warnings.warn(f"k2={k2} is larger than k1={k1}; using k2={k1}", stacklevel=3)
        k2 = k1
    return int(k1), int(k2)


def neighbourhood_weights_of(
    features,
    k1: int = 30,
    k2: int = 6,
    knn: str = "auto",
    block_size: int | None = None,
    progress: bool = False,
    clock: PhaseClock | None = None,
    knn_nprobe: int | None = None,
) -> NeighbourhoodWeights:
    """Steps 1-4 of the module docstring: the query-expanded weights V of every image.

    features: (N, D) L2-normalised, torch (CPU or CUDA) or numpy; float16/32/64.
    clock: records the phases knn, reciprocal_sets, weights and query_expansion.
    knn_nprobe: lists probed by the approximate search (None: its default).
    """
    clock = clock or PhaseClock()
    with clock.phase("knn"):
        x = as_feature_tensor(features)
        k1, k2 = _checked_neighbourhood_sizes(x.shape[0], k1, k2)
        neighbours = nearest_neighbours(x, k1, method=knn, block_size=block_size, nprobe=knn_nprobe,
                                        progress=progress)
    with clock.phase("reciprocal_sets"):
        expanded = expanded_neighbourhoods(neighbours.indices, k1)
    with clock.phase("weights"):
        rows = np.repeat(np.arange(expanded.shape[0], dtype=np.int64), np.diff(expanded.indptr))
        sims = pair_similarities(x, neighbours.indices, neighbours.similarities, rows, expanded.indices.astype(np.int64))
        weights = neighbourhood_weights(expanded, sims)
    with clock.phase("query_expansion"):
        weights = query_expansion(weights, neighbours.indices, k2)
    return NeighbourhoodWeights(weights=weights, k1=k1, k2=k2)


def jaccard_distance(
    features,
    k1: int = 30,
    k2: int = 6,
    max_distance: float | None = None,
    knn: str = "auto",
    block_size: int | None = None,
    progress: bool = False,
    knn_nprobe: int | None = None,
) -> sp.csr_matrix:
    """The k-reciprocal Jaccard distance between all pairs of images, as a sparse matrix.

    features: (N, D) L2-normalised, torch (CPU or CUDA) or numpy; float16/32/64.
    k1: size of the ranked lists behind the reciprocal sets (adapted to N with a warning).
    k2: neighbours averaged by the local query expansion.
    max_distance: keep only the pairs at most this far (much faster); None keeps every pair
        whose expanded neighbourhoods overlap.
    knn: one of KNN_METHODS ("auto", "exact", "approximate", ...; see hhcl.cluster.knn);
    knn_nprobe: lists probed by the approximate search (None: its default).
    Returns an (N, N) symmetric CSR float32 matrix with sorted indices, diagonal included; an
    absent pair is at distance 1 (or beyond max_distance). Stored zeros are real distances of 0
    (duplicate images): do not call ``eliminate_zeros`` on it.
    """
    if max_distance is not None and not 0 <= max_distance <= 1:
        raise HHCLError(f"max_distance={max_distance!r} must lie in [0, 1] (or be None to keep every pair)")
    weights = neighbourhood_weights_of(features, k1=k1, k2=k2, knn=knn, block_size=block_size, progress=progress,
                                       knn_nprobe=knn_nprobe)
    diagonal = self_overlaps(weights.weights)
    if max_distance is None:
        return symmetric_distance(overlap_sums(weights.weights), diagonal)
    rows, cols, distances = close_pairs(weights.weights, max_distance)
    return symmetric_graph(diagonal.shape[0], rows, cols, distances, diagonal, max_distance)
