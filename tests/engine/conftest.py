"""A toy synthetic set and a toy training config, small enough for a run in a few seconds."""

import json
import sys
from pathlib import Path

import pytest

from hhcl.config import load_config

# trainer_hooks.py holds hooks several test modules share; pytest's importlib mode does not put test
# folders on sys.path by itself.
sys.path.insert(0, str(Path(__file__).parent))

TINY_SET = {"num_identities": 12, "images_per_identity": 6, "num_cameras": 3, "height": 32, "width": 16, "seed": 0,
            "camera_strength": 0.0}


def tiny_overrides(root: Path) -> list[str]:
    return [
        f"dataset.root={json.dumps(str(root))}",
        *(f"dataset.options.{key}={value}" for key, value in TINY_SET.items()),
        "dataset.height=32", "dataset.width=16", "dataset.num_workers=0",
        "model.arch=osnet_x0_25",
        "cluster.eps=0.6", "cluster.k1=10", "cluster.k2=3",
        "train.epochs=2", "train.iters=2", "train.batch_size=16", "train.num_instances=4",
        "train.num_threads=1", "train.extract_batch_size=128",
        "evaluation.eval_every=0",
    ]


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    from hhcl.data import load_dataset

    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    load_dataset("synthetic", root, **TINY_SET)
    return root


@pytest.fixture
def tiny_config_overrides(tiny_root) -> list[str]:
    return tiny_overrides(tiny_root)


@pytest.fixture
def tiny_config(tiny_root):
    def make(*overrides: str):
        return load_config("demo", [*tiny_overrides(tiny_root), *overrides])

    return make
