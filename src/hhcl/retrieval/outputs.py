"""Output folders and files: created on demand, refused early with a clear message when unusable."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hhcl.errors import HHCLError


def ensure_writable_folder(folder: str | os.PathLike, option: str = "--output") -> Path:
    """Create ``folder`` (and its parents) if needed; raise :class:`HHCLError` naming it if it cannot be written.

    ``option`` is the command-line option the folder came from, named in the message.
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = error.strerror or error
        raise HHCLError(f"cannot create the folder {folder}: {reason}; choose another {option}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HHCLError(f"the folder {folder} is not writable; choose another {option}")
    return folder


def check_output_file(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse, before any long work, an output file that cannot be written: names the folder or file."""
    path = Path(path)
    if path.is_dir():
        raise HHCLError(f"{option} {path} is a folder; give a file name")
    ensure_writable_folder(path.parent, option)
    return path


def save_features(path: str | os.PathLike, paths: Sequence[str], features, **metadata: str) -> Path:
    """Write ``paths`` (N,) and ``features`` (N, D) float32 to the ``.npz`` file ``path`` (the exact name).

    ``metadata`` (e.g. ``arch``) is stored as string entries. Read it back with
    ``numpy.load(path)``: ``paths``, ``features`` and the metadata keys.
    """
    arrays = {
        "paths": np.array([str(item) for item in paths], dtype=str),
        "features": np.asarray(features, dtype=np.float32),
        **{key: np.str_(value) for key, value in metadata.items()},
    }
    return write_npz(path, arrays)


def write_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], option: str = "--output") -> Path:
    """Write ``arrays`` to ``path`` as ``.npz`` under exactly that name, replacing it atomically.

    A reader never sees a half-written file, and an interrupted write leaves the old one.
    """
    path = check_output_file(path, option)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **arrays)
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise HHCLError(f"cannot write {path}: {error.strerror or error}") from None
    return path
