"""The memory options of the loop: the clustering ensemble (cluster.ensemble_eps) and camera-aware
proxies (memory.camera_proxies), end to end on the toy synthetic set."""

import dataclasses
import math

import numpy as np
import pytest
import torch

from hhcl.cluster.assign import assign_pseudo_labels
from hhcl.engine import Hook, Trainer
from hhcl.engine.checkpoint import load_checkpoint
from hhcl.memory import ClusterMemory, EpochMemory
from trainer_hooks import InterruptAt


class KeepAssignments(Hook):
    def __init__(self):
        self.assignments = []

    def after_cluster(self, trainer, assignment):
        self.assignments.append(assignment)


def test_the_loader_yields_each_images_row_in_the_training_set(tiny_config):
    trainer = Trainer(tiny_config(), None, progress=False)
    features = trainer.extract_train_features()
    labels = trainer.assign_labels(features).train_labels
    assert (labels < 0).any()  # the clustered subset is not the whole set: rows differ from positions
    for _, targets, image_ids in trainer.build_train_loader(labels, epoch=0):
        assert torch.equal(targets, torch.from_numpy(labels)[image_ids])
    assert isinstance(trainer.build_memory(features, labels, 0), ClusterMemory)  # options off: the mode's memory


def test_the_clustering_ensemble_trains_end_to_end(tmp_path, tiny_config):
    kept = KeepAssignments()
    trainer = Trainer(tiny_config("cluster.ensemble_eps=[0.7, 0.5, 0.6]"), tmp_path / "run", hooks=[kept],
                      progress=False)
    summary = trainer.fit()
    assert all(math.isfinite(record["loss"]) for record in summary["history"])
    num_images = len(trainer.dataset.train)
    for assignment, record in zip(kept.assignments, summary["history"]):
        assert assignment.ensemble_labels.shape == (3, num_images)
        assert assignment.ensemble_nested.shape == (num_images,)
        assert record["ensemble"]["eps"] == [0.5, 0.6, 0.7]  # finest first
        assert record["ensemble"]["num_clusters"] == [int(g.max()) + 1 for g in assignment.ensemble_labels]
    memory = trainer.memory
    assert isinstance(memory, EpochMemory) and memory.mode == "hybrid"
    assert len(memory.granularities) == sum(count > 0 for count in summary["history"][-1]["ensemble"]["num_clusters"])
    assert (memory.granularity_targets >= 0).any(dim=1).all()  # every granularity has images to train on
    assert "ensemble eps 0.5/0.6/0.7" in (tmp_path / "run" / "train.log").read_text()


def test_the_ensemble_leaves_the_pseudo_labels_as_they_are(tiny_config):
    trainer = Trainer(tiny_config("cluster.ensemble_eps=[0.5, 0.7]"), None, progress=False)
    features = trainer.extract_train_features()
    with_ensemble = trainer.assign_labels(features)
    cameras = [camid for _, _, camid in trainer.dataset.train]
    without = assign_pseudo_labels(features, cameras, trainer.dataset.train_sources(),
                                   dataclasses.replace(trainer.config.cluster, ensemble_eps=[]), trainer.config.guard)
    np.testing.assert_array_equal(with_ensemble.labels, without.labels)
    assert without.ensemble_labels is None and "ensemble" not in without.stats


def test_camera_proxies_train_end_to_end_with_a_one_image_camera(tiny_config):
    from hhcl.data import load_dataset

    config = tiny_config("memory.camera_proxies=true")
    dataset = load_dataset("synthetic", config.dataset.root, **config.dataset.options)
    path, pid, _ = dataset.train[0]
    dataset.train[0] = (path, pid, 99)  # a camera of its own
    trainer = Trainer(config, None, dataset=dataset, progress=False)
    summary = trainer.fit()
    assert trainer.trained_epochs == 2
    assert all(math.isfinite(record["loss"]) for record in summary["history"])
    proxies = trainer.memory.camera_proxies
    cameras = [camid for _, _, camid in dataset.train]
    present = {(label, camera) for label, camera in zip(trainer.pseudo_labels.tolist(), cameras) if label >= 0}
    assert proxies.num_clusters == len(present)
    assert set(zip(proxies.proxy_identities.tolist(), proxies.proxy_cameras.tolist())) == present


