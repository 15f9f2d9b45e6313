"""Global pooling of a feature map into one vector per image: average or generalised mean (GeM);
and the same pooling over horizontal stripes of the map (``model.parts``)."""

from __future__ import annotations

import torch
from torch import nn

from hhcl.errors import HHCLError


class GlobalAvgPool(nn.Module):
    """``(B, C, H, W) -> (B, C)`` mean over the spatial positions."""

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return feature_map.mean(dim=(2, 3))


class GeneralizedMeanPool(nn.Module):
    """GeM pooling with a learnable exponent ``p``: ``(B, C, H, W) -> (B, C)``.

    ``(mean(clamp(x, eps) ** p)) ** (1 / p)``: ``p = 1`` is average pooling and ``p -> inf`` max
    pooling; the default ``p = 3`` weights the strongest activations more, which suits re-ID crops
    where the person covers only part of the frame.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.full((1,), float(p)))
        self.eps = eps

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        # Under bf16 autocast the power and the mean lose too much precision: do them in float32.
        clamped = feature_map.float().clamp(min=self.eps)
        return clamped.pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


def stripe_bounds(height: int, parts: int) -> list[tuple[int, int]]:
    """``[(start, end), ...]``: the rows of each of ``parts`` horizontal stripes of a ``height``-row map, top first.

    The bounds of adaptive pooling: stripe ``p`` covers rows ``floor(p*h/P)`` to ``ceil((p+1)*h/P)``.
    When ``h`` is a multiple of ``P`` the stripes tile the map; otherwise neighbouring stripes share
    a row, and with ``h < P`` some stripes are the same row, so every stripe holds at least one row.
    """
    return [((index * height) // parts, -((-(index + 1) * height) // parts)) for index in range(parts)]


def pool_stripes(feature_map: torch.Tensor, parts: int, pooling: nn.Module) -> torch.Tensor:
    """``(B, C, h, w) -> (B, parts, C)``: ``pooling`` applied to each horizontal stripe (:func:`stripe_bounds`)."""
    stripes = [pooling(feature_map[:, :, start:end]) for start, end in stripe_bounds(feature_map.shape[2], parts)]
    return torch.stack(stripes, dim=1)


POOLINGS = ("avg", "gem")


def build_pooling(name: str) -> nn.Module:
    """The pooling layer called ``name``: ``"avg"`` or ``"gem"``."""
    if name == "avg":
        return GlobalAvgPool()
    if name == "gem":
        return GeneralizedMeanPool()
    raise HHCLError(f"unknown pooling {name!r}: choose one of {', '.join(POOLINGS)}")
