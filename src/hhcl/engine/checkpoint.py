"""Checkpoints written atomically, and the random number generator states they carry.

A checkpoint is a dict of tensors and plain Python values only, so that it loads with
``torch.load(weights_only=True)``: the numpy generator state is stored as a tensor.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hhcl.checksum import with_checksum
from hhcl.errors import HHCLError
from hhcl.files import atomic_file

CHECKPOINT_FORMAT = "hhcl-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomically(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` ``state`` with its sha256 checksum through :func:`hhcl.files.atomic_file`.

    A run killed while saving leaves the previous file intact, and a changed byte in the file is
    found when it is loaded (:func:`hhcl.models.weights.read_checkpoint`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # torch.save reports a full disk as a bare RuntimeError; Python's write names it
    torch.save(with_checksum(state), buffer)
    with atomic_file(path) as temporary:
        temporary.write_bytes(buffer.getbuffer())
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomically` (on CPU, checksum verified); one-line errors."""
    from hhcl.models.weights import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise HHCLError(f"checkpoint {path} not found: give the checkpoint.pth of an earlier run")
    state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HHCLError(f"{path} is not an hhcl training checkpoint: --resume needs the checkpoint.pth of a run; "
                        "use --init-weights to start from a model file")
    return state


def check_same_model(state: dict[str, Any], build_options: dict[str, Any]) -> None:
    """Refuse, in one line, a checkpoint whose model was built with other options (``--arch``...) than this run's."""
    saved = state.get("build_options") or {}
    changed = [f"{key} {saved[key]!r} (now {build_options.get(key)!r})" for key in saved
               if key in build_options and saved[key] != build_options[key]]
    if changed:
        raise HHCLError(f"the checkpoint holds a model built with {', '.join(changed)}: resume with the checkpoint's "
                        f"settings (e.g. --arch {saved.get('arch')}), or train the new model into another --output")


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
