"""Benchmark readers on tiny fixture trees with each benchmark's naming quirks and exact counts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hhcl.data import list_datasets, load_dataset
from hhcl.errors import HHCLError


def names(items):
    return sorted(os.path.basename(path) for path, _, _ in items)


def by_name(items):
    return {os.path.basename(path): (pid, camid) for path, pid, camid in items}


def test_list_datasets_names_every_reader():
    assert list_datasets() == [
        "market1501", "dukemtmcreid", "msmt17", "personx", "cuhk03np", "veri776", "folder", "synthetic",
    ]


@pytest.fixture
def market_root(tmp_path, make_files):
    base = tmp_path / "Market-1501-v15.09.15"
    make_files(base / "bounding_box_train", [
        "0002_c1s1_000451_03.jpg", "0002_c2s1_000301_01.jpg", "0007_c3s3_077419_03.jpg",
        "0007_c6s3_085567_02.jpg", "0010_c6s4_002427_02.jpg", "Thumbs.db",
    ])
    make_files(base / "bounding_box_test", [
        "-1_c1s1_000401_03.jpg", "-1_c3s1_017276_04.jpg",  # junk: dropped
        "0000_c1s1_000151_01.jpg",  # distractor: kept
        "0001_c1s1_001051_03.jpg", "0001_c2s1_000301_01.jpg", "0003_c4s1_000731_01.jpg", "Thumbs.db",
    ])
    make_files(base / "query", ["0001_c1s1_001051_00.jpg", "0003_c5s1_000751_00.jpg"])
    make_files(base / "gt_bbox", ["0001_c1s1_001051_00.jpg"])  # not a split: ignored
    return tmp_path


def test_market1501_standard_protocol(market_root, data_warnings):
    dataset = load_dataset("market1501", market_root)
    assert dataset.name == "market1501"
    assert len(dataset.train) == 5 and len(dataset.query) == 2 and len(dataset.gallery) == 4
    # Training pids relabelled 0..N-1 in pid order; cameras 0-based.
    assert by_name(dataset.train) == {
        "0002_c1s1_000451_03.jpg": (0, 0), "0002_c2s1_000301_01.jpg": (0, 1), "0007_c3s3_077419_03.jpg": (1, 2),
        "0007_c6s3_085567_02.jpg": (1, 5), "0010_c6s4_002427_02.jpg": (2, 5),
    }
    # pid -1 dropped from the test split, pid 0 kept, raw pids.
    assert by_name(dataset.gallery) == {
        "0000_c1s1_000151_01.jpg": (0, 0), "0001_c1s1_001051_03.jpg": (1, 0),
        "0001_c2s1_000301_01.jpg": (1, 1), "0003_c4s1_000731_01.jpg": (3, 3),
    }
    assert by_name(dataset.query) == {"0001_c1s1_001051_00.jpg": (1, 0), "0003_c5s1_000751_00.jpg": (3, 4)}
    assert all(isinstance(value, int) for item in dataset.train for value in item[1:])
    # Thumbs.db: one warning per folder that counts it.
    assert sum("skipped 1 non-image file" in message for message in data_warnings()) == 2


def test_market1501_found_directly_under_root(market_root):
    direct = load_dataset("market1501", market_root / "Market-1501-v15.09.15")
    nested = load_dataset("market1501", market_root)
    assert direct.train == nested.train and direct.gallery == nested.gallery


def test_market1501_summary_table(market_root):
    dataset = load_dataset("market1501", market_root)
    lines = str(dataset).splitlines()
    assert lines[0].startswith("market1501")
    assert lines[1].split() == ["split", "images", "identities", "cameras"]
    assert lines[3].split() == ["train", "5", "3", "4"]
    assert lines[4].split() == ["query", "2", "2", "2"]
    assert lines[5].split() == ["gallery", "4", "3", "3"]


def test_dukemtmcreid(tmp_path, make_files):
    base = tmp_path / "DukeMTMC-reID"
    make_files(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0001_c5_f0051781.jpg", "0005_c8_f0000001.jpg"])
    make_files(base / "bounding_box_test", ["0002_c1_f0044158.jpg", "0002_c7_f0082164.jpg", "0019_c2_f0000131.jpg"])
    make_files(base / "query", ["0002_c2_f0044158.jpg"])
    dataset = load_dataset("dukemtmcreid", tmp_path)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (3, 1, 3)
    assert by_name(dataset.train)["0005_c8_f0000001.jpg"] == (1, 7)
    assert by_name(dataset.gallery)["0019_c2_f0000131.jpg"] == (19, 1)


DUKE_READY_TRAIN = ["0_c2_f0046182.jpg", "0_c5_f0051781.jpg", "1_c8_f0000001.jpg", "701_c1_f0000002.jpg"]
DUKE_TEST = ["0002_c1_f0044158.jpg", "0002_c7_f0082164.jpg", "0019_c2_f0000131.jpg"]
DUKE_QUERY = ["0002_c2_f0044158.jpg", "0019_c6_f0000200.jpg"]


@pytest.fixture
def duke_ready_train_root(tmp_path, make_files):
    """FlyingRoastDuck/Pytorch-DukeMTMC-Baseline's dataReader/ folder, as `git archive` extracts it."""
    base = tmp_path / "dataReader"
    make_files(base / "readyTrain", DUKE_READY_TRAIN)
    make_files(base / "test", DUKE_TEST)
    make_files(base / "query", DUKE_QUERY)
    return tmp_path


