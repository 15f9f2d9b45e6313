"""Image files: which names count as images, decoding to RGB, and spotting broken files.

Decoding happens per image with Pillow (in DataLoader workers); everything after the resize is
batched in :mod:`hhcl.data.transforms`.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from hhcl.errors import HHCLError

logger = logging.getLogger("hhcl.data")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")

# Pillow's own failure modes for bad image bytes: unknown format, truncated stream, bad header.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def is_image_name(name: str) -> bool:
    """Whether a file name has one of the accepted image extensions (case-insensitive)."""
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode an image file fully and return it in RGB mode.

    Grayscale (16-bit scaled by its bit depth), palette (with or without transparency), CMYK and
    RGBA files are converted to RGB; an alpha channel is dropped. An EXIF orientation is applied. A missing, empty, truncated or corrupt file raises
    :class:`HHCLError` naming it.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise HHCLError(f"image {path} is empty (0 bytes); delete or replace it")
        with Image.open(path) as image:
            # load() decodes every byte, so a truncated file fails here rather than later.
            image.load()
            # a phone stores a rotated photo unrotated, with an EXIF orientation: show it as taken
            ImageOps.exif_transpose(image, in_place=True)
            return _to_rgb(image)
    except FileNotFoundError:
        raise HHCLError(f"image {path} not found; rescan the dataset or restore the file") from None
    except PermissionError as error:  # an OSError too, but the file may be fine: say what is missing
        raise HHCLError(f"cannot read image {path}: no read permission on the file for this user "
                        f"({error.strerror}); change its permissions (chmod u+r)") from None
    except _DECODE_ERRORS as error:
        raise HHCLError(
            f"image {path} cannot be decoded ({_short(error)}); delete or replace it"
        ) from None


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode == "P" and "transparency" in image.info:
        # Pillow insists palette transparency goes through RGBA first.
        image = image.convert("RGBA")
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale by the bit depth (not the image's own maximum, which would
        # brighten a dark picture) instead of letting convert() clip at 255.
        array = np.asarray(image, dtype=np.float64)
        full_scale = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else 2.0**31 - 1
        image = Image.fromarray(np.clip(array * (255.0 / full_scale), 0, 255).round().astype(np.uint8), mode="L")
    return image.convert("RGB")


def _short(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def image_problem(path: str | os.PathLike) -> str | None:
    """Return why the file is not a readable image (one line), or None when it decodes fully."""
    try:
        read_image(path)
    except HHCLError as error:
        return str(error)
    return None


def load_resized(path: str | os.PathLike, height: int, width: int) -> torch.Tensor:
    """Decode ``path`` and resize it bicubically to ``(height, width)``.

    Returns a uint8 tensor of shape ``(3, height, width)`` (a channels-first view of an
    ``(H, W, 3)`` array). Raises :class:`HHCLError` for a broken file.
    """
    return resize_to_tensor(read_image(path), height, width)


def resize_to_tensor(image: Image.Image, height: int, width: int) -> torch.Tensor:
    """An image (any Pillow mode) as uint8 ``(3, height, width)``: RGB, then the bicubic test resize.

    The one resize of hhcl: files and in-memory images of the same pixels give the same tensor.
    """
    if image.mode != "RGB":
        image = _to_rgb(image)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.BICUBIC)
    # One copy into a writable array; the channels-first view is made contiguous by torch.stack.
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


class BrokenImageLog:
    """Warns once per broken file per process, so a bad image does not flood every epoch."""

    def __init__(self) -> None:
        self._seen: set[str] = set()

    def warn(self, message: str, path: str) -> None:
        if path in self._seen:
            return
        self._seen.add(path)
        logger.warning("%s", message)


broken_image_log = BrokenImageLog()

