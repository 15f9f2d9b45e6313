"""Query x gallery distances from features, whole or in chunks of query rows.

Distances are computed in float64 by default. Float32 distances between L2-normalised 2048-d
features tie often (about a hundred exact ties per query row on Market-1501), and which of two
near-equal float32 values comes first then depends on the BLAS blocking, which changes with the
chunk size and the device. In float64 the ranking no longer depends on how the matrix was cut.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from hhcl.errors import HHCLError

METRICS = ("squared_euclidean", "cosine")


def as_features(features, name: str) -> torch.Tensor:
    """Checked (N, D) finite features as a tensor, not yet moved or converted."""
    if not isinstance(features, torch.Tensor):
        features = torch.as_tensor(np.asarray(features))
    if features.ndim != 2:
        raise HHCLError(f"{name} must be 2-D (N, D), got shape {tuple(features.shape)}")
    if not (features.is_floating_point() or features.dtype in (torch.int32, torch.int64)):
        raise HHCLError(f"{name} must hold numbers, got dtype {features.dtype}")
    features = features.detach()
    # A row sum is non-finite when the row holds NaN or inf (or overflows, checked exactly below);
    # torch.isfinite on the whole matrix would allocate temporaries larger than the features.
    suspicious_rows = (~torch.isfinite(features.sum(dim=1))).nonzero()[:, 0]
    for row in suspicious_rows.tolist():
        if not bool(torch.isfinite(features[row]).all()):
            raise HHCLError(f"{name}[{row}] holds NaN or inf: extract the features again (check the model weights)")
    return features


def check_same_width(queries: torch.Tensor, gallery: torch.Tensor) -> None:
    if queries.shape[1] != gallery.shape[1]:
        raise HHCLError(
            f"q_feats are {queries.shape[1]}-d but g_feats are {gallery.shape[1]}-d: extract both with the same model"
        )


def stack_features(queries: torch.Tensor, gallery: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    """Queries then gallery in one (Q + G, D) tensor of ``dtype``, written in place so that no
    converted copy of either part is held alongside it."""
    check_same_width(queries, gallery)
    stacked = torch.empty(
        (queries.shape[0] + gallery.shape[0], queries.shape[1]), dtype=dtype, device=device or queries.device
    )
    stacked[: queries.shape[0]] = queries
    stacked[queries.shape[0] :] = gallery
    return stacked


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise HHCLError(f"unknown distance metric {metric!r}: use one of {', '.join(METRICS)}")


def row_norms(features: torch.Tensor, metric: str) -> torch.Tensor:
    """What :func:`distance_block` needs per row besides the features, (N,): squared norms for
    squared euclidean, inverse norms for cosine. Built without an (N, D) temporary."""
    squared_norms = torch.einsum("nd,nd->n", features, features)
    if metric == "cosine":
        return squared_norms.sqrt_().clamp_min_(torch.finfo(features.dtype).tiny).reciprocal_()
    return squared_norms


def distance_block(
    x: torch.Tensor, x_norms: torch.Tensor, y: torch.Tensor, y_norms: torch.Tensor, metric: str, out=None
) -> torch.Tensor:
    """Distances between rows: (M, D), (N, D) with their :func:`row_norms` -> (M, N).

    Squared euclidean: (|x|^2 + |y|^2) - 2 x.y, clamped at 0 against rounding.
    Cosine: 1 - x.y / (|x| |y|). ``out``: an (M, N) tensor to write into, reused across chunks
    so that the allocator does not pile up freed blocks.
    """
    if metric == "cosine":
        similarity = torch.mm(x, y.T, out=out).mul_(x_norms[:, None]).mul_(y_norms[None, :])
        return similarity.neg_().add_(1.0)
    # One (M, N) buffer: the norms are added by the matrix product itself (GEMM with beta = 1).
    distances = torch.add(x_norms[:, None], y_norms[None, :], out=out)
    return distances.addmm_(x, y.T, alpha=-2.0).clamp_min_(0.0)


def pairwise_distance(
    x, y, metric: str = "squared_euclidean", dtype: torch.dtype = torch.float64, device=None
) -> torch.Tensor:
    """All distances between ``x`` (M, D) and ``y`` (N, D) -> (M, N) tensor of ``dtype``.

    ``metric``: "squared_euclidean" (the re-ID convention; ranks like euclidean) or "cosine"
    (1 - cosine similarity). Equal for L2-normalised features up to a factor 2.
    """
    check_metric(metric)
    x, y = as_features(x, "x"), as_features(y, "y")
    check_same_width(x, y)
    device = device or x.device
    x, y = x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)
    return distance_block(x, row_norms(x, metric), y, row_norms(y, metric), metric)


def pair_distances(
    features: torch.Tensor,
    norms: torch.Tensor,
    left: np.ndarray,
    right: np.ndarray,
    metric: str,
    pairs_per_chunk: int = 512,
) -> np.ndarray:
    """Distances between ``features[left[t]]`` and ``features[right[t]]``, as :func:`distance_block`
    gives them up to rounding. ``features``: (N, D) with ``norms`` (N,); returns (M,) numpy."""
    distances = np.empty(len(left), dtype=np.float64)
    for start in range(0, len(left), pairs_per_chunk):
        left_rows = torch.as_tensor(left[start : start + pairs_per_chunk], device=features.device)
        right_rows = torch.as_tensor(right[start : start + pairs_per_chunk], device=features.device)
        similarity = torch.linalg.vecdot(features[left_rows], features[right_rows])
        if metric == "cosine":
            block = 1.0 - similarity * norms[left_rows] * norms[right_rows]
        else:
            block = ((norms[left_rows] + norms[right_rows]) - 2.0 * similarity).clamp_min_(0.0)
        distances[start : start + len(left_rows)] = block.cpu().numpy()
    return distances


def iter_distance_chunks(
    queries: torch.Tensor, gallery: torch.Tensor, rows_per_chunk: int, metric: str
) -> Iterator[tuple[int, int, torch.Tensor]]:
    """Yield ``(start, stop, distances (stop - start, G))`` for consecutive query rows.

    ``queries`` (Q, D) and ``gallery`` (G, D) are checked tensors on one device. Each chunk is
    overwritten by the next: use it before asking for the next one.
    """
    query_norms, gallery_norms = row_norms(queries, metric), row_norms(gallery, metric)
    buffer = queries.new_empty((min(rows_per_chunk, queries.shape[0]), gallery.shape[0]))
    for start in range(0, queries.shape[0], rows_per_chunk):
        stop = min(start + rows_per_chunk, queries.shape[0])
        yield start, stop, distance_block(
            queries[start:stop], query_norms[start:stop], gallery, gallery_norms, metric, out=buffer[: stop - start]
        )
