"""The options for adapting a pretrained model (model.freeze_bn, the cluster.reliability keys) and the adapt preset."""

import pytest
import torch

from hhcl.config import load_config
from hhcl.engine import Trainer
from hhcl.errors import HHCLError


def test_adapt_preset_loads_with_its_adaptation_defaults():
    config = load_config("adapt")
    assert config.model.freeze_bn is True
    assert config.optim.lr < load_config("base").optim.lr
    assert config.cluster.reliability_margin > 0
    assert config.cluster.eps_candidates and all(0 < eps < 1 for eps in config.cluster.eps_candidates)
    assert config.train.batch_size % config.train.num_instances == 0


def test_eps_candidates_are_read_from_overrides_and_checked():
    config = load_config("base", ["cluster.eps_candidates=[0.4, 5.0e-1]", "cluster.reliability_margin=0.02"])
    assert config.cluster.eps_candidates == [0.4, 0.5]
    with pytest.raises(HHCLError, match="cluster.eps_candidates"):
        load_config("base", ["cluster.eps_candidates=[0.4, 1.5]", "cluster.reliability_margin=0.02"])
    with pytest.raises(HHCLError, match="reliability_margin > 0"):
        load_config("base", ["cluster.eps_candidates=[0.4]"])
    with pytest.raises(HHCLError, match="not a valid list"):
        load_config("base", ["cluster.eps_candidates=0.4"])
    with pytest.raises(HHCLError, match="cluster.eps_selection"):
        load_config("base", ["cluster.eps_selection=largest"])
    with pytest.raises(HHCLError, match="cluster.eps_quantile"):
        load_config("base", ["cluster.eps_quantile=1.5"])


@pytest.fixture
def tiny_config(tiny_config_overrides):
    """The engine's toy run on the base preset, so that these tests do not follow the demo's choices."""

    def make(*overrides: str):
        return load_config("base", ["dataset.name=synthetic", *tiny_config_overrides, *overrides])

    return make


def test_freeze_bn_keeps_the_running_statistics(tiny_config):
    trainer = Trainer(tiny_config("model.freeze_bn=true", "train.epochs=1"), None, progress=False)
    before = {name: buffer.clone() for name, buffer in trainer.model.named_buffers() if "running_mean" in name}
    trainer.fit()
    after = dict(trainer.model.named_buffers())
    assert before and all(torch.equal(before[name], after[name]) for name in before)


def test_without_freeze_bn_the_running_statistics_move(tiny_config):
    trainer = Trainer(tiny_config("train.epochs=1"), None, progress=False)
    before = {name: buffer.clone() for name, buffer in trainer.model.named_buffers() if "running_mean" in name}
    trainer.fit()
    after = dict(trainer.model.named_buffers())
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_reliability_options_reach_the_clustering(tiny_config):
    config = tiny_config("cluster.eps_candidates=[0.5, 0.6, 0.7]", "cluster.reliability_margin=0.02",
                         "cluster.eps_selection=clusters", "train.epochs=1")
    trainer = Trainer(config, None, progress=False)
    features = trainer.extract_train_features()
    labels, stats = trainer.assign_labels(features)
    assert stats["eps"] in (0.5, 0.6, 0.7)
    assert set(stats["eps_search"]) == {0.5, 0.6, 0.7}
    assert stats["num_clusters"] == stats["eps_search"][stats["eps"]]
    trainer.fit()


def test_camera_centering_clusters_the_centred_features(tiny_config):
    from hhcl.cluster import pseudo_labels
    from hhcl.cluster.camera import camera_centered_features

    trainer = Trainer(tiny_config("cluster.camera_centering=true", "cluster.eps=0.7"), None, progress=False)
    features = trainer.extract_train_features()
    cameras = [camid for _, _, camid in trainer.dataset.train]
    assert len(set(cameras)) > 1
    labels, _ = trainer.assign_labels(features)
    expected, _ = pseudo_labels(camera_centered_features(features, cameras), eps=0.7, min_samples=4, k1=10, k2=3)
    plain, _ = pseudo_labels(features, eps=0.7, min_samples=4, k1=10, k2=3)
    assert (labels == expected).all()
    assert not (labels == plain).all()
