"""hhcl: unsupervised person re-identification with Hard-sample Guided Hybrid Contrast Learning."""

from hhcl.errors import HHCLError

__version__ = "0.1.0"
__all__ = ["HHCLError", "__version__"]
