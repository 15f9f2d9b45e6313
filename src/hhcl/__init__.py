"""hhcl: unsupervised person re-identification with Hard-sample Guided Hybrid Contrast Learning.

``hhcl.FeatureExtractor`` is imported on first use, so that ``import hhcl`` stays light.
"""

from hhcl.errors import HHCLError

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "HHCLError", "__version__"]


def __getattr__(name: str):
    if name == "FeatureExtractor":
        from hhcl.retrieval.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'hhcl' has no attribute {name!r}")
