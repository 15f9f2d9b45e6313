"""The runtime of a run, resolved once: device, precision, CPU threads, determinism and seeds."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

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


def busy_cores(sample_seconds: float = 0.3) -> float | None:
    """How many cores other work keeps busy now, from two reads of ``/proc/stat``; None where it is absent.

    A short sample rather than the load average: the load average lags a minute behind a job that
    has just started or ended.
    """
    def read() -> tuple[int, int]:
        fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]), idle

    try:
        total_before, idle_before = read()
        own_before = time.process_time()
        time.sleep(sample_seconds)
        total_after, idle_after = read()
        own = time.process_time() - own_before
    except (OSError, ValueError, IndexError):
        return None
    ticks = total_after - total_before
    if ticks <= 0:
        return None
    cores = ticks / ((os.sysconf("SC_CLK_TCK") or 100) * sample_seconds)
    busy = cores * (1 - (idle_after - idle_before) / ticks) - own / sample_seconds
    return max(0.0, busy)


def choose_num_threads(requested: int) -> tuple[int, str]:
    """The CPU threads a run computes with, and why.

    ``requested`` > 0 is used as given. 0 (auto) takes one thread per core that is idle when the run
    starts: torch's default of one thread per core is the fastest on an idle machine, but beside
    another CPU-bound job its threads wait for each other at every step, and one thread is then
    much faster (``python -m benchmarks.threads``). ``OMP_NUM_THREADS``, when set, wins, as in torch.
    The result depends a little on the thread count (the order of the additions), so a run that must
    be bit-identical on another day pins ``train.num_threads``.
    """
    if requested > 0:
        return requested, "train.num_threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return torch.get_num_threads(), "OMP_NUM_THREADS"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    busy = busy_cores()
    if busy is None:
        return cores, f"auto: one per core ({cores})"
    threads = max(1, min(cores, round(cores - busy)))
    return threads, f"auto: {busy:.1f} of {cores} cores busy at the start"


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["busy_cores", "choose_num_threads", "configure_determinism", "derived_seed", "resolve_device",
           "resolve_precision", "seed_everything"]
