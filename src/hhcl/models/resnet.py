"""ResNet-18/34/50/101/152 with torchvision's parameter names, so torchvision checkpoints load as is.

Only the convolutional trunk is built: the ImageNet ``fc`` head is not part of a re-ID model (the
re-ID head in :mod:`hhcl.models.head` pools and embeds the feature map instead). The stride of the
last stage is configurable: re-ID models use 1, which doubles the feature map to 16x8 for a
256x128 input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a shortcut (ResNet-18/34). ``(B, C_in, H, W) -> (B, planes, H/s, W/s)``."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def set_stride(self, stride: int) -> None:
        self.conv1.stride = (stride, stride)
        if self.downsample is not None:
            self.downsample[0].stride = (stride, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided, as in torchvision's "v1.5"), 1x1 expand by 4, with a shortcut.

    ``(B, C_in, H, W) -> (B, 4 * planes, H/s, W/s)``.
    """

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = conv1x1(in_channels, planes)
        self.bn1: nn.Module = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def set_stride(self, stride: int) -> None:
        self.conv2.stride = (stride, stride)
        if self.downsample is not None:
            self.downsample[0].stride = (stride, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """The ResNet trunk: stem, then four stages of blocks.

    ``stage_blocks`` gives the block class of each of the four stages (IBN-ResNets mix two kinds),
    ``layers`` the number of blocks per stage. ``forward_features`` maps ``(B, 3, H, W)`` to
    ``(B, out_channels, H/16, W/16)`` with ``last_stride=1`` (``H/32, W/32`` with 2).
    """

    def __init__(self, stage_blocks: Sequence[type[nn.Module]], layers: Sequence[int], last_stride: int = 1):
        super().__init__()
        if len(stage_blocks) != 4 or len(layers) != 4:
            raise ValueError("a ResNet has four stages")
        self.in_channels = 64
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1: nn.Module = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_stage(stage_blocks[0], 64, layers[0], stride=1)
        self.layer2 = self._make_stage(stage_blocks[1], 128, layers[1], stride=2)
        self.layer3 = self._make_stage(stage_blocks[2], 256, layers[2], stride=2)
        self.layer4 = self._make_stage(stage_blocks[3], 512, layers[3], stride=2)
        self.out_channels = self.in_channels
        self._initialise()
        self.layer4[0].set_stride(last_stride)

    def _make_stage(self, block: type[nn.Module], planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_channels != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.in_channels, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        blocks = [block(self.in_channels, planes, stride, downsample)]
        self.in_channels = planes * block.expansion
        blocks += [block(self.in_channels, planes) for _ in range(1, num_blocks)]
        return nn.Sequential(*blocks)

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, (nn.BatchNorm2d, nn.InstanceNorm2d)) and module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, out_channels, h, w)`` feature map."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """ResNets use the pooled ``(B, out_channels)`` vector as it is."""
        return pooled

    @property
    def feature_dim(self) -> int:
        return self.out_channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


RESNET_LAYERS: dict[str, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
    "resnet101": (Bottleneck, (3, 4, 23, 3)),
    "resnet152": (Bottleneck, (3, 8, 36, 3)),
}


def resnet(name: str, last_stride: int = 1) -> ResNet:
    """The ResNet trunk called ``name`` (one of :data:`RESNET_LAYERS`), randomly initialised."""
    block, layers = RESNET_LAYERS[name]
    return ResNet((block,) * 4, layers, last_stride=last_stride)
