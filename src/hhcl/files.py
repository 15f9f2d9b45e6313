"""Writing files safely: one atomic writer, output folders checked early, and the temporaries of killed runs.

Every file hhcl writes goes through :func:`atomic_file`: the bytes go to a temporary file beside
the target, named ``.<name>.tmp-<pid>``, which is flushed to disk and renamed over the target;
the folder is then flushed too, so that the rename survives a power cut. A process killed while
writing leaves the previous file intact, and a temporary whose process is gone is removed by
:func:`remove_stray_temporaries`.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hhcl.errors import HHCLError

TEMPORARY_TAG = ".tmp-"
# ``.<name>.tmp-<pid>`` for a file, ``.<name>.tmp-<pid>-<random>`` for a staging folder (tempfile.mkdtemp)
TEMPORARY_NAME = re.compile(r"^\..+\.tmp-(?P<pid>\d+)(-[^/]*)?$")
FULL_DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def temporary_path(path: str | os.PathLike) -> Path:
    """The name a file is written under before it replaces ``path``: ``.<name>.tmp-<pid>`` beside it."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMPORARY_TAG}{os.getpid()}")


def temporary_prefix(path: str | os.PathLike) -> str:
    """The ``tempfile.mkdtemp`` prefix of a staging folder for ``path`` (the pid makes it removable later)."""
    return f".{Path(path).name}{TEMPORARY_TAG}{os.getpid()}-"


def write_error(path: Path, error: OSError, option: str = "--output") -> HHCLError:
    """A one-line :class:`HHCLError` for an ``OSError`` raised while writing ``path``."""
    if error.errno in FULL_DISK_ERRORS:
        return HHCLError(f"cannot write {path}: {error.strerror} (the disk or the file size limit is full); "
                         f"free some space or choose another {option}; the previous file, if any, is kept")
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return HHCLError(f"cannot write {path}: no write permission on the folder {path.parent} "
                         f"({error.strerror}); choose another {option}")
    return HHCLError(f"cannot write {path}: {error.strerror or error}; choose another {option}")


@contextmanager
def atomic_file(path: str | os.PathLike, option: str = "--output") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, make it ``path``.

    The caller writes the whole file under the yielded name (by path or by opening it). The file
    is then flushed to disk (``os.fsync``), renamed over ``path`` (``os.replace``, atomic on one
    file system) and the folder is flushed. On any error the temporary is removed and ``path``
    keeps its previous contents; an ``OSError`` (disk full, permission) becomes a one-line
    :class:`HHCLError` naming ``path`` and ``option``.
    """
    path = Path(path)
    temporary = temporary_path(path)
    try:
        yield temporary
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(temporary, path)
        fsync_folder(path.parent)
    except OSError as error:
        raise write_error(path, error, option) from None
    finally:
        temporary.unlink(missing_ok=True)


def write_bytes_atomically(path: str | os.PathLike, data: bytes | str, option: str = "--output") -> Path:
    """Replace ``path`` with ``data`` (text is UTF-8) through :func:`atomic_file`."""
    path = Path(path)
    with atomic_file(path, option) as temporary:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def fsync_folder(folder: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename inside it) to disk; a no-op where folders cannot be opened."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def ensure_writable_folder(folder: str | os.PathLike, option: str = "--output") -> Path:
    """Create ``folder`` (and its parents) if needed; raise :class:`HHCLError` naming it if it cannot be written.

    ``option`` is the command-line option the folder came from, named in the message.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise HHCLError(f"{option} {folder} is a file, not a folder; give a folder name")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        existing = next((parent for parent in folder.parents if parent.exists()), None)
        if existing is not None and not existing.is_dir():
            raise HHCLError(f"cannot create the folder {folder}: {existing} is a file; choose another {option}") \
                from None
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise HHCLError(f"cannot create the folder {folder}: no write permission on {existing} "
                            f"({error.strerror}); choose another {option}") from None
        raise HHCLError(f"cannot create the folder {folder}: {error.strerror or error}; choose another {option}") \
            from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise HHCLError(f"the folder {folder} is not writable (no write permission for this user); "
                        f"choose another {option}")
    return folder


def check_output_file(path: str | os.PathLike, option: str = "--output") -> Path:
    """Refuse, before any long work, an output file that cannot be written: names the folder or file."""
    path = Path(path)
    if path.is_dir():
        raise HHCLError(f"{option} {path} is a folder; give a file name")
    ensure_writable_folder(path.parent, option)
    if path.exists() and not os.access(path, os.W_OK):
        raise HHCLError(f"{option} {path} is read-only (no write permission on the file); choose another {option}")
    return path


def process_is_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists on this machine (one of another user counts)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:  # e.g. a pid beyond the system's range
        return False
    return True


def stray_temporaries(folder: str | os.PathLike) -> list[Path]:
    """The temporaries in ``folder`` (not its sub-folders) left by processes that are no longer running."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    strays = []
    for entry in sorted(folder.iterdir()):
        match = TEMPORARY_NAME.match(entry.name)
        if match and not process_is_alive(int(match["pid"])):
            strays.append(entry)
    return strays


def remove_stray_temporaries(folder: str | os.PathLike) -> tuple[int, int]:
    """Delete :func:`stray_temporaries` of ``folder``; return how many entries and bytes were freed."""
    count, freed = 0, 0
    for stray in stray_temporaries(folder):
        size = _size_on_disk(stray)
        try:
            if stray.is_dir() and not stray.is_symlink():
                shutil.rmtree(stray)
            else:
                stray.unlink()
        except OSError:
            continue  # not ours to remove (permissions): leave it
        count, freed = count + 1, freed + size
    return count, freed


def _size_on_disk(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    total = 0
    for parent, _, names in os.walk(path):
        total += sum(os.lstat(os.path.join(parent, name)).st_size for name in names)
    return total


def describe_bytes(count: int) -> str:
    """``123 B``, ``4.5 kB``, ``283.0 MB``..."""
    size = float(count)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"
