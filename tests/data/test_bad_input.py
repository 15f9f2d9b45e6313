"""Bad input: a one-line HHCLError naming the file and the fix, or a warning, never a traceback."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
from PIL import Image

from hhcl.cli import main
from hhcl.data import load_dataset
from hhcl.data.loaders import build_test_loader, build_train_loader
from hhcl.errors import HHCLError


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture
def folder_root(tmp_path, make_files):
    make_files(tmp_path / "train", ["0001_c1_0001.jpg", "0001_c2_0002.jpg", "0002_c1_0001.jpg"])
    make_files(tmp_path / "query", ["0100_c1_0001.jpg"])
    make_files(tmp_path / "gallery", ["0100_c2_0001.jpg", "0101_c1_0001.jpg"])
    return tmp_path


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((64, 32, 3), 100, dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()[:300]


def test_missing_root_shows_expected_layout(tmp_path):
    with pytest.raises(HHCLError) as error:
        load_dataset("market1501", tmp_path / "nowhere")
    message = one_line(error)
    assert f"dataset root {tmp_path / 'nowhere'} not found" in message
    assert "bounding_box_train/, bounding_box_test/, query/" in message and "Market-1501-v15.09.15/" in message
    with pytest.raises(HHCLError, match=r"not found; expected a folder of images .* train/, query/ and gallery/"):
        load_dataset("folder", tmp_path / "nowhere")


def test_root_without_any_split_folder(tmp_path):
    with pytest.raises(HHCLError, match=r"no dukemtmcreid split folders found in .*expected bounding_box_train/"):
        load_dataset("dukemtmcreid", tmp_path)


def test_missing_split_folder(tmp_path, make_files):
    make_files(tmp_path / "bounding_box_train", ["0002_c1s1_000451_03.jpg"])
    make_files(tmp_path / "bounding_box_test", ["0002_c2s1_000451_03.jpg"])
    with pytest.raises(HHCLError) as error:
        load_dataset("market1501", tmp_path)
    assert f"split folder {tmp_path / 'query'}/ is missing; expected" in one_line(error)


def test_empty_split(folder_root):
    for path in (folder_root / "gallery").iterdir():
        path.unlink()
    with pytest.raises(HHCLError) as error:
        load_dataset("folder", folder_root)
    assert f"no images in {folder_root / 'gallery'}/" in one_line(error)


def test_images_only_in_sub_folders(tmp_path, make_files):
    make_files(tmp_path / "0001", ["0001_c1_1.jpg"])
    with pytest.raises(HHCLError) as error:
        load_dataset("folder", tmp_path)
    assert f"no images in {tmp_path}/" in one_line(error) and "sub-folders are not searched" in one_line(error)


def test_name_not_matching_pattern_names_file_and_pattern(folder_root, make_files):
    make_files(folder_root / "train", ["IMG_2031.jpg"])
    with pytest.raises(HHCLError) as error:
        load_dataset("folder", folder_root)
    message = one_line(error)
    assert str(folder_root / "train" / "IMG_2031.jpg") in message
    # raw, as the user types it back: not repr's doubled backslashes
    assert r"'^(?P<pid>-?\d+)_c(?P<cam>\d+)'" in message and "--pattern" in message
    assert "\\\\" not in message


def test_non_image_files_skipped_with_one_counting_warning(folder_root, make_files, data_warnings):
    make_files(folder_root / "train", ["notes.txt", "labels.csv", "Thumbs.db", "model.pth"])
    dataset = load_dataset("folder", folder_root)
    assert len(dataset.train) == 3
    warnings = data_warnings()
    assert len(warnings) == 1
    assert warnings[0].startswith(f"skipped 4 non-image files in {folder_root / 'train'} (Thumbs.db, labels.csv, model.pth, ...)")


@pytest.mark.parametrize("content", [b"", b"this is not a jpeg", "truncated"], ids=["zero-byte", "corrupt", "truncated"])
def test_broken_image_found_at_scan(folder_root, data_warnings, content):
    broken = folder_root / "train" / "0003_c1_0001.jpg"
    broken.write_bytes(truncated_jpeg() if content == "truncated" else content)
    if content:
        # Only an empty file is caught without decoding.
        assert len(load_dataset("folder", folder_root).train) == 4
    dataset = load_dataset("folder", folder_root, check_images=True)
    assert str(broken) not in [path for path, _, _ in dataset.train] and len(dataset.train) == 3
    assert any(str(broken) in message for message in data_warnings())
    with pytest.raises(HHCLError) as error:
        load_dataset("folder", folder_root, check_images=True, strict=True)
    assert str(broken) in one_line(error) and "--strict" in one_line(error)


def test_broken_image_at_load_time_is_skipped_or_strict(folder_root, data_warnings):
    dataset = load_dataset("folder", folder_root)
    broken_path = dataset.gallery[1][0]
    with open(broken_path, "wb") as handle:
        handle.write(truncated_jpeg())
    items = dataset.query + dataset.gallery
    batches = list(build_test_loader(items, batch_size=2, height=32, width=16))
    indices = np.concatenate([index.numpy() for _, index in batches]).tolist()
    assert indices == [0, 1]  # item 2 (the broken gallery image) is missing
    assert sum(broken_path in message for message in data_warnings()) == 1
    with pytest.raises(HHCLError, match=os.path.basename(broken_path)):
        list(build_test_loader(items, batch_size=2, height=32, width=16, strict=True))

    train_items = dataset.train
    vanished = train_items[2][0]
    os.remove(vanished)  # gone after the scan
    loader = build_train_loader(train_items, [0, 0, 0], batch_size=8, num_instances=4, height=32, width=16, iters=4)
    rows = 0
    for images, batch_labels, batch_indices in loader:
        assert 2 not in batch_indices.tolist() and len(images) == len(batch_labels) == len(batch_indices)
        rows += len(batch_indices)
    assert rows < 4 * 8  # the vanished image was drawn and dropped
    assert sum(f"image {vanished} not found" in message for message in data_warnings()) == 1


def test_cli_prints_one_line_and_exits_2(tmp_path, capsys):
    assert main(["datasets", "info", "market1501", "--root", str(tmp_path / "nowhere")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hhcl datasets: error: dataset root")
    assert "Traceback" not in captured.err


def test_cli_strict_and_check_images_flags(folder_root, capsys):
    (folder_root / "query" / "0100_c1_0002.jpg").write_bytes(b"garbage")
    assert main(["datasets", "info", "folder", "--root", str(folder_root)]) == 0
    assert main(["datasets", "info", "folder", "--root", str(folder_root), "--check-images"]) == 0
    assert capsys.readouterr().out.count("query") == 2
    assert main(["datasets", "info", "folder", "--root", str(folder_root), "--check-images", "--strict"]) == 2
    assert "0100_c1_0002.jpg cannot be decoded" in capsys.readouterr().err
