"""Re-ID ranking metrics (mAP, CMC, mINP) from a query x gallery distance matrix.

Protocol (Market-1501 / DukeMTMC-reID / MSMT17): for each query, gallery entries with the same
pid *and* the same camera are removed; a query with no remaining true match is skipped and counted.
The gallery is ranked by ascending distance; equal distances keep gallery order (the lower gallery
index ranks first), so every metric is deterministic when distances tie. Without ties, a query's AP
equals scikit-learn's ``average_precision_score(is_match, -distances)``.

The work is vectorised over chunks of query rows and never sorts a whole row: only the gallery
entries at least as close as the query's farthest true match can change a metric, so only those
are sorted.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch

from hhcl.errors import HHCLError

# One chunk of query rows holds at most this many distances (32 MiB in float64).
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class GalleryIndex:
    """The gallery labels, plus its entries grouped by pid for finding each query's matches.

    ``pids``, ``cams``: (G,) int64. ``by_pid``: (G,) gallery indices sorted by pid (stable, so
    ascending index within a pid). ``unique_pids``, ``starts``, ``stops``: (P,) the pids and the
    slice of ``by_pid`` that holds each one.
    """

    pids: np.ndarray
    cams: np.ndarray
    by_pid: np.ndarray
    unique_pids: np.ndarray
    starts: np.ndarray
    stops: np.ndarray

    @classmethod
    def build(cls, g_pids: np.ndarray, g_cams: np.ndarray) -> "GalleryIndex":
        by_pid = np.argsort(g_pids, kind="stable")
        unique_pids, starts, counts = np.unique(g_pids[by_pid], return_index=True, return_counts=True)
        return cls(g_pids, g_cams, by_pid, unique_pids, starts, starts + counts)

    def same_pid_pairs(self, q_pids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """All (query row, gallery index) pairs sharing a pid, row-major, gallery index ascending.

        ``q_pids``: (C,) int64. Returns two (M,) int64 arrays.
        """
        slot = np.searchsorted(self.unique_pids, q_pids)
        slot_clipped = np.minimum(slot, len(self.unique_pids) - 1)
        found = (slot < len(self.unique_pids)) & (self.unique_pids[slot_clipped] == q_pids)
        starts = np.where(found, self.starts[slot_clipped], 0)
        counts = np.where(found, self.stops[slot_clipped] - self.starts[slot_clipped], 0)
        rows = np.repeat(np.arange(len(q_pids)), counts)
        offsets = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.by_pid[np.repeat(starts, counts) + offsets]


@dataclass(frozen=True)
class QueryResults:
    """Per-query outcome for a block of queries, all (C,) arrays.

    ``valid``: the query kept at least one true match. For valid queries: ``average_precision``,
    ``first_match_rank`` (0-based rank of the first true match among the kept gallery) and
    ``inverse_negative_penalty`` (number of true matches / (rank of the last one + 1)).
    """

    valid: np.ndarray
    average_precision: np.ndarray
    first_match_rank: np.ndarray
    inverse_negative_penalty: np.ndarray

    @classmethod
    def concatenate(cls, parts: Iterable["QueryResults"]) -> "QueryResults":
        parts = list(parts)
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in cls.__dataclass_fields__))


def rank_query_chunk(
    distances: np.ndarray,
    q_pids: np.ndarray,
    q_cams: np.ndarray,
    gallery: GalleryIndex,
    cross_camera: bool = True,
) -> QueryResults:
    """Rank one chunk of queries against the whole gallery.

    ``distances``: (C, G) finite floats; ``q_pids``, ``q_cams``: (C,) int64.
    """
    num_rows = distances.shape[0]
    rows, cols = gallery.same_pid_pairs(q_pids)
    if cross_camera:
        is_true_match = gallery.cams[cols] != q_cams[rows]
        rows, cols = rows[is_true_match], cols[is_true_match]
    num_matches = np.bincount(rows, minlength=num_rows)
    valid = num_matches > 0

    # Rows are grouped and non-empty for valid queries, so a segmented max gives each valid
    # query's farthest true match.
    farthest_match = np.full(num_rows, -np.inf, dtype=distances.dtype)
    if len(rows):
        segment_starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
        farthest_match[rows[segment_starts]] = np.maximum.reduceat(distances[rows, cols], segment_starts)

    # Entries beyond the farthest true match cannot move any metric; everything else is sorted.
    candidates = np.flatnonzero(distances <= farthest_match[:, None])
    cand_rows, cand_cols = np.divmod(candidates, distances.shape[1])
    order = _sort_within_rows(distances.ravel()[candidates], cand_rows)
    cand_rows, cand_cols = cand_rows[order], cand_cols[order]

    same_pid = gallery.pids[cand_cols] == q_pids[cand_rows]
    if cross_camera:
        kept = ~(same_pid & (gallery.cams[cand_cols] == q_cams[cand_rows]))
    else:
        kept = np.ones(len(cand_cols), dtype=bool)
    is_match = same_pid & kept

    kept_per_row = np.bincount(cand_rows[kept], minlength=num_rows)
    kept_before_row = np.cumsum(kept_per_row) - kept_per_row
    kept_rank = np.cumsum(kept) - 1 - kept_before_row[cand_rows]
    match_rows = cand_rows[is_match]
    match_rank = kept_rank[is_match]
    matches_before_row = np.cumsum(num_matches) - num_matches
    match_number = np.arange(1, len(match_rows) + 1) - matches_before_row[match_rows]

    average_precision = np.zeros(num_rows)
    first_match_rank = np.zeros(num_rows, dtype=np.int64)
    inverse_negative_penalty = np.zeros(num_rows)
    precision_sums = np.bincount(match_rows, weights=match_number / (match_rank + 1), minlength=num_rows)
    average_precision[valid] = precision_sums[valid] / num_matches[valid]
    is_first = match_number == 1
    first_match_rank[match_rows[is_first]] = match_rank[is_first]
    is_last = match_number == num_matches[match_rows]
    inverse_negative_penalty[match_rows[is_last]] = num_matches[match_rows[is_last]] / (match_rank[is_last] + 1)
    return QueryResults(valid, average_precision, first_match_rank, inverse_negative_penalty)


def _sort_within_rows(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Permutation ordering entries by (row, value), ties kept in input order.

    ``values``, ``rows``: (K,), with entries already in row-major, column-ascending order.
    """
    order = np.argsort(values, kind="stable")
    # A stable sort on a small integer key is a radix sort in numpy: linear time.
    row_key = rows[order].astype(np.uint16 if rows.size == 0 or rows[-1] < 1 << 16 else np.int64)
    return order[np.argsort(row_key, kind="stable")]


