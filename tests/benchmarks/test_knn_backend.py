"""benchmarks.knn_backend on a small pool: both exact methods timed, their lists compared, the block rendered."""

import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import knn_backend  # noqa: E402
from benchmarks.pseudo_labels import synthetic_features  # noqa: E402
from hhcl.cluster.knn import faiss_available  # noqa: E402


def test_matmul_figures_and_block():
    features, _ = synthetic_features(300, dim=16, seed=0)
    results = knn_backend.measure(features, 10, ["matmul"], repeats=2)
    assert results["matmul"]["same_lists"] == 1.0 and results["matmul"]["seconds"] > 0
    markdown = knn_backend.render_markdown(results, 300, 16, 10, 2, "matmul search (exact) on CPU")
    assert markdown.startswith("## kNN backend for the pseudo-labels")
    assert "| `matmul` |" in markdown and "| 1.00 | 100.0% |" in markdown


@pytest.mark.skipif(not faiss_available(), reason="faiss is not installed")
def test_faiss_flat_gives_matmul_lists():
    features, _ = synthetic_features(500, dim=16, seed=1)
    results = knn_backend.measure(features, 20, ["matmul", "faiss"], repeats=1)
    assert results["faiss"]["same_lists"] == 1.0
