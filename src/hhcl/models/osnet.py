"""OSNet (Zhou et al., ICCV 2019, "Omni-Scale Feature Learning for Person Re-Identification").

Same architecture and parameter names as torchreid's ``osnet_x1_0`` ... ``osnet_x0_25``, so that
torchreid checkpoints load unchanged. Each OSBlock has four streams of 1, 2, 3 and 4 lightweight
3x3 convolutions (receptive fields 3, 5, 7, 9), fused by one channel gate shared by the streams.
The feature of the network is its ``fc`` head (Linear + BatchNorm1d + ReLU, 512-d) applied to the
pooled map; the ImageNet/identity ``classifier`` is not built.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ConvLayer(nn.Module):
    """Convolution + BatchNorm + ReLU (the stem)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1(nn.Module):
    """1x1 convolution + BatchNorm + ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class Conv1x1Linear(nn.Module):
    """1x1 convolution + BatchNorm, no activation (before a residual sum)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LightConv3x3(nn.Module):
    """Pointwise 1x1 (linear) then depthwise 3x3, BatchNorm, ReLU: a cheap 3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False, groups=out_channels)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv2(self.conv1(x))))


class ChannelGate(nn.Module):
    """Per-channel weights in (0, 1) computed from the pooled input: ``(B, C, H, W) -> (B, C, H, W)``."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=True)
        self.relu = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gates = torch.sigmoid(self.fc2(self.relu(self.fc1(self.global_avgpool(x)))))
        return x * gates


class OSBlock(nn.Module):
    """Omni-scale residual block: ``(B, C_in, H, W) -> (B, C_out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, bottleneck_reduction: int = 4):
        super().__init__()
        mid_channels = out_channels // bottleneck_reduction
        self.conv1 = Conv1x1(in_channels, mid_channels)
        self.conv2a = LightConv3x3(mid_channels, mid_channels)
        self.conv2b = nn.Sequential(*(LightConv3x3(mid_channels, mid_channels) for _ in range(2)))
        self.conv2c = nn.Sequential(*(LightConv3x3(mid_channels, mid_channels) for _ in range(3)))
        self.conv2d = nn.Sequential(*(LightConv3x3(mid_channels, mid_channels) for _ in range(4)))
        self.gate = ChannelGate(mid_channels)
        self.conv3 = Conv1x1Linear(mid_channels, out_channels)
        self.downsample = Conv1x1Linear(in_channels, out_channels) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        fused = (
            self.gate(self.conv2a(reduced))
            + self.gate(self.conv2b(reduced))
            + self.gate(self.conv2c(reduced))
            + self.gate(self.conv2d(reduced))
        )
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(fused) + identity)


class OSNet(nn.Module):
    """OSNet trunk and its ``fc`` feature head.

    ``forward_features``: ``(B, 3, H, W) -> (B, channels[3], H/16, W/16)``;
    ``forward_pooled``: ``(B, channels[3]) -> (B, feature_dim)`` (Linear + BatchNorm1d + ReLU).
    """

    def __init__(self, channels: tuple[int, int, int, int], blocks_per_stage: tuple[int, int, int] = (2, 2, 2),
                 feature_dim: int = 512):
        super().__init__()
        self.conv1 = ConvLayer(3, channels[0], 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = self._make_stage(blocks_per_stage[0], channels[0], channels[1], reduce_spatial_size=True)
        self.conv3 = self._make_stage(blocks_per_stage[1], channels[1], channels[2], reduce_spatial_size=True)
        self.conv4 = self._make_stage(blocks_per_stage[2], channels[2], channels[3], reduce_spatial_size=False)
        self.conv5 = Conv1x1(channels[3], channels[3])
        self.out_channels = channels[3]
        self.fc = nn.Sequential(nn.Linear(channels[3], feature_dim), nn.BatchNorm1d(feature_dim), nn.ReLU(inplace=True))
        self._initialise()

    @staticmethod
    def _make_stage(num_blocks: int, in_channels: int, out_channels: int, reduce_spatial_size: bool) -> nn.Sequential:
        blocks: list[nn.Module] = [OSBlock(in_channels, out_channels)]
        blocks += [OSBlock(out_channels, out_channels) for _ in range(1, num_blocks)]
        if reduce_spatial_size:
            # The transition layer; torchreid names it `<stage>.<num_blocks>.0`.
            blocks.append(nn.Sequential(Conv1x1(out_channels, out_channels), nn.AvgPool2d(2, stride=2)))
        return nn.Sequential(*blocks)

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0, 0.01)
                nn.init.zeros_(module.bias)

    @property
    def feature_dim(self) -> int:
        return self.fc[0].out_features

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` normalised images -> ``(B, out_channels, H/16, W/16)`` feature map."""
        x = self.maxpool(self.conv1(images))
        x = self.conv2(x)
        x = self.conv3(x)
        x = self.conv4(x)
        return self.conv5(x)

    def forward_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """``(B, out_channels)`` pooled map -> ``(B, feature_dim)`` OSNet feature."""
        return self.fc(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_features(images)


OSNET_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "osnet_x1_0": (64, 256, 384, 512),
    "osnet_x0_75": (48, 192, 288, 384),
    "osnet_x0_5": (32, 128, 192, 256),
    "osnet_x0_25": (16, 64, 96, 128),
}


def osnet(name: str) -> OSNet:
    """The OSNet called ``name`` (one of :data:`OSNET_CHANNELS`), randomly initialised."""
    return OSNet(OSNET_CHANNELS[name])