def summarize(results: QueryResults, max_rank: int) -> dict:
    """Aggregate per-query results into the metric dict (see :func:`evaluate_ranking`)."""
    valid = results.valid
    num_valid = int(valid.sum())
    if num_valid == 0:
        raise HHCLError(
            f"none of the {len(valid)} queries has a true match left in the gallery "
            "(same pid, and another camera when cross_camera=True): check the query/gallery pids and cams"
        )
    first_match_rank = results.first_match_rank[valid]
    hits_at_rank = np.bincount(np.minimum(first_match_rank, max_rank), minlength=max_rank + 1)[:max_rank]
    return {
        "mAP": float(results.average_precision[valid].mean()),
        "cmc": np.cumsum(hits_at_rank) / num_valid,
        "mINP": float(results.inverse_negative_penalty[valid].mean()),
        "num_valid_queries": num_valid,
        "num_skipped_queries": int(len(valid) - num_valid),
    }


def evaluate_ranking(
    distmat,
    q_pids,
    g_pids,
    q_cams,
    g_cams,
    max_rank: int = 50,
    cross_camera: bool = True,
    chunk_size: int | None = None,
) -> dict:
    """Market-1501-protocol metrics of a query x gallery distance matrix.

    Args:
        distmat: (Q, G) numpy array or torch tensor of finite distances (smaller = more similar).
        q_pids, q_cams: (Q,) integer identities and cameras of the queries.
        g_pids, g_cams: (G,) the same for the gallery.
        max_rank: length of the CMC curve; clipped to G with a warning.
        cross_camera: remove gallery entries with the query's pid and camera (standard protocol).
            False keeps them, for single-camera data.
        chunk_size: query rows ranked at once; default keeps a chunk near 4M distances.

    Returns:
        ``{"mAP": float, "cmc": (max_rank,) float64 with cmc[k-1] = rank-k accuracy, "mINP": float,
        "num_valid_queries": int, "num_skipped_queries": int}``; fractions in [0, 1], averaged
        over the valid queries.
    """
    if not isinstance(distmat, (torch.Tensor, np.ndarray)):
        distmat = np.asarray(distmat)
    shape = tuple(distmat.shape)
    if len(shape) != 2:
        raise HHCLError(f"distmat must be 2-D (queries x gallery), got shape {shape}")
    q_pids = as_labels(q_pids, "q_pids", shape[0], "distmat rows")
    q_cams = as_labels(q_cams, "q_cams", shape[0], "distmat rows")
    g_pids = as_labels(g_pids, "g_pids", shape[1], "distmat columns")
    g_cams = as_labels(g_cams, "g_cams", shape[1], "distmat columns")
    max_rank = clip_max_rank(max_rank, shape[1])
    gallery = GalleryIndex.build(g_pids, g_cams)
    rows_per_chunk = choose_rows_per_chunk(chunk_size, shape[1])
    results = [
        rank_query_chunk(chunk, q_pids[start:stop], q_cams[start:stop], gallery, cross_camera)
        for start, stop, chunk in iter_row_chunks(distmat, rows_per_chunk)
    ]
    return summarize(QueryResults.concatenate(results), max_rank)