def test_dukemtmcreid_ready_train_layout(duke_ready_train_root, caplog):
    caplog.set_level("INFO", logger="hhcl.data")
    dataset = load_dataset("dukemtmcreid", duke_ready_train_root)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (4, 2, 3)
    # Training ids 0..701 as named (pid 0 is a person, not a distractor), relabelled in order; cameras 0-based.
    assert by_name(dataset.train) == {"0_c2_f0046182.jpg": (0, 1), "0_c5_f0051781.jpg": (0, 4),
                                      "1_c8_f0000001.jpg": (1, 7), "701_c1_f0000002.jpg": (2, 0)}
    assert by_name(dataset.gallery) == {"0002_c1_f0044158.jpg": (2, 0), "0002_c7_f0082164.jpg": (2, 6),
                                        "0019_c2_f0000131.jpg": (19, 1)}
    assert by_name(dataset.query) == {"0002_c2_f0044158.jpg": (2, 1), "0019_c6_f0000200.jpg": (19, 5)}
    assert dataset.name == "dukemtmcreid" and dataset.root == str(duke_ready_train_root / "dataReader")
    # It says which layout it read: in the summary's title and in a log line.
    assert dataset.layout.startswith("readyTrain")
    assert str(dataset).splitlines()[0].endswith("readyTrain (readyTrain/, test/, query/) layout")
    assert any("readyTrain (readyTrain/, test/, query/) layout in" in record.getMessage() for record in caplog.records)
    # Found directly under dataReader/ too.
    direct = load_dataset("dukemtmcreid", duke_ready_train_root / "dataReader")
    assert direct.train == dataset.train and direct.gallery == dataset.gallery


def test_dukemtmcreid_official_layout_says_so(tmp_path, make_files):
    base = tmp_path / "DukeMTMC-reID"
    make_files(base / "bounding_box_train", ["0001_c2_f0046182.jpg", "0005_c8_f0000001.jpg"])
    make_files(base / "bounding_box_test", DUKE_TEST)
    make_files(base / "query", DUKE_QUERY)
    dataset = load_dataset("dukemtmcreid", tmp_path)
    assert dataset.layout.startswith("official") and "bounding_box_train/" in str(dataset).splitlines()[0]
    assert by_name(dataset.train) == {"0001_c2_f0046182.jpg": (0, 1), "0005_c8_f0000001.jpg": (1, 7)}


def test_dukemtmcreid_without_split_folders_names_both_layouts(tmp_path, make_files):
    make_files(tmp_path / "query", DUKE_QUERY)  # query/ alone tells neither layout
    with pytest.raises(HHCLError) as error:
        load_dataset("dukemtmcreid", tmp_path)
    message = str(error.value)
    assert "\n" not in message and f"no dukemtmcreid split folders found in {tmp_path}" in message
    assert "bounding_box_train/" in message and "readyTrain/, test/, query/" in message


def test_dukemtmcreid_ready_train_layout_missing_gallery(tmp_path, make_files):
    make_files(tmp_path / "readyTrain", DUKE_READY_TRAIN)
    make_files(tmp_path / "query", DUKE_QUERY)
    with pytest.raises(HHCLError, match=r"split folder .*test/ is missing; expected readyTrain/, test/, query/"):
        load_dataset("dukemtmcreid", tmp_path)


DUKE_DATA = Path(os.environ.get("HHCL_DUKE_ROOT", Path(__file__).resolve().parents[2].parent / "duke"))


