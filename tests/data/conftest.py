"""Fixtures for the data tests: tiny image trees written into temporary folders."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run the data tests on one thread: on a shared, loaded machine OpenMP's spin-waiting
    threads make small tensor work many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def encoded_image(extension: str, size: tuple[int, int] = (8, 16), seed: int = 0) -> bytes:
    """A small valid image file's bytes (width x height ``size``) in the format of ``extension``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}
    Image.fromarray(pixels).save(buffer, format=formats[extension.lower()])
    return buffer.getvalue()


@pytest.fixture
def make_files() -> Callable[[Path, Iterable[str]], list[Path]]:
    """``make_files(folder, names)`` writes a valid tiny image (or, for other extensions, a few
    bytes of text) for every name and returns the paths."""
    cache: dict[str, bytes] = {}

    def make(folder: Path, names: Iterable[str]) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in names:
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            extension = path.suffix.lower()
            if extension in (".jpg", ".jpeg", ".png", ".bmp"):
                if extension not in cache:
                    cache[extension] = encoded_image(extension)
                path.write_bytes(cache[extension])
            else:
                path.write_text("not an image\n")
            paths.append(path)
        return paths

    return make


@pytest.fixture
def data_warnings(caplog) -> Callable[[], list[str]]:
    """The warning lines logged by ``hhcl.data`` so far."""
    caplog.set_level(logging.WARNING, logger="hhcl.data")

    def messages() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "hhcl.data"]

    return messages
