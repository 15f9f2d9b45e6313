"""hhcl: unsupervised person re-identification with Hard-sample Guided Hybrid Contrast Learning.

The paper's steps, as files, in the order of the data flow of one epoch:

1. features: ``models/extract.py`` (the backbones in ``models/``, the images in ``data/``);
2. kNN: ``cluster/knn.py``;
3. k-reciprocal Jaccard distance: ``cluster/jaccard.py``;
4. DBSCAN: ``cluster/pseudo_labels.py`` (``cluster/reliability.py`` for eps and reliable clusters);
5. labels, every policy in one place: ``cluster/assign.py`` (camera centring ``cluster/camera.py``,
   the label-free guard ``cluster/guard.py``);
6. memory: ``memory.py``, filled from the cluster means;
7. loss: ``losses.py``;
8. update: ``engine/trainer.py``, the epoch loop (the P x K batches from ``data/sampler.py``);
   evaluation, logging and checkpoints hook into it (``engine/hooks.py``).

``hhcl.FeatureExtractor`` is imported on first use, so that ``import hhcl`` stays light.
"""

from hhcl.errors import HHCLError

__version__ = "0.1.0"
__all__ = ["FeatureExtractor", "HHCLError", "__version__"]


def __getattr__(name: str):
    if name == "FeatureExtractor":
        from hhcl.retrieval.extractor import FeatureExtractor

        return FeatureExtractor
    raise AttributeError(f"module 'hhcl' has no attribute {name!r}")
