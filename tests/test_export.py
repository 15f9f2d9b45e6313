import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hhcl.errors import HHCLError  # noqa: E402
from hhcl.export import export_onnx, max_abs_difference  # noqa: E402
from hhcl.retrieval.onnx_backend import onnx_session, read_onnx_metadata  # noqa: E402

HEIGHT, WIDTH = 32, 16


class TinyReIDNet(nn.Module):
    """conv-BN-ReLU, pooled, then an embedding and L2 normalisation: the shape of a re-ID model."""

    def __init__(self, feature_dim: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.embedding = nn.Linear(6, feature_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = F.adaptive_avg_pool2d(F.relu(self.bn(self.conv(images))), 1).flatten(1)
        features = self.embedding(features)
        return features if self.training else F.normalize(features, dim=1)


class BatchSizeBranch(TinyReIDNet):
    """Python control flow on the batch size: tracing freezes the branch taken at export."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        features = super().forward(images)
        return features * 2 if images.shape[0] == 2 else features


def trained_like(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):  # non-trivial BatchNorm running statistics
            model(torch.randn(4, 3, HEIGHT, WIDTH) * 2 + 0.5)
    return model


def test_export_has_a_dynamic_batch_and_matches_pytorch(tmp_path):
    model = trained_like(TinyReIDNet())
    report = export_onnx(model, tmp_path / "sub" / "tiny.onnx", height=HEIGHT, width=WIDTH, metadata={"arch": "tiny"})

    assert report.path.is_file() and report.size_bytes == report.path.stat().st_size
    assert report.feature_dim == 8
    assert report.max_abs_diff <= 1e-4
    assert report.parity_batch_sizes == (1, 3)
    assert "max abs diff" in report.summary()
    assert model.training, "export must leave the caller's model in its mode"

    session = onnx_session(report.path)
    assert read_onnx_metadata(session) == {"arch": "tiny", "feature_dim": 8, "height": HEIGHT, "width": WIDTH}
    images = torch.randn(5, 3, HEIGHT, WIDTH)
    (features,) = session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        expected = model.eval()(images).numpy()
    assert features.shape == (5, 8)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)


def test_parity_failure_is_loud_and_writes_nothing(tmp_path):
    output = tmp_path / "branchy.onnx"
    with pytest.raises(HHCLError, match=r"ONNX parity failed for .*branchy\.onnx: max abs diff \d"):
        export_onnx(trained_like(BatchSizeBranch()), output, height=HEIGHT, width=WIDTH)
    assert not output.exists()
    previous = export_onnx(trained_like(TinyReIDNet()), output, height=HEIGHT, width=WIDTH).path.read_bytes()
    with pytest.raises(HHCLError, match="ONNX parity failed"):
        export_onnx(trained_like(BatchSizeBranch()), output, height=HEIGHT, width=WIDTH)
    assert output.read_bytes() == previous  # the earlier export is kept
    assert [path.name for path in tmp_path.iterdir()] == ["branchy.onnx"]


def test_a_changed_byte_in_the_weights_of_an_exported_file_is_refused(tmp_path):
    import onnx

    path = export_onnx(trained_like(TinyReIDNet()), tmp_path / "tiny.onnx", height=HEIGHT, width=WIDTH).path
    weights = max((initializer.raw_data for initializer in onnx.load(str(path)).graph.initializer), key=len)
    content = bytearray(path.read_bytes())
    content[content.index(weights) + len(weights) // 2] ^= 0x01
    path.write_bytes(bytes(content))
    with pytest.raises(HHCLError, match="tiny.onnx is corrupt") as error:
        onnx_session(path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("height", [0, -5])
def test_a_size_that_is_not_positive_is_refused(tmp_path, height):
    with pytest.raises(HHCLError, match=f"input size {height}x{WIDTH} is not positive"):
        export_onnx(TinyReIDNet(), tmp_path / "tiny.onnx", height=height, width=WIDTH)


def test_max_abs_difference_sees_a_different_model(tmp_path):
    report = export_onnx(trained_like(TinyReIDNet()), tmp_path / "tiny.onnx", height=HEIGHT, width=WIDTH)
    other = trained_like(TinyReIDNet())
    with torch.no_grad():
        other.embedding.weight.add_(0.5)
    assert max_abs_difference(other, report.path, HEIGHT, WIDTH) > 1e-2


def test_output_in_an_unwritable_place_names_the_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(HHCLError, match=re.escape(str(blocker / "models"))):
        export_onnx(TinyReIDNet(), blocker / "models" / "tiny.onnx", height=HEIGHT, width=WIDTH)


def test_output_that_is_a_folder_is_refused(tmp_path):
    with pytest.raises(HHCLError, match="is a folder"):
        export_onnx(TinyReIDNet(), tmp_path, height=HEIGHT, width=WIDTH)


@pytest.mark.parametrize("content", [None, b"not an onnx model"])
def test_missing_or_corrupt_onnx_file_names_it(tmp_path, content):
    path = tmp_path / "model.onnx"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(HHCLError, match=re.escape(str(path))):
        onnx_session(path)


def test_a_model_with_parts_exports_its_concatenated_features(tmp_path):
    from hhcl.models import build_model

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a real backbone on tiny batches: syncing threads costs more than the work
    try:
        model = trained_like(build_model("osnet_x0_25", parts=2))
        report = export_onnx(model, tmp_path / "parts.onnx", height=HEIGHT, width=WIDTH)
        (features,) = onnx_session(report.path).run(None, {"images": torch.randn(2, 3, HEIGHT, WIDTH).numpy()})
    finally:
        torch.set_num_threads(previous)
    assert report.feature_dim == model.feature_dim == 3 * 512
    assert report.max_abs_diff <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(features.reshape(2, 3, 512), axis=2), 1 / np.sqrt(3), atol=1e-5)


OSNET_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "osnet_x0_25_msmt17.pth"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["osnet_x0_25", "resnet50"])
def test_parity_of_the_real_architectures(tmp_path, arch):
    from hhcl.models import build_model, load_weights

    model = build_model(arch)
    if arch == "osnet_x0_25" and OSNET_WEIGHTS.is_file():
        load_weights(model, OSNET_WEIGHTS, verbose=False)  # real activations, not a random net's
    report = export_onnx(model, tmp_path / f"{arch}.onnx", metadata={"arch": arch})
    assert report.max_abs_diff <= 1e-4
    assert report.feature_dim == model.feature_dim
    assert read_onnx_metadata(onnx_session(report.path))["arch"] == arch
