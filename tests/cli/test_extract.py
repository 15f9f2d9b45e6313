import re

import numpy as np
import pytest
from PIL import Image

from cli_helpers import one_line_error, run_cli
from hhcl.retrieval import FeatureExtractor


@pytest.fixture(scope="module")
def weights(osnet_weights):
    return osnet_weights


@pytest.fixture
def images(tmp_path):
    """One image in each format the data layer reads, all the same small size."""
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index, suffix in enumerate([".jpg", ".jpeg", ".png", ".bmp"]):
        Image.fromarray(rng.integers(0, 256, (64, 32, 3), dtype=np.uint8)).save(folder / f"{index:04d}_c1{suffix}")
    return folder



def test_extract_writes_paths_and_features_of_every_format(tmp_path, capsys, weights, images):
    output = tmp_path / "out" / "feats.npz"
    status, out, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "osnet_x0_25", "--images", images,
                               "--output", output, "--batch-size", 4)
    assert status == 0, err
    assert f"wrote {output}: 4 images x 512 features (osnet_x0_25" in out
    with np.load(output) as stored:
        paths = stored["paths"].tolist()
        features = stored["features"]
        assert str(stored["arch"]) == "osnet_x0_25" and str(stored["weights"]) == "osnet_x0_25.pth"
    assert [path.rsplit(".", 1)[1] for path in paths] == ["jpg", "jpeg", "png", "bmp"]
    assert features.shape == (4, 512) and features.dtype == np.float32
    expected = FeatureExtractor("osnet_x0_25", weights)(paths).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)


def test_extract_from_a_list_file_skipping_a_broken_image(tmp_path, capsys, caplog, weights, images):
    (images / "0009_c1.jpg").write_bytes(b"\xff\xd8 cut short")
    listing = tmp_path / "list.txt"
    listing.write_text("images/0002_c1.png\nimages/0009_c1.jpg\nimages/0000_c1.jpg\n")
    output = tmp_path / "feats.npz"
    status, out, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "osnet_x0_25", "--images", listing,
                               "--output", output)
    assert status == 0, err
    assert "2 images x 512 features" in out and "1 broken image skipped" in out
    assert "0009_c1.jpg" in caplog.text
    with np.load(output) as stored:
        assert [path.rsplit("/", 1)[1] for path in stored["paths"].tolist()] == ["0002_c1.png", "0000_c1.jpg"]


def test_extract_with_the_onnx_backend(tmp_path, capsys, weights, images):
    pytest.importorskip("onnxruntime")
    from hhcl.export import export_onnx
    from hhcl.retrieval.extractor import load_trained_model

    model_file = export_onnx(load_trained_model("osnet_x0_25", weights), tmp_path / "m.onnx", height=64, width=32,
                             metadata={"arch": "osnet_x0_25"}).path
    output = tmp_path / "feats.npz"
    status, _, err = run_cli(capsys, "extract", "--weights", model_file, "--arch", "osnet_x0_25", "--backend", "onnx",
                             "--images", images, "--output", output)
    assert status == 0, err
    with np.load(output) as stored:
        from_onnx = stored["features"]
    expected = FeatureExtractor("osnet_x0_25", weights, height=64, width=32)(sorted(images.iterdir())).numpy()
    np.testing.assert_allclose(from_onnx, expected, atol=1e-4)



def test_missing_images(tmp_path, capsys, weights):
    status, _, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "osnet_x0_25", "--images", tmp_path / "nope",
                             "--output", tmp_path / "f.npz")
    one_line_error(status, err, tmp_path / "nope")


def test_empty_folder(tmp_path, capsys, weights):
    (tmp_path / "empty").mkdir()
    status, _, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "osnet_x0_25", "--images", tmp_path / "empty",
                             "--output", tmp_path / "f.npz")
    one_line_error(status, err, tmp_path / "empty", "no images")


def test_missing_weights(tmp_path, capsys, images):
    status, _, err = run_cli(capsys, "extract", "--weights", tmp_path / "nope.pth", "--arch", "osnet_x0_25", "--images", images,
                             "--output", tmp_path / "f.npz")
    one_line_error(status, err, tmp_path / "nope.pth")


def test_weights_of_another_arch(tmp_path, capsys, weights, images):
    status, _, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "resnet18", "--images", images,
                             "--output", tmp_path / "f.npz")
    one_line_error(status, err, weights, "resnet18")


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_unwritable_output(tmp_path, capsys, weights, images, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    output = blocker / "f.npz" if where == "under_a_file" else images
    status, _, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "osnet_x0_25", "--images", images,
                             "--output", output)
    one_line_error(status, err, blocker if where == "under_a_file" else images)
    assert re.search("folder|Not a directory", err)


def test_the_skipped_count_agrees_with_the_warnings(tmp_path, capsys, caplog, weights, images):
    """An empty file, caught while listing the folder, is one more broken image: one warning, one count."""
    (images / "0007_c1.jpg").write_bytes(b"")
    (images / "0008_c1.jpg").write_bytes(b"\xff\xd8 cut short")
    (images / "0009_c1.png").write_bytes(b"\x89PNG cut short")
    output = tmp_path / "feats.npz"
    with caplog.at_level("WARNING"):
        status, out, err = run_cli(capsys, "extract", "--weights", weights, "--arch", "osnet_x0_25", "--images",
                                   images, "--output", output, "--no-progress")
    assert status == 0, err
    warnings = [record for record in caplog.records if record.levelname == "WARNING"]
    assert len(warnings) == 3 and all("broken image" in record.getMessage() for record in warnings)
    assert "4 images x 512 features" in out and "3 broken images skipped" in out
