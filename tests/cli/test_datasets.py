"""`hhcl datasets` and `hhcl datasets info`."""

from __future__ import annotations

import pytest

from hhcl.cli import main
from hhcl.cli.arguments import parse_options
from hhcl.data import list_datasets


def test_lists_every_dataset(capsys):
    assert main(["datasets"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list_datasets()
    assert "subset" in next(line for line in listed if line.startswith("cuhk03np"))
    assert main(["datasets", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == listed


def test_info_prints_the_summary(tmp_path, make_files, capsys):
    make_files(tmp_path / "bounding_box_train", ["0002_c1s1_000451_03.jpg", "0003_c2s1_000451_03.jpg"])
    make_files(tmp_path / "bounding_box_test", ["0004_c1s1_000451_03.jpg", "-1_c2s1_000451_03.jpg"])
    make_files(tmp_path / "query", ["0004_c2s1_000451_03.jpg"])
    assert main(["datasets", "info", "market1501", "--root", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"market1501 ({tmp_path})"
    assert [line.split() for line in lines[3:]] == [["train", "2", "2", "2"], ["query", "1", "1", "1"], ["gallery", "1", "1", "1"]]


def test_info_pools_folders_with_patterns(tmp_path, make_files, capsys):
    make_files(tmp_path / "a", ["0001_a.png", "0001_b.png"])
    make_files(tmp_path / "b", ["0001_001.jpg", "0002_001.jpg"])
    argv = ["datasets", "info", "folder", "--root", str(tmp_path / "a"), "--root", str(tmp_path / "b"),
            "--pattern", r"^(?P<pid>\d+)_(?P<cam>[ab])", "--pattern", r"^(?P<pid>\d+)_"]
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[3].split() == ["train", "4", "3", "3"]


def test_info_synthetic_with_options(tmp_path, capsys):
    argv = ["datasets", "info", "synthetic", "--root", str(tmp_path / "s"), "-o", "num_identities=3",
            "-o", "num_test_identities=2", "-o", "images_per_identity=4", "-o", "height=64", "-o", "width=32"]
    assert main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[3:]]
    assert rows[0][:3] == ["train", "12", "3"]
    assert int(rows[1][1]) + int(rows[2][1]) == 8


def test_option_parsing():
    assert parse_options(["subset=labeled", "num_identities=50", "camera_strength=0.5", "query_camera=1"]) == {
        "subset": "labeled", "num_identities": 50, "camera_strength": 0.5, "query_camera": "1",
    }


@pytest.mark.parametrize(
    "argv,message",
    [
        (["datasets", "info", "nope", "--root", "."], "unknown dataset 'nope'"),
        (["datasets", "info", "market1501", "--root", "a", "--root", "b"], "only the folder dataset pools"),
        (["datasets", "info", "market1501", "-o", "subset"], "is not KEY=VALUE"),
        (["datasets", "info", "market1501"], "needs a root folder; pass --root DIR"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(argv, message, capsys):
    assert main(argv) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and message in error[0]
