"""Feature files (``.npz``) written atomically with their checksum, and read back verified.

The output-folder checks live in :mod:`hhcl.files`; they are re-exported here."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hhcl.checksum import CHECKSUM_KEY, check_digest, payload_sha256
from hhcl.errors import HHCLError
from hhcl.files import atomic_file, check_output_file, ensure_writable_folder

__all__ = ["check_output_file", "ensure_writable_folder", "load_features", "read_npz", "save_features", "write_npz"]


def save_features(path: str | os.PathLike, paths: Sequence[str], features, **metadata: str) -> Path:
    """Write ``paths`` (N,) and ``features`` (N, D) float32 to the ``.npz`` file ``path`` (the exact name).

    ``metadata`` (e.g. ``arch``) is stored as string entries. Read it back, checksum verified, with
    :func:`load_features` (``numpy.load(path)`` also reads it, unverified).
    """
    arrays = {
        "paths": np.array([str(item) for item in paths], dtype=str),
        "features": np.asarray(features, dtype=np.float32),
        **{key: np.str_(value) for key, value in metadata.items()},
    }
    return write_npz(path, arrays)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], option: str = "--output") -> Path:
    """Write ``arrays`` and their sha256 checksum to ``path`` as ``.npz`` under exactly that name, atomically.

    A reader never sees a half-written file, and an interrupted write leaves the old one.
    :func:`read_npz` verifies the checksum.
    """
    path = check_output_file(path, option)
    payload = {key: np.asarray(value) for key, value in arrays.items() if key != CHECKSUM_KEY}
    with atomic_file(path, option) as temporary, open(temporary, "wb") as stream:
        np.savez(stream, **payload, **{CHECKSUM_KEY: np.str_(payload_sha256(payload))})
    return path


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (no pickles), its checksum verified when it has one (:func:`write_npz`).

    Raises a one-line :class:`HHCLError` naming ``path`` for a missing, unreadable or corrupt file.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except FileNotFoundError:
        raise HHCLError(f"{path} not found; write it with `hhcl extract`") from None
    except PermissionError as error:
        raise HHCLError(f"cannot read {path}: {error.strerror}; change its permissions (chmod u+r)") from None
    except zipfile.BadZipFile as error:
        if "CRC" in str(error):  # the zip's own check of a stored array caught a changed byte
            raise HHCLError(f"{path} is corrupt: {error}, so it was not loaded; use an intact copy or write it "
                            f"again") from None
        raise HHCLError(f"{path} is not a readable .npz file ({error}); write it again") from None
    except (OSError, ValueError, EOFError) as error:
        raise HHCLError(f"{path} is not a readable .npz file ({error}); write it again") from None
    if CHECKSUM_KEY not in arrays:
        return arrays
    stored_digest = str(arrays.pop(CHECKSUM_KEY))
    check_digest(stored_digest, payload_sha256(arrays), path)
    return arrays


def load_features(path: str | os.PathLike) -> tuple[list[str], np.ndarray, dict[str, str]]:
    """The ``paths``, ``features`` (N, D) float32 and string metadata of a file written by :func:`save_features`."""
    arrays = read_npz(path)
    if "paths" not in arrays or "features" not in arrays:
        raise HHCLError(f"{path} holds no 'paths' and 'features' arrays: give a file written by `hhcl extract`")
    metadata = {key: str(value) for key, value in arrays.items() if key not in ("paths", "features")}
    return [str(item) for item in arrays["paths"]], arrays["features"].astype(np.float32), metadata