def test_dukemtmcreid_real_ready_train_tree():
    """The real tree (the Duke issue's `git archive` of dataReader/), when this machine has it."""
    if not DUKE_DATA.is_dir():
        pytest.skip(f"DukeMTMC-reID not found at {DUKE_DATA} (set HHCL_DUKE_ROOT)")
    dataset = load_dataset("dukemtmcreid", DUKE_DATA)
    assert (len(dataset.train), len(dataset.gallery), len(dataset.query)) == (16522, 17661, 2228)
    assert dataset.split_counts("train")["identities"] == 702 and dataset.split_counts("train")["cameras"] == 8
    assert {pid for _, pid, _ in dataset.query} <= {pid for _, pid, _ in dataset.gallery}


def msmt_name(pid: int, index: int, cam: int) -> str:
    return f"{pid:04d}_{index:03d}_{cam:02d}_0303morning_{index:04d}_0.jpg"


@pytest.fixture
def msmt17_v1(tmp_path, make_files):
    base = tmp_path / "MSMT17_V1"
    train = [(0, 0, 1), (0, 1, 15), (1, 0, 3)]
    val = [(1, 1, 7), (2, 0, 2)]
    query = [(3, 0, 5)]
    gallery = [(3, 1, 10), (4, 0, 12)]
    for folder, listed in (("train", train + val), ("test", query + gallery)):
        make_files(base / folder, [f"{pid:04d}/{msmt_name(pid, i, cam)}" for pid, i, cam in listed])
    for list_name, listed in (("list_train.txt", train), ("list_val.txt", val), ("list_query.txt", query),
                              ("list_gallery.txt", gallery)):
        lines = [f"{pid:04d}/{msmt_name(pid, i, cam)} {pid}\n" for pid, i, cam in listed]
        (base / list_name).write_text("".join(lines))
    return tmp_path


def test_msmt17_official_lists_train_plus_val(msmt17_v1):
    dataset = load_dataset("msmt17", msmt17_v1)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (5, 1, 2)
    assert by_name(dataset.train)[msmt_name(0, 1, 15)] == (0, 14)  # the name's third field is the camera
    assert by_name(dataset.train)[msmt_name(2, 0, 2)] == (2, 1)  # from list_val.txt
    assert by_name(dataset.gallery)[msmt_name(4, 0, 12)] == (4, 11)
    assert all(os.path.isfile(path) for path, _, _ in dataset.train + dataset.query + dataset.gallery)


def test_msmt17_v2_release(tmp_path, make_files):
    base = tmp_path / "MSMT17_V2"
    make_files(base / "mask_train_v2", [f"0000/{msmt_name(0, 0, 4)}", f"0000/{msmt_name(0, 1, 9)}"])
    make_files(base / "mask_test_v2", [f"0100/{msmt_name(100, 0, 1)}", f"0100/{msmt_name(100, 1, 2)}"])
    (base / "list_train.txt").write_text(f"0000/{msmt_name(0, 0, 4)} 0\n0000/{msmt_name(0, 1, 9)} 0\n")
    (base / "list_query.txt").write_text(f"0100/{msmt_name(100, 0, 1)} 100\n")
    (base / "list_gallery.txt").write_text(f"0100/{msmt_name(100, 1, 2)} 100\n\n")  # trailing blank line
    dataset = load_dataset("msmt17", tmp_path, version="V2")
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (2, 1, 1)
    assert sorted(camid for _, _, camid in dataset.train) == [3, 8]
    with pytest.raises(HHCLError, match="no msmt17 release"):
        load_dataset("msmt17", tmp_path, version="V1")


def test_msmt17_bad_list_line_names_the_line(msmt17_v1):
    list_file = msmt17_v1 / "MSMT17_V1" / "list_query.txt"
    list_file.write_text(list_file.read_text() + "garbage\n")
    with pytest.raises(HHCLError, match=r"list_query.txt:2 should read"):
        load_dataset("msmt17", msmt17_v1)


def test_msmt17_listed_file_missing(msmt17_v1):
    (msmt17_v1 / "MSMT17_V1" / "test" / "0004" / msmt_name(4, 0, 12)).unlink()
    with pytest.raises(HHCLError, match=r"listed in .*list_gallery.txt:2 but missing"):
        load_dataset("msmt17", msmt17_v1)


