"""Training and test transforms, batched in plain torch on the training device.

The DataLoader workers only decode and resize (bicubic, Pillow; see
:func:`hhcl.data.images.load_resized`). The rest runs here on uint8 batches ``(B, 3, H, W)``:

* training (:class:`TrainAugmentation`): horizontal flip (p 0.5), zero padding of 10 pixels and a
  random crop back to ``H x W``, ImageNet normalisation, then random erasing (p 0.5, area 0.02-0.4
  of the image, aspect ratio in [0.3, 1/0.3]) filled with the mean colour;
* test (:func:`normalize_batch`): normalisation only.

Flip, pad and crop are one gather, so a batch costs a handful of tensor operations whatever its
size.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_batch(
    images: torch.Tensor, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> torch.Tensor:
    """The test transform: uint8 ``(B, 3, H, W)`` -> float32 ``(B, 3, H, W)``, ``(x/255 - mean) / std``."""
    _check_batch(images)
    scale, shift = _normalisation_constants(mean, std, images.device)
    return torch.mul(images, scale).add_(shift)  # uint8 x float32 -> float32 in one pass


def _normalisation_constants(mean, std, device) -> tuple[torch.Tensor, torch.Tensor]:
    mean_t = torch.tensor(mean, dtype=torch.float32, device=device)[:, None, None]
    std_t = torch.tensor(std, dtype=torch.float32, device=device)[:, None, None]
    return 1.0 / (255.0 * std_t), -mean_t / std_t


def _check_batch(images: torch.Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a uint8 batch (B, 3, H, W), got {images.dtype} {tuple(images.shape)}")


def flip_pad_crop(
    images: torch.Tensor, flip: torch.Tensor, top: torch.Tensor, left: torch.Tensor, padding: int
) -> torch.Tensor:
    """Flip the images where ``flip`` (B,) bool, zero-pad by ``padding`` and crop ``H x W`` at
    ``(top, left)`` (B,) int in ``[0, 2 * padding]``. ``(B, C, H, W)`` -> same shape and dtype."""
    count, channels, height, width = images.shape
    padded = nn.functional.pad(images, (padding, padding, padding, padding))
    padded_width = width + 2 * padding
    rows = top[:, None] + torch.arange(height, device=images.device)[None, :]  # (B, H)
    cols = left[:, None] + torch.arange(width, device=images.device)[None, :]  # (B, W)
    # Flipping before padding is flipping the padded image, because the padding is symmetric.
    cols = torch.where(flip[:, None], padded_width - 1 - cols, cols)
    # One gather over the flattened planes (several times faster than 4-D advanced indexing).
    source = (rows[:, :, None] * padded_width + cols[:, None, :]).reshape(count, 1, height * width)
    cropped = torch.gather(padded.reshape(count, channels, -1), 2, source.expand(count, channels, -1))
    return cropped.reshape(count, channels, height, width)


def erasing_boxes(
    count: int,
    height: int,
    width: int,
    area: tuple[float, float],
    min_aspect: float,
    attempts: int,
    generator: torch.Generator | None,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one erasing rectangle per image, as random erasing does: area fraction uniform in
    ``area``, aspect ratio (height / width) uniform in ``[min_aspect, 1 / min_aspect]``, retried
    until it fits inside the image. All ``attempts`` are drawn at once and the first that fits is
    kept (about one attempt in eighteen fails, so ten attempts practically always find a box).

    Returns ``(found, top, left, box_height, box_width)``, each ``(B,)``; ``found`` is False when
    no attempt fit.
    """
    shape = (count, attempts)
    target_area = height * width * (area[0] + (area[1] - area[0]) * torch.rand(shape, generator=generator, device=device))
    aspect = min_aspect + (1.0 / min_aspect - min_aspect) * torch.rand(shape, generator=generator, device=device)
    box_height = torch.round(torch.sqrt(target_area * aspect)).long()
    box_width = torch.round(torch.sqrt(target_area / aspect)).long()
    fits = (box_height < height) & (box_width < width)
    first_fit = torch.argmax(fits.int(), dim=1, keepdim=True)  # first True (0 when none)
    found = fits.any(dim=1)
    box_height = box_height.gather(1, first_fit).squeeze(1)
    box_width = box_width.gather(1, first_fit).squeeze(1)
    # Positions uniform over where the box fits: floor(u * (room + 1)).
    u_top, u_left = torch.rand((2, count), generator=generator, device=device)
    top = torch.floor(u_top * (height - box_height + 1).clamp(min=1)).long()
    left = torch.floor(u_left * (width - box_width + 1).clamp(min=1)).long()
    return found, top, left, box_height, box_width


def box_mask(top, left, box_height, box_width, height: int, width: int) -> torch.Tensor:
    """``(B, H, W)`` bool: inside the box of each image (all ``(B,)`` int)."""
    device = top.device
    rows = torch.arange(height, device=device)[None, :]
    cols = torch.arange(width, device=device)[None, :]
    inside_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None])  # (B, H)
    inside_cols = (cols >= left[:, None]) & (cols < (left + box_width)[:, None])  # (B, W)
    return inside_rows[:, :, None] & inside_cols[:, None, :]


class TrainAugmentation(nn.Module):
    """The paper's training augmentation on a uint8 batch ``(B, 3, height, width)`` already
    resized by the loader; returns float32 ``(B, 3, height, width)``, normalised.

    Randomness comes from ``generator`` (on the batch's device) when given, else from torch's
    global generator, so a seeded generator reproduces the batch exactly.
    """

    def __init__(
        self,
        height: int = 256,
        width: int = 128,
        flip_probability: float = 0.5,
        padding: int = 10,
        erasing_probability: float = 0.5,
        erasing_area: tuple[float, float] = (0.02, 0.4),
        erasing_min_aspect: float = 0.3,
        erasing_attempts: int = 10,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.height = height
        self.width = width
        self.flip_probability = flip_probability
        self.padding = padding
        self.erasing_probability = erasing_probability
        self.erasing_area = erasing_area
        self.erasing_min_aspect = erasing_min_aspect
        self.erasing_attempts = erasing_attempts
        self.mean = tuple(mean)
        self.std = tuple(std)

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check_batch(images)
        count, _, height, width = images.shape
        if (height, width) != (self.height, self.width):
            raise ValueError(
                f"batch is {height}x{width} but the augmentation expects {self.height}x{self.width}; "
                "build the loader with the same height and width"
            )
        device = images.device

        def uniform(*shape: int) -> torch.Tensor:
            return torch.rand(shape, generator=generator, device=device)

        flip = uniform(count) < self.flip_probability
        offsets = torch.floor(uniform(2, count) * (2 * self.padding + 1)).long()
        images = flip_pad_crop(images, flip, offsets[0], offsets[1], self.padding)

        scale, shift = _normalisation_constants(self.mean, self.std, device)
        normalised = torch.mul(images, scale).add_(shift)

        erase = uniform(count) < self.erasing_probability
        found, top, left, box_height, box_width = erasing_boxes(
            count, height, width, self.erasing_area, self.erasing_min_aspect, self.erasing_attempts,
            generator, device,
        )
        mask = box_mask(top, left, box_height, box_width, height, width) & (erase & found)[:, None, None]
        # The mean colour normalises to 0; multiplying by "not erased" is the cheapest fill.
        return normalised.mul_(~mask[:, None])

    def extra_repr(self) -> str:
        return (
            f"height={self.height}, width={self.width}, flip={self.flip_probability}, padding={self.padding}, "
            f"erasing={self.erasing_probability} area={self.erasing_area} min_aspect={self.erasing_min_aspect}"
        )

