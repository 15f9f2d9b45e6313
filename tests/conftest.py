import io
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SHARED_DATA = SHARED / "data"
SHARED_MODELS = SHARED / "models"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real re-ID images not found at {SHARED_DATA} (../shared is absent)")
    return SHARED_DATA


@pytest.fixture
def shared_models() -> Path:
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"pretrained weights not found at {SHARED_MODELS} (../shared is absent)")
    return SHARED_MODELS


@pytest.fixture(scope="session")
def osnet_weights(tmp_path_factory) -> Path:
    """A state_dict file (osnet_x0_25.pth) of an osnet_x0_25 initialised with torch seed 0."""
    from hhcl.models import build_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "osnet_x0_25.pth"
    torch.save(build_model("osnet_x0_25").state_dict(), path)
    return path


@pytest.fixture(scope="session")
def pretrained_osnet_weights(osnet_weights) -> Path:
    """The real MSMT17 OSNet when ../shared has it, else the seed-0 one of the same architecture."""
    real = SHARED_MODELS / "osnet_x0_25_msmt17.pth"
    return real if real.is_file() else osnet_weights


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
