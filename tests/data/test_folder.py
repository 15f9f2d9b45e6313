"""The folder reader: split layout, flat unlabeled folders, patterns, pooling and camera splits."""

from __future__ import annotations

import os

import pytest

from hhcl.data import load_dataset
from hhcl.errors import HHCLError


def by_name(items):
    return {os.path.basename(path): (pid, camid) for path, pid, camid in items}


def test_split_layout_with_default_market_pattern(tmp_path, make_files):
    make_files(tmp_path / "train", ["0002_c1s1_000451_03.jpg", "0002_c3_0001.png", "0009_c1_0001.bmp", "0004_c2_0001.jpeg"])
    make_files(tmp_path / "query", ["0100_c1_0001.jpg"])
    make_files(tmp_path / "gallery", ["0100_c2_0002.jpg", "0101_c3_0001.jpg", "-1_c1_0001.jpg"])
    dataset = load_dataset("folder", tmp_path)
    assert by_name(dataset.train) == {
        "0002_c1s1_000451_03.jpg": (0, 0), "0002_c3_0001.png": (0, 2), "0004_c2_0001.jpeg": (1, 1), "0009_c1_0001.bmp": (2, 0),
    }
    assert by_name(dataset.query) == {"0100_c1_0001.jpg": (100, 0)}
    # pid -1 marks junk in query/gallery, as in Market-1501.
    assert by_name(dataset.gallery) == {"0100_c2_0002.jpg": (100, 1), "0101_c3_0001.jpg": (101, 2)}


def test_train_folder_alone_is_enough(tmp_path, make_files):
    make_files(tmp_path / "train", ["0001_c1_1.jpg", "0002_c2_1.jpg"])
    dataset = load_dataset("folder", tmp_path)
    assert len(dataset.train) == 2 and dataset.query == [] and dataset.gallery == []


def test_flat_folder_without_pid_is_unlabeled(tmp_path, make_files):
    make_files(tmp_path, ["cam1_frame0001.jpg", "cam1_frame0002.jpg", "cam2_frame0001.png", "notes.txt"])
    dataset = load_dataset("folder", tmp_path, pattern=r"^cam(?P<cam>\d+)_")
    assert sorted(by_name(dataset.train).values()) == [(-1, 0), (-1, 0), (-1, 1)]
    lines = str(dataset).splitlines()
    assert lines[3].split() == ["train", "3", "unknown", "2"]


def test_flat_folder_without_camera_is_one_camera(tmp_path, make_files):
    make_files(tmp_path, ["0007_001.jpg", "0007_002.jpg", "0003_001.jpg"])
    dataset = load_dataset("folder", tmp_path, pattern=r"^(?P<pid>\d+)_\d+\.jpg$")
    assert by_name(dataset.train) == {"0003_001.jpg": (0, 0), "0007_001.jpg": (1, 0), "0007_002.jpg": (1, 0)}


def test_text_labels_and_zero_padded_numbers(tmp_path, make_files):
    make_files(tmp_path / "train", ["alice_c01_1.jpg", "bob_c1_2.jpg", "bob_c10_3.jpg"])
    make_files(tmp_path / "query", ["carol_c2_1.jpg"])
    make_files(tmp_path / "gallery", ["carol_c10_2.jpg", "dave_c1_1.jpg"])
    dataset = load_dataset("folder", tmp_path, pattern=r"^(?P<pid>[a-z]+)_c(?P<cam>\d+)_")
    # c01 and c1 are one camera; cameras numbered over all splits: 1, 2, 10 -> 0, 1, 2.
    assert by_name(dataset.train) == {"alice_c01_1.jpg": (0, 0), "bob_c1_2.jpg": (1, 0), "bob_c10_3.jpg": (1, 2)}
    assert by_name(dataset.query) == {"carol_c2_1.jpg": (0, 1)}
    assert by_name(dataset.gallery) == {"carol_c10_2.jpg": (0, 2), "dave_c1_1.jpg": (1, 0)}


def test_query_needs_pid_and_camera(tmp_path, make_files):
    make_files(tmp_path / "train", ["0001_c1_1.jpg"])
    make_files(tmp_path / "query", ["0001_c1_1.jpg"])
    make_files(tmp_path / "gallery", ["0001_c2_1.jpg"])
    with pytest.raises(HHCLError, match=r"has no \(\?P<cam>\.\.\.\) group"):
        load_dataset("folder", tmp_path, pattern=r"^(?P<pid>\d+)_")


def test_query_without_gallery_is_an_error(tmp_path, make_files):
    make_files(tmp_path / "query", ["0001_c1_1.jpg"])
    with pytest.raises(HHCLError, match=r"gallery/ is missing; expected .*train/, query/ and gallery/"):
        load_dataset("folder", tmp_path)


