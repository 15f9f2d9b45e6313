"""Backbones (ResNet, IBN-ResNet, OSNet, ViT-S/16) with the re-ID head, weight loading and feature extraction."""

from hhcl.models.extract import extract_features
from hhcl.models.factory import build_model, list_archs
from hhcl.models.head import ReIDModel
from hhcl.models.weights import LoadReport, load_weights

__all__ = ["LoadReport", "ReIDModel", "build_model", "extract_features", "list_archs", "load_weights"]
