"""The released OSNet-x0.25 (MSMT17) on real images: prid2011's single-shot cross-camera test.

Reads ../shared (skipped, saying why, when it is absent). The expected figures are those measured
with the original ONNX export (../shared/models/README.md): rank-1 24.0%, mAP 32.7%.
"""

import pytest

from hhcl.data import load_dataset
from hhcl.evaluation import evaluate_features
from hhcl.models import build_model, extract_features, load_weights

PRID2011_PATTERN = r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$"

pytestmark = [pytest.mark.shared, pytest.mark.slow]


@pytest.fixture
def released_osnet_path(shared_models):
    path = shared_models / "osnet_x0_25_msmt17.pth"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def test_released_osnet_loads_completely(released_osnet_path):
    model = build_model("osnet_x0_25")
    report = load_weights(model, released_osnet_path, verbose=False)
    # torchreid's model also has the identity classifier, which the file leaves out; everything
    # else is there and fits.
    assert len(report.loaded) == 565
    assert report.missing == [] and report.unexpected == [] and report.skipped == []


def test_released_osnet_scores_on_prid2011(released_osnet_path, shared_data):
    dataset = load_dataset("folder", shared_data / "prid2011", pattern=PRID2011_PATTERN, query_camera="a",
                           gallery_camera="b")
    # The 200 identities of camera a that camera b also saw, against all of camera b.
    assert len(dataset.query) == 200 and len(dataset.gallery) == 749
    model = build_model("osnet_x0_25", weights=released_osnet_path)
    features = extract_features(model, dataset.query + dataset.gallery, batch_size=64, progress=False)
    query_features, gallery_features = features[:200], features[200:]
    result = evaluate_features(query_features, gallery_features,
                               [pid for _, pid, _ in dataset.query], [pid for _, pid, _ in dataset.gallery],
                               [cam for _, _, cam in dataset.query], [cam for _, _, cam in dataset.gallery])
    assert result["num_valid_queries"] == 200
    assert result["cmc"][0] * 100 == pytest.approx(24.0, abs=1.5)
    assert result["mAP"] * 100 == pytest.approx(32.7, abs=1.5)