def choose_rows_per_chunk(chunk_size: int | None, row_length: int) -> int:
    """``chunk_size`` checked, or by default as many rows as fit in CHUNK_ELEMENTS entries."""
    if chunk_size is None:
        return max(1, CHUNK_ELEMENTS // max(row_length, 1))
    if int(chunk_size) != chunk_size or chunk_size < 1:
        raise HHCLError(f"chunk_size must be a positive number of query rows, got {chunk_size}")
    return int(chunk_size)


def iter_row_chunks(distmat, rows_per_chunk: int) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, rows)`` with rows a finite float numpy array (stop - start, G)."""
    for start in range(0, distmat.shape[0], rows_per_chunk):
        stop = min(start + rows_per_chunk, distmat.shape[0])
        yield start, stop, as_distance_rows(distmat[start:stop], start)


def as_distance_rows(rows, first_row: int = 0) -> np.ndarray:
    """A block of distance rows as a finite float32/float64 numpy array; HHCLError on NaN/inf."""
    if isinstance(rows, torch.Tensor):
        rows = rows.detach()
        if rows.dtype not in (torch.float32, torch.float64):
            rows = rows.to(torch.float64 if rows.dtype == torch.int64 else torch.float32)
        rows = rows.cpu().numpy()
    else:
        rows = np.asarray(rows)
        if rows.dtype not in (np.float32, np.float64):
            if rows.dtype.kind not in "fiub":
                raise HHCLError(f"distmat must hold numbers, got dtype {rows.dtype}")
            rows = rows.astype(np.float64 if rows.dtype.itemsize > 4 or rows.dtype.kind != "f" else np.float32)
    if not np.isfinite(rows).all():
        bad_row, bad_col = np.argwhere(~np.isfinite(rows))[0]
        raise HHCLError(
            f"distmat[{first_row + bad_row}, {bad_col}] is {rows[bad_row, bad_col]}: distances must be finite "
            "(check the features for NaN/inf)"
        )
    return rows


def as_labels(values, name: str, expected_length: int, against: str) -> np.ndarray:
    """Identities or cameras as a (N,) int64 array, checked against the matrix they label."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.ndim != 1:
        raise HHCLError(f"{name} must be 1-D, got shape {values.shape}")
    if values.dtype.kind not in "iub":
        if values.size and not (values.dtype.kind == "f" and np.array_equal(values, np.round(values))):
            raise HHCLError(f"{name} must hold integers, got dtype {values.dtype}")
    if len(values) != expected_length:
        raise HHCLError(
            f"{name} has {len(values)} entries but there are {expected_length} {against}: give one per entry"
        )
    return values.astype(np.int64)


def clip_max_rank(max_rank: int, gallery_size: int) -> int:
    if max_rank < 1:
        raise HHCLError(f"max_rank must be at least 1, got {max_rank}")
    if gallery_size == 0:
        raise HHCLError("the gallery is empty: evaluation needs at least one gallery entry")
    if max_rank > gallery_size:
        warnings.warn(
            f"max_rank={max_rank} is larger than the gallery ({gallery_size}); using {gallery_size}", stacklevel=3
        )
        return gallery_size
    return max_rank
