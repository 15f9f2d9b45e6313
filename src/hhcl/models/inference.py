"""Fast inference settings: numeric precision (autocast) and memory format.

On CPU, channels-last ("NHWC") tensors let oneDNN pick its fastest convolutions; on CPUs with
AVX512-BF16 or AMX, bf16 autocast on a channels-last model runs the convolutions in native bf16
instructions, well ahead of the fp32 default (how far: ``python -m benchmarks.backbones``,
docs/benchmarks.md). fp16 autocast is offered on CUDA only: CPU fp16 convolutions are slow or
missing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import nn

from hhcl.config import PRECISIONS
from hhcl.errors import HHCLError

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, device: torch.device) -> None:
    """Raise a one-line :class:`HHCLError` when ``precision`` is unknown or unsupported on ``device``."""
    if precision not in PRECISIONS:
        raise HHCLError(f"unknown precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type != "cuda":
        raise HHCLError(f"precision fp16 needs a CUDA device (got {device}): use bf16 on CPU")


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


def uses_channels_last(precision: str, device: torch.device) -> bool:
    """Whether inference at ``precision`` on ``device`` runs faster with channels-last tensors.

    Always on CPU. On CUDA only with reduced precision, where tensor cores want NHWC.
    """
    return device.type == "cpu" or precision != "fp32"


def _is_channels_last(model: nn.Module) -> bool:
    for parameter in model.parameters():
        if parameter.dim() == 4 and parameter.shape[1] > 1 and parameter.shape[2] * parameter.shape[3] > 1:
            return parameter.is_contiguous(memory_format=torch.channels_last) and not parameter.is_contiguous()
    return False


@contextlib.contextmanager
def inference_context(model: nn.Module, precision: str = "fp32", device: str | torch.device = "cpu") -> Iterator[
        nn.Module]:
    """Put ``model`` on ``device`` in eval mode with the fastest memory format for ``precision``.

    The model's train/eval mode and memory format are restored on exit (it stays on ``device``).
    Inside, feed inputs through :func:`prepare_images` and run under :func:`autocast`.
    """
    device = torch.device(device)
    check_precision(precision, device)
    was_training = model.training
    was_channels_last = _is_channels_last(model)
    model.to(device).eval()
    # fp32 on CPU gains as much from channels-last inputs alone; reduced precision needs the
    # weights in that layout too, or every call re-lays them out after casting.
    convert_model = precision != "fp32" and not was_channels_last
    if convert_model:
        model.to(memory_format=torch.channels_last)
    try:
        # no_grad rather than inference_mode: callers update the features in place later (memories).
        with torch.no_grad():
            yield model
    finally:
        if convert_model:
            model.to(memory_format=torch.contiguous_format)
        model.train(was_training)


def prepare_images(images: torch.Tensor, precision: str, device: torch.device) -> torch.Tensor:
    """``(B, 3, H, W)`` float32 -> the same on ``device``, channels-last when that is faster."""
    images = images.to(device, non_blocking=True)
    if uses_channels_last(precision, device):
        images = images.contiguous(memory_format=torch.channels_last)
    return images


def compiled_or_eager(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` compiled by ``torch.compile`` for fixed input shapes; should compiling fail (no C++
    compiler, an unsupported operator), the eager model, with one warning that says why.

    Compiling happens at the first call and is cached by torch per model and input shape, so
    feed batches of one size. Each weight update is seen: the weights are inputs of the graph.
    """
    import logging

    compiled: Callable | None = torch.compile(model, dynamic=False)

    def run(images: torch.Tensor) -> torch.Tensor:
        nonlocal compiled
        if compiled is None:
            return model(images)
        try:
            return compiled(images)
        except Exception as error:  # noqa: BLE001 - inductor raises many types; the eager model re-raises real errors
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            logging.getLogger("hhcl").warning("train.compile: torch.compile failed (%s: %s); features are extracted "
                                              "without it", type(error).__name__, reason)
            compiled = None
            return model(images)

    return run

