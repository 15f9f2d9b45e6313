"""The runtime of a run, resolved once: device, precision, determinism and seeds."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from hhcl.errors import HHCLError
from hhcl.seeds import derived_seed


def resolve_device(name: str | torch.device, local_rank: int | None = None) -> torch.device:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N`` as a device.

    local_rank: the index a bare ``cuda`` gets (one process per GPU under torchrun); None leaves it bare.
    A one-line :class:`HHCLError` when the name is unknown or the device is unusable here.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise HHCLError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise HHCLError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise HHCLError(f"device {name!r} asked for, but CUDA is not available here: use cpu")
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 AMP on CUDA (fp16 where bf16 is unsupported) and fp32 on CPU."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def configure_determinism(deterministic: bool) -> None:
    if deterministic:
        # cuBLAS needs a fixed workspace to be deterministic; it must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.benchmark = True


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["configure_determinism", "derived_seed", "resolve_device", "resolve_precision", "seed_everything"]
