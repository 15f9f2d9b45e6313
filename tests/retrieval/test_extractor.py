import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hhcl.data.images import load_resized, read_image
from hhcl.data.transforms import normalize_batch
from hhcl.errors import HHCLError
from hhcl.models import build_model
from hhcl.retrieval import FeatureExtractor

# Most tests run at half the default input size and embed five images in one batch: CPU time on a
# shared machine, and every new batch shape costs oneDNN a new set of kernels.
SMALL = dict(height=128, width=64, batch_size=8)


@pytest.fixture(scope="module")
def weights(pretrained_osnet_weights) -> Path:
    return pretrained_osnet_weights


@pytest.fixture(scope="module")
def extractor(weights) -> FeatureExtractor:
    return FeatureExtractor("osnet_x0_25", weights, **SMALL)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> list[Path]:
    """Five small person-like crops of different sizes, in lossless and lossy formats."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index, (height, width, suffix) in enumerate([(128, 64, ".png"), (90, 40, ".bmp"), (150, 70, ".jpg"),
                                                     (60, 30, ".png"), (256, 128, ".jpeg")]):
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[: height // 2] = rng.integers(0, 256, size=3)  # shirt
        pixels[height // 2 :] = rng.integers(0, 256, size=3)  # trousers
        pixels = np.clip(pixels + rng.integers(-30, 30, size=pixels.shape), 0, 255).astype(np.uint8)
        path = folder / f"{index:04d}_c1{suffix}"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


def test_features_have_the_documented_shape_and_norm(extractor, image_files):
    features = extractor(image_files)
    assert features.shape == (5, 512) and features.dtype == torch.float32
    torch.testing.assert_close(features.norm(dim=1), torch.ones(5))
    assert extractor.feature_dim == 512


def test_same_features_from_paths_pil_images_and_arrays(extractor, image_files):
    from_paths = extractor([str(path) for path in image_files])
    pil_images = [read_image(path) for path in image_files]  # decoded pixels: the JPEGs are lossy
    arrays = [np.asarray(image) for image in pil_images]

    torch.testing.assert_close(extractor(pil_images), from_paths, rtol=0, atol=1e-6)
    torch.testing.assert_close(extractor(arrays), from_paths, rtol=0, atol=1e-6)
    mixed = [image_files[0], pil_images[1], arrays[2], str(image_files[3]), pil_images[4]]
    torch.testing.assert_close(extractor(mixed), from_paths, rtol=0, atol=1e-6)
    torch.testing.assert_close(extractor(pil_images[2]), from_paths[2:3], rtol=0, atol=1e-6)
    torch.testing.assert_close(extractor(image_files[2]), from_paths[2:3], rtol=0, atol=1e-6)
    # same-sized arrays as one (N, H, W, 3) array, and as a uint8 (N, 3, H, W) tensor
    resized = np.stack([np.asarray(image.resize((40, 90))) for image in pil_images])
    from_stack = extractor(resized)
    torch.testing.assert_close(extractor(list(resized)), from_stack, rtol=0, atol=1e-6)
    torch.testing.assert_close(extractor(torch.from_numpy(resized).permute(0, 3, 1, 2)), from_stack, rtol=0, atol=1e-6)


def test_features_are_the_models_on_the_data_layers_test_transform(weights, image_files):
    from hhcl.models import load_weights

    model = build_model("osnet_x0_25")
    load_weights(model, weights, verbose=False)
    batch = normalize_batch(torch.stack([load_resized(path, 256, 128) for path in image_files[:3]]))
    with torch.no_grad():
        expected = model.eval()(batch)
    at_default_size = FeatureExtractor("osnet_x0_25", weights)
    torch.testing.assert_close(at_default_size(image_files[:3]), expected, rtol=0, atol=1e-5)
    # a float batch is taken as already normalised
    torch.testing.assert_close(at_default_size(batch), expected, rtol=0, atol=1e-5)


def test_batching_does_not_change_features(weights, extractor, image_files):
    in_pairs = FeatureExtractor("osnet_x0_25", weights, **{**SMALL, "batch_size": 2})(image_files)
    torch.testing.assert_close(in_pairs, extractor(image_files), rtol=0, atol=1e-5)


def test_decoding_workers_give_the_same_features(weights, extractor, image_files):
    with_workers = FeatureExtractor("osnet_x0_25", weights, **SMALL, num_workers=2)
    torch.testing.assert_close(with_workers(image_files), extractor(image_files), rtol=0, atol=1e-6)


def test_progress_bar_only_when_asked_or_long(weights, extractor, image_files, capsys):
    extractor(image_files)
    assert "extracting features" not in capsys.readouterr().err
    FeatureExtractor("osnet_x0_25", weights, **SMALL, progress=True)(image_files)
    assert "extracting features" in capsys.readouterr().err


def test_empty_input_gives_no_rows(extractor):
    assert extractor([]).shape == (0, 512)


def test_unreadable_file_names_it(extractor, image_files, tmp_path):
    broken = tmp_path / "0009_c1.jpg"
    broken.write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(HHCLError, match=re.escape(str(broken))):
        extractor([image_files[0], broken])
    with pytest.raises(HHCLError, match=re.escape(str(tmp_path / "absent.png"))):
        extractor(tmp_path / "absent.png")


def test_extract_files_skips_broken_files_with_a_warning(extractor, image_files, tmp_path, caplog):
    broken = tmp_path / "0010_c1.png"
    broken.write_bytes(b"not a png")
    with caplog.at_level(logging.WARNING):
        kept, features = extractor.extract_files([image_files[0], broken, image_files[1]])
    assert kept == [str(image_files[0]), str(image_files[1])]
    torch.testing.assert_close(features, extractor(image_files[:2]), rtol=0, atol=1e-6)
    assert str(broken) in caplog.text


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((10, 10), dtype=np.uint8), r"\(H, W, 3\) uint8"),
        (np.zeros((10, 10, 3), dtype=np.float32), r"\(H, W, 3\) uint8"),
        (torch.zeros(2, 3, 32, 16), r"normalised \(N, 3, 128, 64\)"),
        (torch.zeros(2, 4, 32, 16, dtype=torch.uint8), "uint8 \\(N, 3, H, W\\)"),
        ([1, 2], "cannot embed a int"),
        (3.5, "cannot embed a float"),
    ],
)
def test_bad_inputs_are_explained(extractor, images, message):
    with pytest.raises(HHCLError, match=message):
        extractor(images)


def test_missing_weights_file(tmp_path):
    with pytest.raises(HHCLError, match=re.escape(str(tmp_path / "nope.pth"))):
        FeatureExtractor("osnet_x0_25", tmp_path / "nope.pth")


def test_weights_of_another_arch(weights):
    with pytest.raises(HHCLError, match=re.escape(str(weights))):
        FeatureExtractor("osnet_x1_0", weights)


def test_weights_missing_part_of_the_model_are_refused(weights, tmp_path):
    state = build_model("osnet_x0_25").state_dict()
    partial = {key: value for key, value in state.items() if not key.startswith("backbone.conv5")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(HHCLError, match=r"partial\.pth do not match osnet_x0_25: \d+ of its tensors are missing"):
        FeatureExtractor("osnet_x0_25", path)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(backend="tensorrt"), "unknown backend 'tensorrt'"),
        (dict(precision="fp8"), "unknown precision 'fp8'"),
        (dict(precision="fp16"), "fp16 needs a CUDA device"),
        (dict(batch_size=0), "batch_size must be at least 1"),
    ],
)
def test_bad_settings(weights, options, message):
    with pytest.raises(HHCLError, match=message):
        FeatureExtractor("osnet_x0_25", weights, **options)


def test_an_onnx_file_needs_the_onnx_backend(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"")
    with pytest.raises(HHCLError, match="backend 'onnx'"):
        FeatureExtractor("osnet_x0_25", path)


@pytest.fixture(scope="module")
def small_onnx(weights, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime")
    from hhcl.export import export_onnx
    from hhcl.retrieval.extractor import load_trained_model

    model = load_trained_model("osnet_x0_25", weights)
    path = tmp_path_factory.mktemp("onnx") / "osnet.onnx"
    # a small input keeps the export quick; the extractor reads the size from the file
    return export_onnx(model, path, height=64, width=32, metadata={"arch": "osnet_x0_25"}).path


def test_onnx_backend_matches_torch(weights, small_onnx, image_files):
    onnx_extractor = FeatureExtractor("osnet_x0_25", small_onnx, backend="onnx", batch_size=8)
    torch_extractor = FeatureExtractor("osnet_x0_25", weights, height=64, width=32, batch_size=8)
    assert (onnx_extractor.height, onnx_extractor.width, onnx_extractor.feature_dim) == (64, 32, 512)
    from_onnx = onnx_extractor(image_files)
    assert from_onnx.shape == (5, 512)
    torch.testing.assert_close(from_onnx, torch_extractor(image_files), rtol=0, atol=1e-4)
    assert FeatureExtractor(None, small_onnx, backend="onnx").arch == "osnet_x0_25"


def test_onnx_backend_checks_the_arch_and_precision(small_onnx):
    with pytest.raises(HHCLError, match="exported from osnet_x0_25, not resnet50"):
        FeatureExtractor("resnet50", small_onnx, backend="onnx")
    with pytest.raises(HHCLError, match="fp32"):
        FeatureExtractor("osnet_x0_25", small_onnx, backend="onnx", precision="bf16")


def test_an_hhcl_model_file_is_rebuilt_with_its_options(tmp_path, image_files):
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", pooling="gem", num_features=64)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "build_options": model.build_options, "epoch": 3}, path)

    extractor = FeatureExtractor("osnet_x0_25", path, **SMALL)
    assert extractor.feature_dim == 64
    batch = normalize_batch(torch.stack([load_resized(image, 128, 64) for image in image_files]))
    with torch.no_grad():
        expected = model.eval()(batch)
    torch.testing.assert_close(extractor(image_files), expected, rtol=0, atol=1e-5)
    with pytest.raises(HHCLError, match=r"trained as osnet_x0_25, not osnet_x0_5: pass --arch osnet_x0_25"):
        FeatureExtractor("osnet_x0_5", path)
    assert FeatureExtractor(None, path, **SMALL).arch == "osnet_x0_25"


def test_a_model_file_with_parts_gives_the_concatenated_features(tmp_path, image_files):
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", parts=2)
    path = tmp_path / "model.pth"
    torch.save({"model": model.state_dict(), "build_options": model.build_options, "epoch": 1}, path)

    extractor = FeatureExtractor(None, path, **SMALL)
    assert extractor.feature_dim == 3 * 512
    batch = normalize_batch(torch.stack([load_resized(image, 128, 64) for image in image_files]))
    with torch.no_grad():
        expected = model.eval()(batch)
    features = extractor(image_files)
    assert features.shape == (5, 3 * 512)
    torch.testing.assert_close(features, expected, rtol=0, atol=1e-5)


def test_a_plain_state_dict_needs_the_arch(weights):
    with pytest.raises(HHCLError, match="does not record its architecture: pass --arch"):
        FeatureExtractor(None, weights)


@pytest.mark.parametrize(
    "device, message", [("gpu", "unknown device 'gpu'"), ("cuda:0", "CUDA is not available")]
)
def test_bad_device(weights, device, message):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(HHCLError, match=message):
        FeatureExtractor("osnet_x0_25", weights, device=device)