def test_cross_camera_proxy_scope_keeps_proxies_for_the_identities_seen_by_two_cameras(tiny_config):
    config = tiny_config("memory.camera_proxies=true", "memory.camera_proxy_scope=cross_camera")
    trainer = Trainer(config, None, progress=False)
    summary = trainer.fit()
    assert all(math.isfinite(record["loss"]) for record in summary["history"])
    cameras = [camid for _, _, camid in trainer.dataset.train]
    seen_by = {}
    for label, camera in zip(trainer.pseudo_labels.tolist(), cameras):
        if label >= 0:
            seen_by.setdefault(label, set()).add(camera)
    expected = {(label, camera) for label, seen in seen_by.items() if len(seen) >= 2 for camera in seen}
    proxies = trainer.memory.camera_proxies
    assert expected
    assert set(zip(proxies.proxy_identities.tolist(), proxies.proxy_cameras.tolist())) == expected
    without_proxy = trainer.memory.proxy_targets < 0
    one_camera = torch.tensor([label >= 0 and len(seen_by[label]) == 1 for label in trainer.pseudo_labels.tolist()])
    assert torch.equal(without_proxy, one_camera | torch.as_tensor(trainer.pseudo_labels < 0))


def test_resume_with_both_options_matches_an_uninterrupted_run(tmp_path, tiny_config):
    config = tiny_config("cluster.ensemble_eps=[0.5, 0.7]", "memory.camera_proxies=true")
    straight = tmp_path / "straight"
    Trainer(config, straight, progress=False).fit()
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, interrupted, progress=False, hooks=[InterruptAt(iteration=3)]).fit()  # in epoch 2
    assert load_checkpoint(interrupted / "checkpoint.pth")["epoch"] == 1
    Trainer(config, interrupted, resume=True, progress=False).fit()
    first, second = load_checkpoint(straight / "checkpoint.pth"), load_checkpoint(interrupted / "checkpoint.pth")
    assert all(torch.equal(first["model"][key], second["model"][key]) for key in first["model"])
    assert first["memory"]["state"].keys() == second["memory"]["state"].keys()
    assert "camera_proxies.centroid_memory" in first["memory"]["state"]
    assert all(torch.equal(first["memory"]["state"][key], second["memory"]["state"][key])
               for key in first["memory"]["state"])
    assert [r["loss"] for r in first["history"]] == [r["loss"] for r in second["history"]]


def test_part_features_with_the_ensemble_and_camera_proxies_train_together(tiny_config):
    from hhcl.memory import PartMemory

    trainer = Trainer(tiny_config("model.parts=2", "cluster.ensemble_eps=[0.5, 0.6]", "memory.camera_proxies=true"),
                      None, progress=False)
    summary = trainer.fit()
    assert all(math.isfinite(record["loss"]) for record in summary["history"])
    memory = trainer.memory
    assert isinstance(memory, EpochMemory) and isinstance(memory.main, PartMemory)
    global_dim = memory.main.global_memory.num_features
    # the ensemble's memories and the proxies hold the global piece, a third of the (1 + 2 parts) feature
    assert all(granularity.num_features == global_dim for granularity in memory.granularities)
    assert memory.camera_proxies.centroid_memory.shape[1] == global_dim


def test_train_compile_extracts_the_pool_and_the_evaluation_through_torch_compile(tiny_config, monkeypatch):
    import hhcl.models.extract as extract_module

    compiled_models = []

    def recording(model):
        compiled_models.append(model)
        return model

    monkeypatch.setattr(extract_module, "compiled_or_eager", recording)
    trainer = Trainer(tiny_config("train.epochs=1", "train.compile=true"), None, progress=False)
    trainer.fit()
    assert compiled_models[0] is trainer.model  # the pool, clustered by the trained model
    assert len(compiled_models) == 2  # then the evaluation after the last epoch
    compiled_models.clear()
    Trainer(tiny_config("train.epochs=1"), None, progress=False).fit()
    assert compiled_models == []
