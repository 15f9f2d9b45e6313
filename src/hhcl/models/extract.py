"""``extract_features``: L2-normalised features of a list of images, in their order."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from os import PathLike

import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from hhcl.data.loaders import build_test_loader
from hhcl.data.transforms import normalize_batch
from hhcl.models.inference import autocast, compiled_or_eager, inference_context, prepare_images


def extract_features(
    model: nn.Module,
    items: Sequence[str | PathLike[str] | tuple],
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    height: int = 256,
    width: int = 128,
    num_workers: int = 0,
    precision: str = "fp32",
    progress: bool = True,
    strict: bool = False,
    description: str = "features",
    compile: bool = False,
) -> torch.Tensor:
    """Features of ``items`` (paths or ``(path, pid, camid)`` tuples): ``(N, D)`` float32 on the CPU,
    L2-normalised, row ``i`` for ``items[i]``.

    Images are resized to ``height x width`` and normalised with the ImageNet mean/std. The model
    runs in eval mode on ``device`` at ``precision`` (``"fp32"``; ``"bf16"``, faster on CPUs with
    AVX512-BF16, see docs/benchmarks.md; or ``"fp16"`` on CUDA); its mode and memory format are
    restored after.
    A broken image is skipped by the loader with a warning and keeps a zero row (``strict=True``
    makes it an error instead).
    ``compile=True`` runs the model through :func:`hhcl.models.inference.compiled_or_eager`; the
    last batch is padded to ``batch_size`` so that one compiled graph serves every batch.
    """
    device = torch.device(device)
    loader = build_test_loader(items, batch_size=batch_size, height=height, width=width, num_workers=num_workers,
                               strict=strict)

    runner = compiled_or_eager(model) if compile else model

    def embed(images: torch.Tensor) -> torch.Tensor:
        count = images.shape[0]
        if compile and count < batch_size:  # eval-mode rows are independent: the padding changes no real row
            images = torch.cat([images, images.new_zeros((batch_size - count, *images.shape[1:]))])
        normalised = normalize_batch(images.to(device, non_blocking=True))
        # Re-normalise in float32: a bf16/fp16 output is only approximately unit length.
        return F.normalize(model_outputs(runner, normalised, precision, device)[:count], dim=1).cpu()

    features: torch.Tensor | None = None
    with inference_context(model, precision, device):
        batches = ((indices, images) for images, indices in loader)
        for indices, output in embedded_batches(batches, embed, len(items), progress, description):
            if features is None:
                features = torch.zeros(len(items), output.shape[1], dtype=torch.float32)
            features[indices] = output
    if features is None:  # no items, or every image broken
        feature_dim = getattr(model, "module", model).feature_dim  # DistributedDataParallel wraps the model
        return torch.zeros(len(items), feature_dim, dtype=torch.float32)
    return features


def model_outputs(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, precision: str,
                  device: torch.device) -> torch.Tensor:
    """The model's ``(B, D)`` float32 outputs, on ``device``, for normalised float32 ``(B, 3, H, W)`` images.

    Run inside :func:`hhcl.models.inference.inference_context`.
    """
    with autocast(precision, device):
        output = model(prepare_images(images, precision, device))
    return output.float()


def embedded_batches(
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    embed: Callable[[torch.Tensor], torch.Tensor],
    total: int,
    progress: bool = True,
    description: str = "features",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The extraction loop: ``(indices (B,), images (B, 3, H, W))`` batches in, ``(indices, embed(images))``
    out, one per batch, with a progress bar over ``total`` images."""
    with tqdm(total=total, desc=description, unit="img", disable=not progress, leave=False) as bar:
        for indices, images in batches:
            yield indices, embed(images)
            bar.update(len(indices))
