"""``evaluate_model``: the metrics of a model on a dataset's query/gallery split, in percent.

The trainer, ``hhcl evaluate`` and the benchmarks all score a split through :func:`split_metrics`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from hhcl.evaluation.features import evaluate_features
from hhcl.models import extract_features

if TYPE_CHECKING:
    from hhcl.config import Config


def pids_and_cameras(items: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray]:
    """The identities and cameras of ``(path, pid, camid)`` items: two ``(N,)`` int64 arrays."""
    return (np.array([pid for _, pid, _ in items], dtype=np.int64),
            np.array([camid for _, _, camid in items], dtype=np.int64))


def has_labelled_test_split(dataset) -> bool:
    """Whether ``dataset`` has a query and a gallery, with identities on the queries."""
    query, gallery = getattr(dataset, "query", None) or [], getattr(dataset, "gallery", None) or []
    return bool(query) and bool(gallery) and any(pid >= 0 for _, pid, _ in query)


def split_metrics(
    query_features,
    gallery_features,
    query: Sequence[tuple],
    gallery: Sequence[tuple],
    max_rank: int = 50,
    rerank: bool = False,
    cross_camera: bool = True,
) -> tuple[dict[str, float], dict]:
    """mAP, rank-1/5/10 and mINP in percent of one query/gallery split, and the full result of
    :func:`hhcl.evaluation.evaluate_features` (its ``cmc``, ``num_valid_queries``...).

    query_features: (Q, D), gallery_features: (G, D), rows in the order of ``query`` and ``gallery``.
    A rank beyond ``max_rank`` (or beyond a smaller gallery) reads the last CMC entry: a gallery
    smaller than k holds every match within rank k.
    """
    q_pids, q_cams = pids_and_cameras(query)
    g_pids, g_cams = pids_and_cameras(gallery)
    result = evaluate_features(query_features, gallery_features, q_pids, g_pids, q_cams, g_cams,
                               max_rank=max_rank, rerank=rerank, cross_camera=cross_camera)
    cmc = np.asarray(result["cmc"], dtype=np.float64)

    def rank(k: int) -> float:
        return 100.0 * float(cmc[min(k, len(cmc)) - 1]) if len(cmc) else 0.0

    metrics = {"mAP": 100.0 * float(result["mAP"]), "rank1": rank(1), "rank5": rank(5), "rank10": rank(10),
               "mINP": 100.0 * float(result.get("mINP", float("nan")))}
    return metrics, result


def evaluate_model(model: nn.Module, dataset, config: Config, device: torch.device | str = "cpu",
                   precision: str = "fp32", progress: bool = False) -> dict[str, float] | None:
    """mAP, rank-1/5/10 and mINP in percent of ``model`` on ``dataset``'s query/gallery split; None
    when the dataset has no labelled split.

    The query and gallery images are embedded in one pass, with ``config``'s extraction settings
    (``train.extract_batch_size``, ``dataset.height``, ``width``, ``num_workers``) and re-ranking
    (``evaluation.rerank``).
    """
    if not has_labelled_test_split(dataset):
        return None
    items = list(dataset.query) + list(dataset.gallery)
    features = extract_features(model, items, batch_size=config.train.extract_batch_size, device=device,
                                height=config.dataset.height, width=config.dataset.width,
                                num_workers=config.dataset.num_workers, precision=precision, progress=progress,
                                compile=config.train.compile)
    num_query = len(dataset.query)
    metrics, _ = split_metrics(features[:num_query], features[num_query:], dataset.query, dataset.gallery,
                               max_rank=min(50, len(dataset.gallery)), rerank=config.evaluation.rerank)
    return metrics
