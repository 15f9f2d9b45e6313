from pathlib import Path

import pytest
import torch

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
