"""benchmarks.adaptation's ``duke`` protocol read through the dukemtmcreid reader, on a small tree of each layout."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.adaptation_protocols import DUKE, ProtocolUnavailable, load_protocol  # noqa: E402

TRAIN = ["0_c2_f0046182.jpg", "0_c5_f0051781.jpg", "1_c8_f0000001.jpg", "701_c1_f0000002.jpg"]
GALLERY = ["0002_c1_f0044158.jpg", "0002_c7_f0082164.jpg", "0019_c2_f0000131.jpg"]
QUERY = ["0002_c2_f0044158.jpg", "0019_c6_f0000200.jpg"]
DUKE_DATA = Path(os.environ.get("HHCL_DUKE_ROOT", REPO_ROOT.parent / "duke"))


@pytest.mark.parametrize("layout", ["readyTrain", "official"])
def test_duke_protocol_on_either_layout(tmp_path, make_files, layout):
    # The default place, <data root>/dukemtmcreid, holding what `git archive ... dataReader/...` extracts.
    if layout == "readyTrain":
        base = tmp_path / "dukemtmcreid" / "dataReader"
        folders = ("readyTrain", "test", "query")
    else:
        base = tmp_path / "dukemtmcreid" / "DukeMTMC-reID"
        folders = ("bounding_box_train", "bounding_box_test", "query")
    for folder, names in zip(folders, (TRAIN, GALLERY, QUERY)):
        make_files(base / folder, names)
    protocol = load_protocol(tmp_path, name=DUKE)
    assert protocol.name == DUKE and protocol.train_folders == ["dukemtmcreid"] * 4
    assert sorted(os.path.basename(path) for path, _, _ in protocol.train) == sorted(TRAIN)
    # one source, 8-camera numbering kept; the hidden identities (for the pair diagnosis) relabelled 0..N-1
    assert protocol.camera_sources == {0: 0, 1: 0, 4: 0, 7: 0}
    np.testing.assert_array_equal(np.sort(protocol.train_identities()), [0, 0, 1, 2])
    assert all(pid == -1 for _, pid, _ in protocol.unlabeled_train())
    [test_set] = protocol.test_sets
    assert (test_set.name, test_set.cross_camera, len(test_set.query), len(test_set.gallery)) == (
        "dukemtmcreid", True, 2, 3)
    assert {(os.path.basename(p), pid, cam) for p, pid, cam in test_set.query} == {
        ("0002_c2_f0044158.jpg", 2, 1), ("0019_c6_f0000200.jpg", 19, 5)}
    # --duke-root pointing at the layout's own folder reads the same
    direct = load_protocol(tmp_path / "elsewhere", name=DUKE, duke_root=base)
    assert direct.train == protocol.train


def test_duke_protocol_without_data_says_where_to_point(tmp_path):
    with pytest.raises(ProtocolUnavailable, match="no DukeMTMC-reID at .*pass --duke-root DIR"):
        load_protocol(tmp_path, name=DUKE)
    (tmp_path / "dukemtmcreid").mkdir()
    with pytest.raises(ProtocolUnavailable, match="no dukemtmcreid split folders found .*readyTrain/, test/, query/"):
        load_protocol(tmp_path, name=DUKE)


def test_duke_protocol_on_the_real_tree():
    if not DUKE_DATA.is_dir():
        pytest.skip(f"DukeMTMC-reID not found at {DUKE_DATA} (set HHCL_DUKE_ROOT)")
    protocol = load_protocol(REPO_ROOT / "unused", name=DUKE, duke_root=DUKE_DATA)
    [test_set] = protocol.test_sets
    assert (len(protocol.train), len(test_set.query), len(test_set.gallery)) == (16522, 2228, 17661)
    assert len(np.unique(protocol.train_identities())) == 702 and len(protocol.camera_sources) == 8
