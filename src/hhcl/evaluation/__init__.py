"""Evaluation: re-ID ranking metrics (mAP, CMC, mINP) and k-reciprocal re-ranking.

- :func:`evaluate_ranking`: metrics of a (Q, G) distance matrix.
- :func:`evaluate_features`: the same from features, in bounded memory, optionally re-ranked.
- :func:`pairwise_distance`, :func:`rerank_distances`: the distance matrices themselves.
"""

from hhcl.evaluation.distances import pairwise_distance
from hhcl.evaluation.features import evaluate_features, rerank_distances
from hhcl.evaluation.metrics import evaluate_ranking

__all__ = ["evaluate_features", "evaluate_ranking", "pairwise_distance", "rerank_distances"]
