"""k nearest neighbours by inner product, for L2-normalised features.

Every list is ranked by decreasing similarity, equal similarities by increasing index, so that
the k-reciprocal sets built on it (and through them the pseudo-labels) do not depend on how a
matmul kernel happened to break ties.

Methods:
    "exact"       the exact search for the features' device: "faiss" for features on CUDA when
                  faiss has GPU support, else "matmul".
    "approximate" faiss's inverted-file index ("faiss-ivf" with its default parameters).
    "auto"        "exact" below :data:`APPROXIMATE_FROM` images, "approximate" from there on when
                  faiss is installed (the exact search is N^2 D work: fine for a training set of
                  tens of thousands of images, hours at a million).
    "matmul"      exact, on the features' device. On CPU: tiles of the upper triangle of the
                  similarity matrix only (each tile serves its rows and its columns), keeping a
                  running top-k per row; on CUDA: chunks of rows against all, with torch top-k.
                  Never holds more than a (block, block) tile or a (block, N) chunk. On CPU it
                  computes each similarity once where faiss's flat search computes each twice.
    "faiss"       exact; faiss ``IndexFlatIP`` (float32), on the GPU when the features are on
                  CUDA and faiss has GPU support, else on CPU.
    "faiss-ivf"   approximate; ``IndexIVFFlat`` with about ``4 sqrt(N)`` lists (a power of two),
                  k-means trained on a fixed-seed sample, probing ``nprobe`` lists per image
                  (:data:`DEFAULT_NPROBE` unless given). Every image is assigned to its lists
                  once: the same coarse search places it in the index and chooses the lists it
                  probes. Deterministic on one machine (fixed k-means seed). GPU as "faiss".
    "faiss-hnsw"  approximate; ``IndexHNSWFlat`` (CPU).

``python -m benchmarks.knn_backend`` and ``python -m benchmarks.pseudo_labels`` measure them
(time, agreement with the exact lists and labels; figures in docs/benchmarks.md), and the
threshold of "auto" comes from those runs.

:func:`resolve_method` says which method a name becomes, :func:`describe_method` says it in words
with its parameters (for a run log). The exact methods give the same lists, so the same
pseudo-labels.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from hhcl.config import KNN_METHODS
from hhcl.errors import HHCLError

# "auto" switches from the exact to the approximate search at this many images (when faiss is
# installed): where the approximate search is several times faster and its pseudo-labels agree
# with the exact ones (benchmarks.knn_backend, benchmarks.pseudo_labels).
APPROXIMATE_FROM = 200_000
# Lists probed per image by the inverted-file search when nprobe is not given.
DEFAULT_NPROBE = 32
# k-means sample of the inverted-file index: this many images per list, at most.
TRAINING_POINTS_PER_LIST = 16

# How far a row's norm may be from 1 before we refuse the features (float16 rounding of a
# 2048-d unit vector moves its norm by about 1e-3).
_NORM_TOLERANCE = 2e-2


@dataclass(frozen=True)
class Neighbours:
    """The ranked neighbour lists of N points.

    indices: (N, k) int64, row i ranked by decreasing similarity to point i (i itself usually
        first); -1 where an approximate index returned fewer than k neighbours.
    similarities: (N, k) float32 or float64, the inner products matching ``indices``
        (-inf where the index is -1).
    exact: whether the lists are the exact top k.
    """

    indices: np.ndarray
    similarities: np.ndarray
    exact: bool


def faiss_available() -> bool:
    # find_spec rather than import: importing faiss logs its CPU-feature probing at INFO
    return importlib.util.find_spec("faiss") is not None


def _import_faiss():
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def faiss_gpu_available() -> bool:
    """Whether faiss is installed with GPU support and sees a GPU (imports faiss only when installed)."""
    if not faiss_available():
        return False
    faiss = _import_faiss()
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _on_cuda(features) -> bool:
    return isinstance(features, torch.Tensor) and features.device.type == "cuda"


def _num_rows(features) -> int | None:
    return None if features is None else int(features.shape[0])


def ivf_lists(num_points: int) -> int:
    """Lists of the inverted-file index for ``num_points`` images: the power of two nearest to
    ``4 sqrt(N)``, at most ``N / 16`` (each list's centroid needs a few training images)."""
    target = max(1.0, 4.0 * math.sqrt(num_points))
    lists = 2 ** round(math.log2(target))
    return int(max(1, min(lists, num_points // 16)))


def resolve_method(method: str, features=None) -> str:
    """The method that runs for ``method`` (one of KNN_METHODS) on ``features`` (or on CPU when None).

    "exact" is "faiss" when the features are on CUDA and faiss has GPU support, else "matmul";
    "approximate" is "faiss-ivf"; "auto" is "exact" below APPROXIMATE_FROM images (or without
    faiss), "approximate" from there on.
    """
    if method not in KNN_METHODS:
        raise HHCLError(f"unknown kNN method {method!r}; choose one of {', '.join(KNN_METHODS)}")
    if method == "auto":
        num_points = _num_rows(features)
        large = num_points is not None and num_points >= APPROXIMATE_FROM
        method = "approximate" if large and faiss_available() else "exact"
    if method == "exact":
        return "faiss" if _on_cuda(features) and faiss_gpu_available() else "matmul"
    if method == "approximate":
        return "faiss-ivf"
    return method


def describe_method(method: str, features=None, nprobe: int | None = None) -> str:
    """One line for a run log: what ``method`` runs as on ``features``, where, with its parameters."""
    resolved = resolve_method(method, features)
    num_points = _num_rows(features)
    if resolved == "matmul":
        text = "matmul search (exact) on " + ("CUDA" if _on_cuda(features) else "CPU")
    else:
        index = {"faiss": "IndexFlatIP, exact", "faiss-ivf": "IndexIVFFlat, approximate",
                 "faiss-hnsw": "IndexHNSWFlat, approximate"}[resolved]
        if resolved == "faiss-ivf" and num_points is not None:
            lists = ivf_lists(num_points)
            index += f", {lists} lists, nprobe {min(lists, nprobe or DEFAULT_NPROBE)}"
        on_gpu = resolved != "faiss-hnsw" and _on_cuda(features) and faiss_gpu_available()
        text = f"faiss ({index}) on {'GPU' if on_gpu else 'CPU'}"
    if method == "auto":
        installed = "installed" if faiss_available() else "not installed"
        size = "" if num_points is None else f"{num_points:,} images, approximate from {APPROXIMATE_FROM:,}; "
        text += f" (knn auto: {size}faiss {installed}{', with GPU support' if faiss_gpu_available() else ''})"
    elif method in ("exact", "approximate"):
        text += f" (knn {method})"
    return text


def as_feature_tensor(features) -> torch.Tensor:
    """Check an (N, D) array of L2-normalised features and return it as a torch tensor.

    Accepts a torch tensor (any device) or a numpy array. float16 and bfloat16 are upcast to
    float32 (their rounding would create spurious ties in the ranking); float64 stays float64.
    Raises HHCLError for a wrong shape, non-finite values or rows that are not unit length.
    """
    if isinstance(features, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(features))
    elif isinstance(features, torch.Tensor):
        tensor = features.detach()
    else:
        raise HHCLError(
            f"features must be a torch tensor or numpy array of shape (N, D), got {type(features).__name__}; "
            "pass the output of hhcl.models.extract_features"
        )
    if tensor.ndim != 2 or tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise HHCLError(
            f"features must have shape (N, D) with N, D >= 1, got {tuple(tensor.shape)}; "
            "stack one feature vector per image"
        )
    if not tensor.is_floating_point():
        raise HHCLError(f"features must be floating point, got {tensor.dtype}; convert them with .float()")
    if tensor.dtype in (torch.float16, torch.bfloat16):
        tensor = tensor.float()
    tensor = tensor.contiguous()
    # A NaN or infinite entry makes its row's norm NaN or infinite, so the norms check both.
    if tensor.device.type == "cpu":
        points = tensor.numpy()
        norms = torch.from_numpy(np.sqrt(np.einsum("ij,ij->i", points, points)))
    else:
        norms = torch.linalg.vector_norm(tensor, dim=1)
    if not bool(torch.isfinite(norms).all()):
        raise HHCLError("features contain NaN or infinite values; check the model's output before clustering")
    worst_row = int((norms - 1).abs().argmax())
    if abs(float(norms[worst_row]) - 1) > _NORM_TOLERANCE:
        raise HHCLError(
            f"features must be L2-normalised (row norms 1), but row {worst_row} has norm "
            f"{float(norms[worst_row]):.4g}; apply torch.nn.functional.normalize(features, dim=1) first"
        )
    return tensor


def rank_rows(similarities: torch.Tensor, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order each row by decreasing similarity, equal similarities by increasing index.

    similarities, indices: (N, m). Returns both reordered, same shapes.
    """
    by_index = torch.argsort(indices, dim=1)
    indices = indices.gather(1, by_index)
    similarities = similarities.gather(1, by_index)
    by_similarity = torch.sort(similarities, dim=1, descending=True, stable=True).indices
    return similarities.gather(1, by_similarity), indices.gather(1, by_similarity)


def _merge_candidates(
    best_sims: np.ndarray,
    best_idx: np.ndarray,
    worst: np.ndarray,
    target_rows: np.ndarray,
    candidate_idx: np.ndarray,
    candidate_sims: np.ndarray,
) -> None:
    """Merge candidate neighbours into the running top lists, in place.

    best_sims, best_idx: (N, keep), unordered within a row. worst: (N,) each row's smallest kept
    similarity. target_rows, candidate_idx, candidate_sims: (C,) one candidate per entry.
    """
    if target_rows.size == 0:
        return
    keep = best_sims.shape[1]
    order = np.argsort(target_rows, kind="stable")
    target_rows, candidate_idx, candidate_sims = target_rows[order], candidate_idx[order], candidate_sims[order]
    rows, first, counts = np.unique(target_rows, return_index=True, return_counts=True)
    slot = np.arange(target_rows.size) - np.repeat(first, counts)
    row_pos = np.repeat(np.arange(rows.size), counts)
    width = int(counts.max())
    padded_sims = np.full((rows.size, keep + width), -np.inf, dtype=best_sims.dtype)
    padded_idx = np.full((rows.size, keep + width), -1, dtype=np.int64)
    padded_sims[:, :keep] = best_sims[rows]
    padded_idx[:, :keep] = best_idx[rows]
    padded_sims[row_pos, keep + slot] = candidate_sims
    padded_idx[row_pos, keep + slot] = candidate_idx
    kept = np.argpartition(-padded_sims, keep - 1, axis=1)[:, :keep]
    best_sims[rows] = np.take_along_axis(padded_sims, kept, axis=1)
    best_idx[rows] = np.take_along_axis(padded_idx, kept, axis=1)
    worst[rows] = best_sims[rows].min(axis=1)


def _blocked_top_cpu(x: torch.Tensor, keep: int, block_size: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-`keep` similarities of every row of x (N, D) (CPU) against all rows; ties at
    the cut are resolved arbitrarily (nearest_neighbours re-ranks those rows).

    Visits each tile (I, J) with I <= J once: its rows feed block I's lists and its columns feed
    block J's, which halves the matmul work. Diagonal tiles go first and seed each block's lists
    with a top-k; after that only the few tile entries above a row's current worst kept
    similarity are merged, which costs a comparison and a scan instead of a top-k per tile.
    Returns (N, keep) similarities and int64 indices, unordered within a row.
    """
    n = x.shape[0]
    points = x.numpy()
    dtype = points.dtype
    tile_buffer = np.empty(min(block_size, n) ** 2, dtype=dtype)
    best_sims = np.full((n, keep), -np.inf, dtype=dtype)
    best_idx = np.full((n, keep), -1, dtype=np.int64)
    worst = np.full(n, -np.inf, dtype=dtype)
    blocks = [(start, min(start + block_size, n)) for start in range(0, n, block_size)]
    tiles = [(a, a) for a in range(len(blocks))]
    tiles += [(a, b) for a in range(len(blocks)) for b in range(a + 1, len(blocks))]
    if progress:
        from tqdm import tqdm

        tiles = tqdm(tiles, desc="kNN", unit="tile")
    for a, b in tiles:
        (a0, a1), (b0, b1) = blocks[a], blocks[b]
        # numpy's BLAS, into one reused buffer: it beat torch's matmul on these tiles on the
        # CPUs tried, and the tiles are nearly all of the kNN time (benchmarks.pseudo_labels).
        tile = tile_buffer[: (a1 - a0) * (b1 - b0)].reshape(a1 - a0, b1 - b0)
        np.matmul(points[a0:a1], points[b0:b1].T, out=tile)
        if a == b:
            take = min(keep, b1 - b0)
            top_sims, top_cols = torch.from_numpy(tile).topk(take, dim=1)
            best_sims[a0:a1, :take] = top_sims.numpy()
            best_idx[a0:a1, :take] = top_cols.numpy() + b0
            worst[a0:a1] = best_sims[a0:a1].min(axis=1)
            continue
        width = b1 - b0
        hits = np.flatnonzero(tile > worst[a0:a1, None])
        hit_rows, hit_cols = np.divmod(hits, width)
        _merge_candidates(best_sims, best_idx, worst, hit_rows + a0, hit_cols + b0, tile.ravel()[hits])
        # The same tile seen from block b's rows: compare along columns, no transposed copy.
        hits = np.flatnonzero(tile > worst[None, b0:b1])
        hit_rows, hit_cols = np.divmod(hits, width)
        _merge_candidates(best_sims, best_idx, worst, hit_cols + b0, hit_rows + a0, tile.ravel()[hits])
    return torch.from_numpy(best_sims), torch.from_numpy(best_idx)


def _chunked_top_torch(x: torch.Tensor, keep: int, rows_per_chunk: int, progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-`keep` of every row of x (N, D) against all rows, a chunk of rows at a time, on
    x's device (the GPU path: its matmul is cheap enough that symmetry is not worth the
    bookkeeping). Returns (N, keep) similarities and int64 indices, on x's device."""
    n = x.shape[0]
    sims = torch.empty((n, keep), dtype=x.dtype, device=x.device)
    idx = torch.empty((n, keep), dtype=torch.int64, device=x.device)
    starts = range(0, n, rows_per_chunk)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc="kNN", unit="chunk")
    for start in starts:
        stop = min(start + rows_per_chunk, n)
        sims[start:stop], idx[start:stop] = (x[start:stop] @ x.T).topk(keep, dim=1)
    return sims, idx


def _faiss_top(x: torch.Tensor, keep: int, method: str, nprobe: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`keep` by inner product with a faiss index (float32; on the GPU when x is on CUDA and
    faiss has GPU support, except HNSW). Returns (N, keep) CPU tensors."""
    faiss = _import_faiss()
    on_gpu = method != "faiss-hnsw" and x.device.type == "cuda" and faiss_gpu_available()
    points = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    n, dim = points.shape
    if method == "faiss-ivf":
        return _ivf_top(faiss, points, keep, nprobe, on_gpu, x.device)
    if method == "faiss":
        index = faiss.IndexFlatIP(dim)
    else:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = max(64, 2 * keep)
    if on_gpu:
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), _gpu_number(x.device), index)
    index.add(points)
    sims = np.empty((n, keep), dtype=np.float32)
    idx = np.empty((n, keep), dtype=np.int64)
    for start in range(0, n, _QUERIES_PER_CALL):
        stop = min(start + _QUERIES_PER_CALL, n)
        sims[start:stop], idx[start:stop] = index.search(points[start:stop], keep)
    sims[idx < 0] = -np.inf
    return torch.from_numpy(sims), torch.from_numpy(idx)


_QUERIES_PER_CALL = 16384


def _gpu_number(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def _ivf_top(faiss, points: np.ndarray, keep: int, nprobe: int | None, on_gpu: bool,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-`keep` of every point with an ``IndexIVFFlat`` over the points themselves.

    The coarse search of each point against the list centroids runs once: its best list places
    the point in the index, its ``nprobe`` best lists are the ones its query scans
    (``faiss.contrib.ivf_tools``), which halves the centroid work of add + search.
    """
    from faiss.contrib.ivf_tools import add_preassigned, search_preassigned

    n, dim = points.shape
    lists = ivf_lists(n)
    probes = min(lists, nprobe if nprobe is not None else DEFAULT_NPROBE)
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.min_points_per_centroid = 1  # a sample of TRAINING_POINTS_PER_LIST a list is enough
    sample_size = min(n, TRAINING_POINTS_PER_LIST * lists)
    sample = np.sort(np.random.default_rng(0).choice(n, size=sample_size, replace=False))
    index.train(points[sample])
    index.nprobe = probes
    coarse = index.quantizer
    if on_gpu:
        coarse = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), _gpu_number(device), coarse)
    probed_lists = np.empty((n, probes), dtype=np.int64)
    probed_sims = np.empty((n, probes), dtype=np.float32)
    for start in range(0, n, _QUERIES_PER_CALL):
        stop = min(start + _QUERIES_PER_CALL, n)
        probed_sims[start:stop], probed_lists[start:stop] = coarse.search(points[start:stop], probes)
    add_preassigned(index, points, np.ascontiguousarray(probed_lists[:, 0]))
    # search() spreads its queries over the OpenMP threads around search_preassigned; called
    # directly, search_preassigned does so only in this mode (faiss's parallel_mode 3: over queries).
    index.parallel_mode = 3
    sims = np.empty((n, keep), dtype=np.float32)
    idx = np.empty((n, keep), dtype=np.int64)
    for start in range(0, n, _QUERIES_PER_CALL):
        stop = min(start + _QUERIES_PER_CALL, n)
        sims[start:stop], idx[start:stop] = search_preassigned(
            index, points[start:stop], keep, probed_lists[start:stop], probed_sims[start:stop])
    sims[idx < 0] = -np.inf
    return torch.from_numpy(sims), torch.from_numpy(idx)


def _rerank_tied_rows(x: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of the given rows, with similarities equal at the cut broken by index.

    Used only for rows whose k-th and (k+1)-th similarities are equal, where the tile top-k may
    have kept an arbitrary one of the tied points. Returns (len(rows), k) similarities, indices.
    """
    chunk = max(1, (1 << 24) // max(1, x.shape[0]))
    out_sims, out_idx = [], []
    for start in range(0, rows.numel(), chunk):
        sims = x[rows[start : start + chunk]] @ x.T
        ranked_sims, ranked_idx = torch.sort(sims, dim=1, descending=True, stable=True)
        out_sims.append(ranked_sims[:, :k])
        out_idx.append(ranked_idx[:, :k])
    return torch.cat(out_sims), torch.cat(out_idx)


def default_block_size(device: torch.device, n: int) -> int:
    """Rows per tile (CPU) or per chunk (CUDA)."""
    if device.type == "cuda":
        return max(1, min(n, (1 << 28) // n))  # a (chunk, N) float32 block of at most 1 GB
    # 4096 x 4096 float32 tiles (64 MB) keep the CPU matmul near its peak while bounding memory.
    return 4096


def nearest_neighbours(
    features,
    k: int,
    method: str = "auto",
    block_size: int | None = None,
    nprobe: int | None = None,
    progress: bool = False,
) -> Neighbours:
    """The k nearest neighbours of every point (itself included) by inner product.

    features: (N, D) L2-normalised, torch (CPU or CUDA) or numpy; k <= N.
    method: one of KNN_METHODS (see the module docstring); nprobe: lists probed by the inverted-file
        search ("faiss-ivf", "approximate", and "auto" when it chooses approximate; None: DEFAULT_NPROBE).
    Returns Neighbours with (N, k) indices and similarities as numpy arrays, ranked by
    decreasing similarity then increasing index (exact methods).
    """
    if method not in KNN_METHODS:
        raise HHCLError(f"unknown kNN method {method!r}; choose one of {', '.join(KNN_METHODS)}")
    x = as_feature_tensor(features)
    n = x.shape[0]
    if not 1 <= k <= n:
        raise HHCLError(f"k={k} neighbours asked of {n} points; k must be between 1 and N")
    method = resolve_method(method, x)
    if nprobe is not None and nprobe < 1:
        raise HHCLError(f"nprobe={nprobe} must be a positive number of lists (cluster.knn_nprobe; 0 means the default)")
    if method.startswith("faiss") and not faiss_available():
        raise HHCLError(f"kNN method {method!r} needs faiss; pip install 'hhcl[faiss]' or use method='matmul' "
                        "(in a config: cluster.knn: matmul)")
    # One extra column shows whether the k-th similarity is tied with the next one.
    keep = min(k + 1, n)
    if block_size is not None and block_size < 1:
        raise HHCLError(f"block_size={block_size} must be a positive number of rows")
    if method == "matmul":
        block = block_size or default_block_size(x.device, n)
        if x.device.type == "cpu":
            sims, idx = _blocked_top_cpu(x, keep, block, progress)
        else:
            sims, idx = _chunked_top_torch(x, keep, block, progress)
    else:
        sims, idx = _faiss_top(x, keep, method, nprobe)
    sims, idx = rank_rows(sims, idx)
    exact = method in ("matmul", "faiss")
    if exact and keep > k:
        tied = torch.nonzero(sims[:, k - 1] == sims[:, k]).flatten()
        if tied.numel() > 0:
            tied_sims, tied_idx = _rerank_tied_rows(x, tied.to(x.device), k)
            sims[tied.to(sims.device), :k] = tied_sims.to(sims.device, sims.dtype)
            idx[tied.to(idx.device), :k] = tied_idx.to(idx.device)
    return Neighbours(
        indices=idx[:, :k].cpu().numpy().astype(np.int64, copy=False),
        similarities=sims[:, :k].cpu().numpy(),
        exact=exact,
    )
