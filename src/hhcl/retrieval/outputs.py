"""Output folders: created on demand, and refused early with a clear message when unusable."""

from __future__ import annotations

import os
from pathlib import Path

from hhcl.errors import HHCLError


def ensure_writable_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if needed; raise :class:`HHCLError` naming it if it cannot be written."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise HHCLError(f"cannot create the output folder {folder}: {error.strerror or error}; choose another --output") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HHCLError(f"the output folder {folder} is not writable; choose another --output")
    return folder
