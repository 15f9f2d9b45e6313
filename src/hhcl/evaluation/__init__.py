"""Evaluation: re-ID ranking metrics (mAP, CMC, mINP) and k-reciprocal re-ranking."""

from hhcl.evaluation.metrics import evaluate_ranking

__all__ = ["evaluate_ranking"]