def test_camera_split_of_a_flat_folder(tmp_path, make_files):
    # PRID2011's single-shot protocol: camera a's identities also seen by b are the queries,
    # all of camera b is the gallery.
    make_files(tmp_path, ["0001_a.png", "0001_b.png", "0002_a.png", "0002_b.png", "0003_a.png", "0004_b.png", "0005_b.png"])
    dataset = load_dataset("folder", tmp_path, pattern=r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$",
                           query_camera="a", gallery_camera="b")
    assert dataset.train == []
    assert by_name(dataset.query) == {"0001_a.png": (1, 0), "0002_a.png": (2, 0)}
    assert by_name(dataset.gallery) == {"0001_b.png": (1, 1), "0002_b.png": (2, 1), "0004_b.png": (4, 1), "0005_b.png": (5, 1)}


def test_camera_split_unknown_camera(tmp_path, make_files):
    make_files(tmp_path, ["0001_a.png", "0001_b.png"])
    with pytest.raises(HHCLError, match=r"camera 'c' does not occur .*\['a', 'b'\]"):
        load_dataset("folder", tmp_path, pattern=r"^(?P<pid>\d+)_(?P<cam>[ab])", query_camera="a", gallery_camera="c")
    with pytest.raises(HHCLError, match="together"):
        load_dataset("folder", tmp_path, pattern=r"^(?P<pid>\d+)_(?P<cam>[ab])", query_camera="a")


def test_camera_split_numeric_camera_matches_zero_padded(tmp_path, make_files):
    make_files(tmp_path, ["0001_c01_1.jpg", "0001_c02_1.jpg"])
    dataset = load_dataset("folder", tmp_path, query_camera=1, gallery_camera="2")
    assert len(dataset.query) == 1 and len(dataset.gallery) == 1


def test_pooled_folders_keep_identities_and_cameras_apart(tmp_path, make_files):
    first, second, third = tmp_path / "prid", tmp_path / "ilids", tmp_path / "mine"
    make_files(first, ["0001_a.png", "0001_b.png", "0002_b.png"])
    make_files(second, ["0001_001.jpg", "0001_002.jpg", "0005_001.jpg"])
    make_files(third / "train", ["x_1.jpg", "y_2.jpg"])
    dataset = load_dataset(
        "folder", [first, second, third],
        pattern=[r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$", r"^(?P<pid>\d+)_\d+\.jpg$", r"^[xy]_"],
    )
    assert dataset.query == [] and dataset.gallery == []
    got = {os.path.relpath(path, tmp_path): (pid, camid) for path, pid, camid in dataset.train}
    assert got == {
        "prid/0001_a.png": (0, 0), "prid/0001_b.png": (0, 1), "prid/0002_b.png": (1, 1),
        # identity 1 of the second folder is not identity 1 of the first; its one camera is new.
        "ilids/0001_001.jpg": (2, 2), "ilids/0001_002.jpg": (2, 2), "ilids/0005_001.jpg": (3, 2),
        # a folder without pids: unknown identities, its own camera; its train/ split is used.
        "mine/train/x_1.jpg": (-1, 3), "mine/train/y_2.jpg": (-1, 3),
    }
    # each camera remembers its folder: people are shared within a folder, never across
    assert dataset.camera_sources == {0: 0, 1: 0, 2: 1, 3: 2}
    assert dataset.train_sources() == [{0: 0, 1: 0, 2: 1, 3: 2}[camid] for _, _, camid in dataset.train]
    assert load_dataset("folder", first, pattern=r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$").train_sources() == [0, 0, 0]


def test_pooled_folders_pattern_count_must_match(tmp_path, make_files):
    make_files(tmp_path / "a", ["0001_c1_1.jpg"])
    make_files(tmp_path / "b", ["0001_c1_1.jpg"])
    with pytest.raises(HHCLError, match="3 patterns for 2 pooled folders"):
        load_dataset("folder", [tmp_path / "a", tmp_path / "b"], pattern=["a", "b", "c"])
    pooled = load_dataset("folder", [tmp_path / "a", tmp_path / "b"])  # one pattern for all
    assert sorted(pid for _, pid, _ in pooled.train) == [0, 1]


def test_invalid_pattern(tmp_path, make_files):
    make_files(tmp_path, ["0001_c1_1.jpg"])
    with pytest.raises(HHCLError, match="not a valid regular expression"):
        load_dataset("folder", tmp_path, pattern="(?P<pid>")
    with pytest.raises(HHCLError, match=r"groups \['person'\]"):
        load_dataset("folder", tmp_path, pattern="(?P<person>\\d+)")
