"""IBN-Net ResNet-50-a (Pan et al., ECCV 2018) with the names of the IBN-Net release.

In the blocks of the first three stages, ``bn1`` normalises half of its channels with
InstanceNorm (``bn1.IN``) and the other half with BatchNorm (``bn1.BN``): instance statistics
remove the appearance (colour, contrast) of a camera, which is why IBN backbones transfer better
to an unseen domain. The last stage and the stem are plain.
"""

from __future__ import annotations

import torch
from torch import nn

from hhcl.models.resnet import Bottleneck, ResNet


class InstanceBatchNorm2d(nn.Module):
    """InstanceNorm on the first ``int(channels * ratio)`` channels, BatchNorm on the rest.

    ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.half = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.half)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        instance_part, batch_part = torch.split(x, [self.half, x.shape[1] - self.half], dim=1)
        return torch.cat((self.IN(instance_part.contiguous()), self.BN(batch_part.contiguous())), dim=1)


class IBNBottleneck(Bottleneck):
    """A :class:`Bottleneck` whose ``bn1`` is half instance-, half batch-normalised."""

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__(in_channels, planes, stride, downsample)
        self.bn1 = InstanceBatchNorm2d(planes)


def resnet50_ibn_a(last_stride: int = 1) -> ResNet:
    """IBN-ResNet-50-a trunk, randomly initialised: ``(B, 3, H, W) -> (B, 2048, H/16, W/16)``."""
    return ResNet((IBNBottleneck, IBNBottleneck, IBNBottleneck, Bottleneck), (3, 4, 6, 3), last_stride=last_stride)
