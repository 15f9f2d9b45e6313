"""The sha256 checksum that hhcl's own files carry, so that a changed byte is found before the file is used.

The digest covers the payload as loaded (tensor and array bytes with their dtype and shape, keys,
numbers and strings), not the file's bytes: it does not depend on how torch or numpy lay the file
out, and it is stored inside the file itself (``payload_sha256``), so a copied file keeps it.
Files written elsewhere (torchvision, torchreid, IBN-Net weights) carry none and load unchecked.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np
import torch

from hhcl.errors import HHCLError

CHECKSUM_KEY = "payload_sha256"


def payload_sha256(payload: Any) -> str:
    """The hex sha256 of a nest of dicts, lists, tuples, tensors, arrays, numbers, strings and None."""
    hasher = hashlib.sha256()
    _feed(hasher, payload)
    return hasher.hexdigest()


def _feed(hasher, value: Any) -> None:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous()
        hasher.update(f"tensor {tensor.dtype} {tuple(tensor.shape)};".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        hasher.update(f"ndarray {array.dtype.str} {array.shape};".encode())
        hasher.update(array.reshape(-1).view(np.uint8).data)
    elif isinstance(value, dict):
        hasher.update(f"dict {len(value)};".encode())
        for key in sorted(value, key=repr):
            _feed(hasher, key)
            _feed(hasher, value[key])
    elif isinstance(value, (list, tuple)):
        hasher.update(f"{'list' if isinstance(value, list) else 'tuple'} {len(value)};".encode())
        for item in value:
            _feed(hasher, item)
    elif isinstance(value, str):
        encoded = value.encode("utf-8", "surrogatepass")
        hasher.update(f"str {len(encoded)};".encode())
        hasher.update(encoded)
    elif isinstance(value, bytes):
        hasher.update(f"bytes {len(value)};".encode())
        hasher.update(value)
    elif isinstance(value, float):
        hasher.update(f"float {value.hex()};".encode())
    elif value is None or isinstance(value, (bool, int)):
        hasher.update(f"{type(value).__name__} {value!r};".encode())
    elif isinstance(value, np.generic):
        hasher.update(f"{value.dtype.str} ".encode())
        _feed(hasher, value.item())
    else:  # torch.dtype, torch.device and the like: their repr is stable
        hasher.update(f"{type(value).__qualname__} {value!r};".encode())


def with_checksum(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` plus its :func:`payload_sha256` under ``payload_sha256`` (an older one is replaced)."""
    payload = {key: value for key, value in state.items() if key != CHECKSUM_KEY}
    return {**payload, CHECKSUM_KEY: payload_sha256(payload)}


def verified(state: Any, path: str | os.PathLike) -> Any:
    """``state`` without its checksum entry, after checking it; a file without one is returned as it is.

    A mismatch is a one-line :class:`HHCLError` naming ``path``: the contents are not used.
    """
    if not isinstance(state, dict) or CHECKSUM_KEY not in state:
        return state
    payload = {key: value for key, value in state.items() if key != CHECKSUM_KEY}
    check_digest(str(state[CHECKSUM_KEY]), payload_sha256(payload), path)
    return payload


def check_digest(stored: str, computed: str, path: str | os.PathLike) -> None:
    """Raise the one-line corruption error for ``path`` when ``computed`` differs from ``stored``."""
    if stored != computed:
        raise HHCLError(f"{path} is corrupt: its contents do not match the sha256 checksum written with it "
                        f"(stored {stored[:12]}..., now {computed[:12]}...), so it was not loaded; "
                        f"use an intact copy or write it again")
