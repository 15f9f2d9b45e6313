"""The folder reader on the real image sets of ../shared/data, with the patterns and counts of
its README. Skipped, saying why, when ../shared is absent."""

from __future__ import annotations

import statistics
from collections import Counter

import pytest
import torch

from hhcl.data import load_dataset
from hhcl.data.loaders import build_test_loader
from hhcl.errors import HHCLError

pytestmark = pytest.mark.shared

PRID = r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$"
SEQUENCE = r"^(?P<pid>\d+)_\d+\.jpg$"  # caviar4reid, ilids, towncentre
THREE_D_PES = r"^(?P<pid>\d+)_\d+_FRAME_\d+_RGB\.bmp$"
# Six 3dpes files carry a "_B" in their names (e.g. 166_B_1280_FRAME_105_RGB.bmp), which the
# README's pattern does not allow for.
THREE_D_PES_ALL = r"^(?P<pid>\d+)_(?:B_)?\d+_FRAME_\d+_RGB\.bmp$"


def per_identity(items) -> Counter:
    return Counter(pid for _, pid, _ in items)


def test_prid2011(shared_data, data_warnings):
    dataset = load_dataset("folder", shared_data / "prid2011", pattern=PRID)
    assert dataset.split_counts("train") == {"images": 1134, "identities": 934, "unlabeled": 0, "cameras": 2}
    assert sum(count == 2 for count in per_identity(dataset.train).values()) == 200  # seen by both cameras
    # attributes.txt is the one non-image file
    assert any("skipped 1 non-image file" in message and "attributes.txt" in message for message in data_warnings())


def test_prid2011_single_shot_protocol(shared_data):
    dataset = load_dataset("folder", shared_data / "prid2011", pattern=PRID, query_camera="a", gallery_camera="b")
    assert len(dataset.query) == 200 and len(dataset.gallery) == 749
    assert {camid for _, _, camid in dataset.query} == {0} and {camid for _, _, camid in dataset.gallery} == {1}
    assert {pid for _, pid, _ in dataset.query} <= {pid for _, pid, _ in dataset.gallery}


def test_caviar4reid(shared_data):
    dataset = load_dataset("folder", shared_data / "caviar4reid", pattern=SEQUENCE, check_images=True)
    assert dataset.split_counts("train") == {"images": 1220, "identities": 72, "unlabeled": 0, "cameras": 1}
    assert set(per_identity(dataset.train).values()) == {10, 20}


def test_ilids(shared_data):
    dataset = load_dataset("folder", shared_data / "ilids", pattern=SEQUENCE)
    assert dataset.split_counts("train") == {"images": 477, "identities": 120, "unlabeled": 0, "cameras": 1}
    counts = per_identity(dataset.train).values()
    assert min(counts) == 1 and max(counts) == 8


def test_3dpes(shared_data):
    with pytest.raises(HHCLError, match=r"_B_\d+_FRAME_\d+_RGB\.bmp does not match the pattern"):
        load_dataset("folder", shared_data / "3dpes", pattern=THREE_D_PES)
    dataset = load_dataset("folder", shared_data / "3dpes", pattern=THREE_D_PES_ALL)
    assert dataset.split_counts("train") == {"images": 1012, "identities": 193, "unlabeled": 0, "cameras": 1}
    counts = per_identity(dataset.train).values()
    assert min(counts) == 1 and max(counts) == 26


def test_towncentre(shared_data):
    dataset = load_dataset("folder", shared_data / "towncentre", pattern=SEQUENCE)
    assert dataset.split_counts("train") == {"images": 6967, "identities": 222, "unlabeled": 0, "cameras": 1}
    counts = list(per_identity(dataset.train).values())
    assert min(counts) == 1 and max(counts) == 157 and statistics.median(counts) == 32


def test_pooled_unlabeled_training_set(shared_data):
    folders = ["caviar4reid", "ilids", "3dpes", "towncentre"]
    # Identities thrown away: patterns without a pid group.
    patterns = [r"^\d+_\d+\.jpg$", r"^\d+_\d+\.jpg$", r"_FRAME_\d+_RGB\.bmp$", r"^\d+_\d+\.jpg$"]
    dataset = load_dataset("folder", [shared_data / name for name in folders], pattern=patterns)
    assert dataset.split_counts("train") == {"images": 1220 + 477 + 1012 + 6967, "identities": 0,
                                             "unlabeled": 9676, "cameras": 4}
    # The same folders with identities: kept apart by offsets.
    labelled = load_dataset("folder", [shared_data / name for name in folders],
                            pattern=[SEQUENCE, SEQUENCE, THREE_D_PES_ALL, SEQUENCE])
    assert labelled.split_counts("train")["identities"] == 72 + 120 + 193 + 222


def test_odd_sized_real_images_load(shared_data):
    caviar = load_dataset("folder", shared_data / "caviar4reid", pattern=SEQUENCE).train[:40:4]
    bmp = load_dataset("folder", shared_data / "3dpes", pattern=THREE_D_PES_ALL).train[:40:4]
    for images, indices in build_test_loader(caviar + bmp, batch_size=20, height=256, width=128):
        assert images.shape == (20, 3, 256, 128) and images.dtype == torch.uint8
        assert indices.tolist() == list(range(20))
        assert images.float().std() > 10  # real pictures, not blank
