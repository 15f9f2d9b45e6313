"""The re-ID model: a backbone, global pooling, an optional linear embedding and a BatchNorm neck."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.modules.batchnorm import _BatchNorm

from hhcl.models.pooling import pool_stripes


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

    ``parts`` P > 0 adds part features (SDFT's stripes, for selective contrast): the feature map is
    cut into P horizontal stripes (:func:`hhcl.models.pooling.stripe_bounds`), each pooled by the
    same pooling module and passed through the same backbone head and embedding as the global
    feature, then through ``part_neck``: one BatchNorm1d over the P*D stripe channels, which is one
    BatchNorm per stripe (BatchNorm is per channel), its bias frozen like the neck's. The output is
    ``(B, (1+P)*D)``: the global feature, then the stripes from top to bottom. In eval mode each of
    the 1+P pieces is L2-normalised and the whole divided by sqrt(1+P), so that it is unit length
    and its cosine similarity is the mean of the pieces' (:func:`normalize_pieces`). OSNet's ``fc``
    BatchNorm then sees global and stripe batches alike: its running statistics mix the two.
    """

    def __init__(self, backbone: nn.Module, pooling: nn.Module, num_features: int = 0, norm: bool = True,
                 freeze_bn: bool = False, build_options: dict[str, Any] | None = None, parts: int = 0):
        super().__init__()
        self.backbone = backbone
        self.pooling = pooling
        backbone_dim = backbone.feature_dim
        self.embedding: nn.Linear | None = None
        if num_features > 0:
            self.embedding = nn.Linear(backbone_dim, num_features)
            nn.init.kaiming_normal_(self.embedding.weight, mode="fan_out")
            nn.init.zeros_(self.embedding.bias)
        piece_dim = num_features if num_features > 0 else backbone_dim
        self.neck = _frozen_bias_batch_norm(piece_dim)
        self.parts = parts
        self.part_neck = _frozen_bias_batch_norm(parts * piece_dim) if parts > 0 else None
        self.feature_dim = (1 + parts) * piece_dim
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
        features = self.neck(self._embed(self.pooling(feature_map)))
        if self.part_neck is not None:
            stripes = pool_stripes(feature_map, self.parts, self.pooling)  # (B, P, C)
            part_features = self._embed(stripes.flatten(0, 1)).unflatten(0, (-1, self.parts))  # (B, P, D)
            features = torch.cat([features, self.part_neck(part_features.flatten(1))], dim=1)
        if not self.training and self.norm:
            features = normalize_pieces(features, self.parts)
        return features

    def _embed(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(N, C)`` pooled vectors -> ``(N, D)``: the backbone's head, then the embedding when there is one."""
        features = self.backbone.forward_pooled(pooled)
        return self.embedding(features) if self.embedding is not None else features


def _frozen_bias_batch_norm(channels: int) -> nn.BatchNorm1d:
    neck = nn.BatchNorm1d(channels)
    nn.init.ones_(neck.weight)
    nn.init.zeros_(neck.bias)
    neck.bias.requires_grad_(False)
    return neck


def normalize_pieces(features: torch.Tensor, parts: int) -> torch.Tensor:
    """``(B, (1+P)*D)`` -> the same with each of its 1+P pieces L2-normalised, the whole divided by sqrt(1+P).

    The result is unit length, and the dot product of two rows is the mean of their pieces' cosine
    similarities. With ``parts`` 0 it is plain L2 normalisation.
    """
    if parts == 0:
        return F.normalize(features, dim=1)
    pieces = F.normalize(features.unflatten(1, (1 + parts, -1)), dim=2)
    return pieces.flatten(1) / math.sqrt(1 + parts)


def global_features(features: torch.Tensor, parts: int) -> torch.Tensor:
    """The global piece of ``(N, (1+P)*D)`` model outputs, L2-normalised: ``(N, D)``.

    With ``parts`` 0 the features themselves. Pseudo-labels are clustered on it: the stripes serve
    the loss, not the clustering.
    """
    if parts == 0:
        return features
    return F.normalize(features[:, :features.shape[1] // (1 + parts)], dim=1)
