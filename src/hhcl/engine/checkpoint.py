"""Checkpoints written atomically, and the random number generator states they carry.

A checkpoint is a dict of tensors and plain Python values only, so that it loads with
``torch.load(weights_only=True)``: the numpy generator state is stored as a tensor.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hhcl.errors import HHCLError

CHECKPOINT_FORMAT = "hhcl-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomically(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``.

    A run killed while saving leaves the previous file intact (``os.replace`` is atomic on POSIX
    and Windows when both names are on one file system).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomically` (on CPU); one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise HHCLError(f"checkpoint {path} not found: give the checkpoint.pth of an earlier run")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or foreign files fail in many ways inside torch.load
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise HHCLError(f"checkpoint {path} cannot be read ({first_line}): resume from another file") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HHCLError(f"{path} is not an hhcl training checkpoint: --resume needs the checkpoint.pth of a run; "
                        "use --init-weights to start from a model file")
    return state


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's and torch's (CPU and CUDA) global generators."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
