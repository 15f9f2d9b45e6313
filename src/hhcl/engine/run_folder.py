"""One writer per run folder: an OS lock on ``RUN/.lock``, and the cleanup of what killed runs left.

The lock is ``fcntl.flock`` on an open file: the kernel releases it when the process ends, however
it ends, so a run killed with SIGKILL never blocks the ``--resume`` that follows it. Where
``fcntl`` does not exist (Windows) the folder is not locked.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hhcl.errors import HHCLError
from hhcl.files import describe_bytes, ensure_writable_folder, remove_stray_temporaries

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_FILE = ".lock"

log = logging.getLogger("hhcl")


@contextmanager
def locked_run_folder(folder: str | os.PathLike, option: str = "--output") -> Iterator[Path]:
    """Create ``folder`` if needed and hold its lock for the block; refuse a folder another run holds.

    The lock file records the holder's pid and start time, which the refusal names. On entry,
    the temporaries that killed runs left in the folder are removed (:func:`clean_run_folder`).
    """
    folder = ensure_writable_folder(folder, option)
    lock_path = folder / LOCK_FILE
    if fcntl is None:
        yield folder
        return
    try:
        descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise HHCLError(f"cannot create the lock file {lock_path}: {error.strerror}; choose another {option}") \
            from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise HHCLError(f"{folder} is in use by {_holder(lock_path)}; choose another {option} or wait") from None
        os.ftruncate(descriptor, 0)
        os.write(descriptor, f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        clean_run_folder(folder)
        yield folder
    finally:
        os.close(descriptor)  # releases the lock; the file stays, unlocked, for the next run


def _holder(lock_path: Path) -> str:
    """``process N (started TIME)`` from the lock file, or a vaguer phrase while its holder has not written it."""
    try:
        pid, started = lock_path.read_text().strip().split(" ", 1)
    except (OSError, ValueError):
        return "another process"
    return f"process {pid} (started {started})"


def clean_run_folder(folder: str | os.PathLike) -> int:
    """Remove the temporaries of dead processes from ``folder``, log what was freed; return the bytes freed."""
    count, freed = remove_stray_temporaries(folder)
    if count:
        log.info("removed %d unfinished temporary file(s) of killed runs from %s (%s freed)", count, folder,
                 describe_bytes(freed))
    return freed