def test_msmt17_repackaged_bounding_box_layout(tmp_path, make_files):
    base = tmp_path / "MSMT17_V1"
    make_files(base / "bounding_box_train", ["0000_c1_0000.jpg", "0000_c14_0001.jpg", "0001_c15_0000.jpg"])
    make_files(base / "bounding_box_test", ["0100_c2_0000.jpg", "0101_c3_0000.jpg"])
    make_files(base / "query", ["0100_c10_0001.jpg"])
    dataset = load_dataset("msmt17", tmp_path)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (3, 1, 2)
    assert by_name(dataset.train) == {"0000_c1_0000.jpg": (0, 0), "0000_c14_0001.jpg": (0, 13), "0001_c15_0000.jpg": (1, 14)}
    assert by_name(dataset.query) == {"0100_c10_0001.jpg": (100, 9)}


def test_personx_non_contiguous_cameras(tmp_path, make_files):
    base = tmp_path / "PersonX"
    make_files(base / "bounding_box_train", ["0001_c3_0001.jpg", "0001_c12_0002.jpg", "0002_c8_0001.jpg"])
    make_files(base / "bounding_box_test", ["0500_c4_0001.jpg", "0500_c10_0002.jpg"])
    make_files(base / "query", ["0500_c11_0003.jpg"])
    dataset = load_dataset("personx", tmp_path)
    # PersonX's cameras 3, 4, 8, 10, 11, 12 become 0..5 across all splits.
    assert by_name(dataset.train) == {"0001_c3_0001.jpg": (0, 0), "0001_c12_0002.jpg": (0, 5), "0002_c8_0001.jpg": (1, 2)}
    assert by_name(dataset.gallery) == {"0500_c4_0001.jpg": (500, 1), "0500_c10_0002.jpg": (500, 3)}
    assert by_name(dataset.query) == {"0500_c11_0003.jpg": (500, 4)}


@pytest.fixture
def cuhk03_root(tmp_path, make_files):
    base = tmp_path / "cuhk03-np"
    make_files(base / "labeled" / "bounding_box_train", ["0001_c1_1.png", "0001_c2_6.png", "0002_c1_1.png"])
    make_files(base / "labeled" / "bounding_box_test", ["0768_c1_1.png", "0768_c2_7.png"])
    make_files(base / "labeled" / "query", ["0768_c2_6.png"])
    make_files(base / "detected" / "bounding_box_train", ["0001_c1_1.png", "0001_c2_6.png"])
    make_files(base / "detected" / "bounding_box_test", ["0768_c1_1.png", "0768_c2_7.png", "0769_c1_2.png"])
    make_files(base / "detected" / "query", ["0768_c2_6.png", "0769_c2_6.png"])
    return tmp_path


def test_cuhk03np_subsets(cuhk03_root):
    detected = load_dataset("cuhk03np", cuhk03_root)
    labeled = load_dataset("cuhk03np", cuhk03_root, subset="labeled")
    assert (len(detected.train), len(detected.query), len(detected.gallery)) == (2, 2, 3)
    assert (len(labeled.train), len(labeled.query), len(labeled.gallery)) == (3, 1, 2)
    assert labeled.name == "cuhk03np (labeled)"
    assert by_name(labeled.train)["0001_c2_6.png"] == (0, 1)


def test_cuhk03np_unknown_subset(cuhk03_root):
    with pytest.raises(HHCLError, match="subset=detected or subset=labeled"):
        load_dataset("cuhk03np", cuhk03_root, subset="both")


def test_veri776(tmp_path, make_files):
    base = tmp_path / "VeRi"
    make_files(base / "image_train", ["0001_c001_00016450_0.jpg", "0001_c012_00016460_0.jpg", "0002_c020_00000001_1.jpg"])
    make_files(base / "image_test", ["0005_c002_00030600_0.jpg", "0005_c003_00030605_0.jpg", "0006_c004_00000005_0.jpg"])
    make_files(base / "image_query", ["0005_c004_00030610_0.jpg"])
    (base / "name_train.txt").write_text("0001_c001_00016450_0.jpg\n")  # next to the splits: ignored
    dataset = load_dataset("veri776", tmp_path)
    assert (len(dataset.train), len(dataset.query), len(dataset.gallery)) == (3, 1, 3)
    assert by_name(dataset.train) == {
        "0001_c001_00016450_0.jpg": (0, 0), "0001_c012_00016460_0.jpg": (0, 11), "0002_c020_00000001_1.jpg": (1, 19),
    }


def test_unknown_dataset_and_option(market_root):
    with pytest.raises(HHCLError, match="unknown dataset 'market'.*market1501"):
        load_dataset("market", market_root)
    with pytest.raises(HHCLError, match="has no option subset; it accepts check_images, strict"):
        load_dataset("market1501", market_root, subset="labeled")
