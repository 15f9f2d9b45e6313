"""Using a trained model: feature extraction, gallery search and pictures of ranked lists.

``FeatureExtractor`` is imported on first use, so that the picture helpers of
:mod:`hhcl.retrieval.visualize` load without the model code.
"""

from __future__ import annotations

__all__ = ["FeatureExtractor"]


def __getattr__(name: str):
    if name == "FeatureExtractor":
        from hhcl.retrieval.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'hhcl.retrieval' has no attribute {name!r}")
