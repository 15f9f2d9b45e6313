"""Scanning split folders: listing image files, parsing identity and camera from their names,
and catching broken files. Shared by every reader.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from hhcl.data.images import image_problem, is_image_name
from hhcl.errors import HHCLError

logger = logging.getLogger("hhcl.data")


def shown_pattern(pattern: str | re.Pattern) -> str:
    """A regular expression as a message shows it: raw, in single quotes, so that a copy pasted into a
    shell (``--pattern '^(?P<pid>-?\\d+)_'``) works; ``repr`` would double every backslash."""
    text = pattern.pattern if isinstance(pattern, re.Pattern) else str(pattern)
    return f"'{text}'" if "'" not in text else shlex.quote(text)


@dataclass(frozen=True)
class ParsedName:
    """An image file with the raw text of its ``pid`` and ``cam`` groups (None when absent)."""

    path: str
    pid: str | None
    cam: str | None


def compile_pattern(pattern: str | re.Pattern) -> re.Pattern:
    """Compile a file-name pattern; it may have the named groups ``pid`` and ``cam``."""
    if isinstance(pattern, re.Pattern):
        compiled = pattern
    else:
        try:
            compiled = re.compile(pattern)
        except re.error as error:
            raise HHCLError(
                f"file-name pattern {shown_pattern(pattern)} is not a valid regular expression ({error}); "
                r"fix it, e.g. '^(?P<pid>-?\d+)_c(?P<cam>\d+)'"
            ) from None
    unknown = set(compiled.groupindex) - {"pid", "cam"}
    if unknown:
        raise HHCLError(
            f"file-name pattern {shown_pattern(compiled)} has groups {sorted(unknown)}; "
            "only the named groups 'pid' and 'cam' are read, rename or un-name the others"
        )
    return compiled


def list_image_files(
    folder: Path,
    *,
    check_images: bool = False,
    strict: bool = False,
    drop_empty: bool = True,
) -> list[str]:
    """Sorted image files directly inside ``folder`` (not recursive).

    Files that are not images (by extension) are skipped with one warning that counts them.
    Empty files are caught here (unless ``drop_empty`` is False: a caller that skips and counts
    broken images at decoding); with ``check_images`` every file is decoded. A broken file is
    skipped with a warning naming it, or raises :class:`HHCLError` when ``strict``.
    """
    images: list[str] = []
    skipped: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if _is_folder(entry):
                    continue
                if is_image_name(entry.name):
                    images.append(entry.path)
                else:
                    skipped.append(entry.name)
    except PermissionError as error:
        raise HHCLError(f"cannot list the folder {folder}: no read permission on it for this user "
                        f"({error.strerror}); change its permissions (chmod u+rx) or copy the images") from None
    images.sort()
    if skipped:
        skipped.sort()
        shown = ", ".join(skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        logger.warning(
            "skipped %d non-image file%s in %s (%s); images must end in .jpg, .jpeg, .png or .bmp",
            len(skipped),
            "" if len(skipped) == 1 else "s",
            folder,
            shown,
        )
    if not drop_empty and not check_images:
        return images
    return drop_broken_images(images, check_images=check_images, strict=strict)


def _is_folder(entry: os.DirEntry) -> bool:
    """``entry.is_dir()``, with a one-line error for a symbolic link that cannot be followed (a loop)."""
    try:
        return entry.is_dir()
    except OSError as error:
        raise HHCLError(f"{entry.path} is a symbolic link that cannot be followed ({error.strerror}): "
                        f"remove it or point it at an image") from None


def drop_broken_images(paths: Sequence[str], *, check_images: bool, strict: bool) -> list[str]:
    """Remove empty files (always) and undecodable ones (with ``check_images``) from ``paths``.

    Each one is named in a warning, or raises :class:`HHCLError` when ``strict``.
    """
    kept = []
    for path in paths:
        problem = _empty_file_problem(path)
        if problem is None and check_images:
            problem = image_problem(path)
        if problem is None:
            kept.append(path)
            continue
        if strict:
            raise HHCLError(f"{problem} (or drop --strict to skip broken images with a warning)")
        logger.warning("skipping broken image: %s", problem)
    return kept


def _empty_file_problem(path: str) -> str | None:
    try:
        size = os.path.getsize(path)
    except OSError as error:
        return f"image {path} cannot be read ({error.strerror}); check its permissions or restore it"
    if size == 0:
        return f"image {path} is empty (0 bytes); delete or replace it"
    return None


def parse_names(paths: Iterable[str], pattern: re.Pattern) -> list[ParsedName]:
    """Parse every file name with ``pattern`` (``re.search`` on the base name).

    A name that does not match raises :class:`HHCLError` naming the file and the pattern.
    """
    parsed = []
    has_pid = "pid" in pattern.groupindex
    has_cam = "cam" in pattern.groupindex
    for path in paths:
        name = os.path.basename(path)
        match = pattern.search(name)
        if match is None:
            raise HHCLError(
                f"file name {path} does not match the pattern {shown_pattern(pattern)}; "
                "rename the file, move it out of the folder, or pass a --pattern that matches it"
            )
        parsed.append(
            ParsedName(
                path=path,
                pid=match.group("pid") if has_pid else None,
                cam=match.group("cam") if has_cam else None,
            )
        )
    return parsed


def label_index(labels: Iterable[str]) -> dict[str, int]:
    """Map distinct label strings to 0-based ints: numeric order when all are integers
    (``c1, c2, c10`` become 0, 1, 2), text order otherwise (``a, b`` become 0, 1)."""
    distinct = set(labels)
    if all(_is_int(label) for label in distinct):
        # "01" and "1" are the same camera.
        rank = {value: index for index, value in enumerate(sorted({int(label) for label in distinct}))}
        return {label: rank[int(label)] for label in distinct}
    return {label: index for index, label in enumerate(sorted(distinct))}


def _is_int(text: str) -> bool:
    return re.fullmatch(r"[-+]?\d+", text) is not None
