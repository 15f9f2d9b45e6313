"""A model trained at 64x32 is fed 64x32 images by extract, search, evaluate, export and FeatureExtractor."""

import numpy as np
import pytest
import torch
from PIL import Image

from cli_helpers import one_line_error, run_cli
from hhcl.config import Config
from hhcl.errors import HHCLError
from hhcl.models import build_model
from hhcl.models.weights import saved_input_size
from hhcl.retrieval import FeatureExtractor
from hhcl.retrieval.extractor import resolve_input_size


@pytest.fixture(scope="module")
def model_at_64x32(tmp_path_factory):
    """An hhcl model.pth (as the trainer writes it: weights, build options, config) trained at 64x32."""
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", num_features=64)
    config = Config().to_dict()
    config["dataset"].update(height=64, width=32)
    path = tmp_path_factory.mktemp("run") / "model.pth"
    torch.save({"model": model.state_dict(), "build_options": dict(model.build_options), "epoch": 1,
                "metrics": None, "config": config}, path)
    return path


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """A query and a gallery folder of small images named ``PID_cCAM_N.png``."""
    root = tmp_path_factory.mktemp("people")
    rng = np.random.default_rng(0)
    for split, camera in (("query", 1), ("gallery", 2)):
        (root / split).mkdir()
        for pid in (1, 2, 3):
            for shot in range(2):
                pixels = rng.integers(0, 256, (40, 20, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"{pid:04d}_c{camera}_{shot:04d}.png")
    return root


def test_the_recorded_size_is_read_from_an_hhcl_model_file_only(model_at_64x32, osnet_weights):
    assert saved_input_size(model_at_64x32) == (64, 32)
    assert saved_input_size(osnet_weights) is None  # a bare state_dict records no size
    assert resolve_input_size(model_at_64x32) == (64, 32)
    assert resolve_input_size(osnet_weights) == (256, 128)
    assert resolve_input_size(model_at_64x32, 128, 64) == (128, 64)
    assert resolve_input_size(model_at_64x32, height=96) == (96, 32)
    with pytest.raises(HHCLError, match="--width 0 is not positive"):
        resolve_input_size(model_at_64x32, width=0)


def test_the_feature_extractor_uses_the_recorded_size_unless_given_another(model_at_64x32, people):
    paths = sorted(str(path) for path in (people / "query").iterdir())
    recorded = FeatureExtractor(None, model_at_64x32)
    assert (recorded.height, recorded.width) == (64, 32)
    explicit = FeatureExtractor(None, model_at_64x32, height=64, width=32)
    torch.testing.assert_close(recorded(paths), explicit(paths))
    other = FeatureExtractor(None, model_at_64x32, height=128, width=64)
    assert (other.height, other.width) == (128, 64)
    assert other.settings() != recorded.settings()  # a gallery cache of one is not reused by the other


def test_extract_uses_the_recorded_size(tmp_path, capsys, model_at_64x32, people):
    output = tmp_path / "features.npz"
    status, out, err = run_cli(capsys, "extract", "--weights", model_at_64x32, "--images", people / "query",
                               "--output", output)
    assert status == 0, err
    assert "(osnet_x0_25 at 64x32," in out
    with np.load(output) as stored:
        assert str(stored["input_size"]) == "64x32"
        features = stored["features"]
    paths = sorted(str(path) for path in (people / "query").iterdir())
    np.testing.assert_allclose(features, FeatureExtractor(None, model_at_64x32, height=64, width=32)(paths).numpy(),
                               atol=1e-5)
    status, out, err = run_cli(capsys, "extract", "--weights", model_at_64x32, "--images", people / "query",
                               "--output", output, "--height", 128, "--width", 64)
    assert status == 0, err
    assert "(osnet_x0_25 at 128x64," in out


def test_search_uses_the_recorded_size(tmp_path, capsys, model_at_64x32, people):
    status, out, err = run_cli(capsys, "search", "--weights", model_at_64x32, "--gallery", people / "gallery",
                               "--query", people / "query" / "0001_c1_0000.png", "--topk", 3, "--output",
                               tmp_path / "search")
    assert status == 0, err
    assert out.strip().splitlines()[-1].endswith("(osnet_x0_25 at 64x32)")
    status, out, err = run_cli(capsys, "search", "--weights", model_at_64x32, "--gallery", people / "gallery",
                               "--query", people / "query" / "0001_c1_0000.png", "--output", tmp_path / "search",
                               "--height", 0)
    one_line_error(status, err, "--height 0")


def test_evaluate_uses_the_recorded_size(capsys, monkeypatch, model_at_64x32, people):
    import hhcl.models

    sizes = []
    extract_features = hhcl.models.extract_features

    def recording(*args, **kwargs):
        sizes.append((kwargs["height"], kwargs["width"]))
        return extract_features(*args, **kwargs)

    monkeypatch.setattr(hhcl.models, "extract_features", recording)
    status, out, err = run_cli(capsys, "evaluate", "--dataset", "folder", "--root", people, "--weights",
                               model_at_64x32, "--no-progress", "--json")
    assert status == 0, err
    assert sizes == [(64, 32), (64, 32)]


def test_export_uses_the_recorded_size(tmp_path, capsys, model_at_64x32, people):
    pytest.importorskip("onnxruntime")
    output = tmp_path / "model.onnx"
    status, out, err = run_cli(capsys, "export", "--weights", model_at_64x32, "--output", output)
    assert status == 0, err
    assert "(B, 3, 64, 32)" in out
    onnx_extractor = FeatureExtractor(None, output, backend="onnx")
    assert (onnx_extractor.height, onnx_extractor.width) == (64, 32)
    paths = sorted(str(path) for path in (people / "query").iterdir())
    torch.testing.assert_close(onnx_extractor(paths), FeatureExtractor(None, model_at_64x32)(paths),
                               atol=1e-4, rtol=1e-4)
    with pytest.raises(HHCLError, match="exported for 64x32 images, not 256x128"):
        FeatureExtractor(None, output, backend="onnx", height=256, width=128)
