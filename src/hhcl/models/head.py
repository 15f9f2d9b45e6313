"""The re-ID model: a backbone, global pooling, an optional linear embedding and a BatchNorm neck."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm


class ReIDModel(nn.Module):
    """``(B, 3, H, W)`` images normalised with the ImageNet mean/std -> ``(B, feature_dim)`` features.

    feature map ``(B, C, h, w)`` -> pooling ``(B, C)`` -> the backbone's own head where it has one
    (OSNet's 512-d ``fc``) -> optional ``embedding`` Linear ``(B, num_features)`` -> ``neck``
    BatchNorm1d.

    - Train mode returns the neck output, not normalised (the cluster memories normalise it).
    - Eval mode returns it L2-normalised (when ``norm``), ready for cosine matching.

    The neck's bias is frozen at zero, as in the paper's code: a learned shift would move every
    feature off the unit sphere's centre and weaken the cosine similarities the memories use.
    ``freeze_bn`` keeps every BatchNorm layer in eval mode (running statistics frozen, affine
    parameters still trained), also after ``model.train()``.
    """

    def __init__(self, backbone: nn.Module, pooling: nn.Module, num_features: int = 0, norm: bool = True,
                 freeze_bn: bool = False, build_options: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        backbone_dim = backbone.feature_dim
        self.embedding: nn.Linear | None = None
        if num_features > 0:
            self.embedding = nn.Linear(backbone_dim, num_features)
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        self.feature_dim = num_features if num_features > 0 else backbone_dim
        self.neck = nn.BatchNorm1d(self.feature_dim)
        nn.init.ones_(self.neck.weight)
        nn.init.zeros_(self.neck.bias)
        self.neck.bias.requires_grad_(False)
        self.norm = norm
        #: The arguments of :func:`hhcl.models.build_model` that rebuild this model (saved in checkpoints).
        self.build_options: dict[str, Any] = dict(build_options or {})
        self._freeze_bn = False
        self.freeze_bn = freeze_bn

    @property
    def freeze_bn(self) -> bool:
        return self._freeze_bn

    @freeze_bn.setter
    def freeze_bn(self, value: bool) -> None:
        self._freeze_bn = bool(value)
        self.train(self.training)

    def train(self, mode: bool = True) -> ReIDModel:
        super().train(mode)
        if mode and self._freeze_bn:
            for module in self.modules():
                if isinstance(module, _BatchNorm):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(B, feature_dim)``: L2-normalised in eval mode, raw neck features in train mode."""
        feature_map = self.backbone.forward_features(images)
        features = self.backbone.forward_pooled(self.pooling(feature_map))
        if self.embedding is not None:
            features = self.embedding(features)
        features = self.neck(features)
        if not self.training and self.norm:
            features = F.normalize(features, dim=1)
        return features
