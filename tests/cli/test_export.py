import re

import pytest

pytest.importorskip("onnxruntime")

from cli_helpers import run_cli  # noqa: E402
from hhcl.retrieval.onnx_backend import onnx_session, read_onnx_metadata  # noqa: E402



def test_export_writes_a_checked_onnx_file(tmp_path, capsys, osnet_weights):
    output = tmp_path / "out" / "model.onnx"
    # a small input keeps the test quick; tests/test_export.py checks parity at 256x128
    status, out, err = run_cli(
        capsys, "export", "--weights", osnet_weights, "--arch", "osnet_x0_25", "--output", output, "--height", 64, "--width", 32
    )
    assert status == 0, err
    assert re.search(r"max abs diff (\S+) \(tolerance 1e-04\)", out)
    assert float(re.search(r"max abs diff (\S+)", out).group(1)) <= 1e-4
    assert f"wrote {output}" in out and "images (B, 3, 64, 32) -> features (B, 512)" in out
    metadata = read_onnx_metadata(onnx_session(output))
    assert metadata == {
        "arch": "osnet_x0_25", "weights": "osnet_x0_25.pth", "height": 64, "width": 32, "feature_dim": 512
    }


def test_missing_weights_file(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    status, _, err = run_cli(capsys, "export", "--weights", missing, "--arch", "osnet_x0_25", "--output", tmp_path / "m.onnx")
    assert status == 2 and str(missing) in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "content",
    [
        b"",
        bytes(range(256)) * 4,
        b"these are not weights",
    ],
)
def test_file_that_is_not_weights(tmp_path, capsys, content):
    wrong = tmp_path / "notes.pth"
    wrong.write_bytes(content)
    status, _, err = run_cli(capsys, "export", "--weights", wrong, "--arch", "osnet_x0_25", "--output", tmp_path / "m.onnx")
    assert status == 2 and str(wrong) in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.onnx").exists()


def test_weights_of_another_arch(tmp_path, capsys, osnet_weights):
    status, _, err = run_cli(capsys, "export", "--weights", osnet_weights, "--arch", "resnet18", "--output", tmp_path / "m.onnx")
    assert status == 2 and str(osnet_weights) in err and "resnet18" in err
    assert len(err.strip().splitlines()) == 1


def test_unwritable_output_folder(tmp_path, capsys, osnet_weights):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status, _, err = run_cli(
        capsys, "export", "--weights", osnet_weights, "--arch", "osnet_x0_25", "--output", blocker / "sub" / "m.onnx"
    )
    assert status == 2 and str(blocker / "sub") in err and len(err.strip().splitlines()) == 1
