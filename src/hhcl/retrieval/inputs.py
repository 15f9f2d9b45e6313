"""Which image files a command works on: folders, list files and single images, as the user names them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hhcl.data.images import IMAGE_EXTENSIONS, is_image_name
from hhcl.data.scan import list_image_files
from hhcl.errors import HHCLError

EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)


def gather_image_paths(sources: Sequence[str | os.PathLike], role: str = "--images") -> list[str]:
    """The image files named by ``sources``, in order, without duplicates.

    Each source is a folder (its images, sorted, not recursive), an image file, or a list file:
    one image path per line, relative to the list file's folder; blank lines and ``#`` comments
    are skipped. A missing source, or a listed file that is missing, is an :class:`HHCLError`
    naming it; so is finding no image at all.
    """
    paths: list[str] = []
    for source in sources:
        source = Path(source)
        if source.is_dir():
            # broken files, empty ones included, are skipped when decoded: one warning and one count each
            found = list_image_files(source, drop_empty=False)
            if not found:
                raise HHCLError(f"{role} folder {source} has no images (expected {EXTENSIONS_TEXT} files)")
            paths.extend(found)
        elif not source.exists():
            raise HHCLError(f"{role} {source} not found: give an image folder, an image file or a list file")
        elif is_image_name(source.name):
            paths.append(str(source))
        else:
            paths.extend(_read_list_file(source, role))
    unique = list(dict.fromkeys(paths))
    if not unique:
        raise HHCLError(f"{role} names no images: give an image folder, image files or a list file")
    return unique


def _read_list_file(list_file: Path, role: str) -> list[str]:
    try:
        lines = list_file.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise HHCLError(
            f"{role} {list_file} is neither an image ({EXTENSIONS_TEXT}) nor a readable list of image paths ({error})"
        ) from None
    paths = []
    for number, line in enumerate(lines, start=1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = list_file.parent / entry
        if not path.is_file():
            raise HHCLError(f"{list_file}:{number}: image {path} not found; fix or delete that line")
        if not is_image_name(path.name):
            raise HHCLError(f"{list_file}:{number}: {path} is not an image ({EXTENSIONS_TEXT})")
        paths.append(str(path))
    if not paths:
        raise HHCLError(f"{role} list file {list_file} lists no images")
    return paths
