"""The options for adapting a pretrained model (model.freeze_bn, the cluster.reliability keys) and the adapt preset."""

import numpy as np
import pytest
import torch

from hhcl.config import load_config
from hhcl.engine import Hook, Trainer
from hhcl.errors import HHCLError
from trainer_hooks import InterruptAt, assert_same_tensors, model_weights


def test_adapt_preset_loads_with_its_adaptation_defaults():
    config = load_config("adapt")
    assert config.model.freeze_bn is True
    assert config.optim.lr < load_config("base").optim.lr
    assert config.cluster.reliability_margin > 0
    assert config.cluster.camera_centering is True
    assert config.cluster.outliers == "drop" and config.cluster.separate_sources is True
    assert config.cluster.pair_outliers and config.cluster.min_compactness > 0 and config.guard.enabled
    assert config.memory.mode == "centroid"
    assert config.memory.camera_proxies is True and config.memory.camera_proxy_scope == "cross_camera"
    assert 0 < config.model.init_mix < 1
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
    assignment = trainer.assign_labels(features)
    labels, stats = assignment.labels, assignment.stats
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
    labels = trainer.assign_labels(features).labels
    expected, _ = pseudo_labels(camera_centered_features(features, cameras)[0], eps=0.7, min_samples=4, k1=10, k2=3)
    plain, _ = pseudo_labels(features, eps=0.7, min_samples=4, k1=10, k2=3)
    assert (labels == expected).all()
    assert not (labels == plain).all()


def test_outliers_as_instances_enter_the_memory(tiny_config):
    trainer = Trainer(tiny_config("cluster.outliers=instances", "cluster.eps=0.45", "train.epochs=1"), None,
                      progress=False)
    trainer.fit()
    dbscan_labels = trainer.pseudo_labels
    num_outliers = int((dbscan_labels < 0).sum())
    assert num_outliers > 0
    assert trainer.memory.num_clusters == int(dbscan_labels.max()) + 1 + num_outliers
    with pytest.raises(HHCLError, match="cluster.outliers"):
        load_config("base", ["cluster.outliers=keep"])


def test_init_mix_saves_the_mixture_of_the_start_and_the_trained_weights(tmp_path, tiny_config):
    from hhcl.models import build_model, load_weights

    start = tmp_path / "start.pth"
    plain = Trainer(tiny_config("train.epochs=1"), tmp_path / "plain", progress=False)
    torch.save({"model": plain.model.state_dict()}, start)
    initial = {name: tensor.clone() for name, tensor in plain.model.state_dict().items()}

    trainer = Trainer(tiny_config("train.epochs=1", f"model.init_weights={start}", "model.init_mix=0.5"),
                      tmp_path / "mixed", progress=False)
    trainer.fit()
    trained = trainer.model.state_dict()
    saved = torch.load(tmp_path / "mixed" / "model.pth", weights_only=True)["model"]
    moved = [name for name in trained if trained[name].is_floating_point()
             and not torch.equal(trained[name], initial[name])]
    assert moved
    for name in moved:
        torch.testing.assert_close(saved[name], (trained[name] + initial[name]) / 2)
    # the file loads as any model file does
    model = build_model("osnet_x0_25")
    load_weights(model, tmp_path / "mixed" / "model.pth", verbose=False)
    with pytest.raises(HHCLError, match="model.init_mix"):
        load_config("base", ["model.init_mix=1.0"])


class RecordWeights(Hook):
    """The trained weights after each optimizer step."""

    def __init__(self):
        self.steps = []

    def after_iteration(self, trainer, loss):
        self.steps.append({name: tensor.clone() for name, tensor in trainer.model.state_dict().items()})


def test_ema_decay_saves_the_moving_average_of_the_steps_mixed_with_the_start(tmp_path, tiny_config):
    start = tmp_path / "start.pth"
    torch.save({"model": Trainer(tiny_config("train.epochs=1"), None, progress=False).model.state_dict()}, start)
    recorder = RecordWeights()
    trainer = Trainer(tiny_config("train.epochs=2", f"model.init_weights={start}", "model.init_mix=0.5",
                                  "model.ema_decay=0.6"), tmp_path / "run", progress=False, hooks=[recorder])
    initial = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    trainer.fit()
    assert len(recorder.steps) == 4
    saved = model_weights(tmp_path / "run" / "model.pth")
    moved = [name for name, tensor in initial.items() if tensor.is_floating_point()
             and not torch.equal(recorder.steps[-1][name], tensor)]
    assert moved
    for name in moved:
        average = recorder.steps[0][name]  # the first step is copied, each later one weighs 1 - decay
        for step in recorder.steps[1:]:
            average = 0.6 * average + 0.4 * step[name]
        torch.testing.assert_close(saved[name], (average + initial[name]) / 2)
        assert not torch.allclose(saved[name], (recorder.steps[-1][name] + initial[name]) / 2)
    with pytest.raises(HHCLError, match="model.ema_decay"):
        load_config("base", ["model.ema_decay=1.0"])


def test_resume_continues_the_weight_average_exactly(tmp_path, tiny_config):
    config = tiny_config("train.epochs=3", "model.ema_decay=0.5")
    Trainer(config, tmp_path / "straight", progress=False).fit()
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, tmp_path / "resumed", progress=False, hooks=[InterruptAt(iteration=3)]).fit()
    Trainer(config, tmp_path / "resumed", resume=True, progress=False).fit()
    assert_same_tensors(model_weights(tmp_path / "straight" / "model.pth"),
                        model_weights(tmp_path / "resumed" / "model.pth"))


def test_separate_sources_cuts_clusters_at_the_pooled_folders(tiny_config):
    from hhcl.cluster import pseudo_labels
    from hhcl.cluster.pseudo_labels import split_clusters_by_group

    config = tiny_config("cluster.separate_sources=true", "cluster.eps=0.7")
    trainer = Trainer(config, None, progress=False)
    # pretend each camera of the toy set came from a folder of its own
    trainer.dataset.camera_sources = {camid: camid for _, _, camid in trainer.dataset.train}
    features = trainer.extract_train_features()
    assignment = trainer.assign_labels(features)
    labels, stats = assignment.labels, assignment.stats
    pooled, _ = pseudo_labels(features, eps=0.7, min_samples=4, k1=10, k2=3)
    cameras = np.array([camid for _, _, camid in trainer.dataset.train])
    assert any(len(set(cameras[pooled == c])) > 1 for c in set(pooled.tolist()) - {-1})
    np.testing.assert_array_equal(labels, split_clusters_by_group(pooled, cameras))
    assert all(len(set(cameras[labels == c])) == 1 for c in set(labels.tolist()) - {-1})
    assert stats["num_clusters"] == labels.max() + 1


def test_the_guard_keeps_the_starting_weights_when_no_cluster_is_usable(tmp_path, tiny_config, caplog):
    import json
    import logging

    start = tmp_path / "start.pth"
    torch.save({"model": Trainer(tiny_config("train.epochs=1"), None, progress=False).model.state_dict()}, start)
    config = tiny_config(f"model.init_weights={start}", "model.init_mix=0.5", "guard.enabled=true",
                         "cluster.eps=0.05", "train.epochs=3")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    initial = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="hhcl"):
        summary = trainer.fit()
    assert "pseudo-labels too weak on this pool" in caplog.text and "kept the starting model" in caplog.text
    assert trainer.trained_epochs == 0 and trainer.epoch == 1  # the next epochs would see the same features
    saved = torch.load(tmp_path / "run" / "model.pth", weights_only=True)["model"]
    for name, tensor in initial.items():
        torch.testing.assert_close(saved[name].float(), tensor.float(), atol=1e-6, rtol=0)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["guard"]["stop_reason"].startswith("pseudo-labels too weak")
    assert written["history"][0]["guard"]["decision"] == "hold"
    assert summary["trained_epochs"] == 0


def _start_file(tmp_path, tiny_config):
    start = tmp_path / "start.pth"
    torch.save({"model": Trainer(tiny_config("train.epochs=1"), None, progress=False).model.state_dict()}, start)
    return start


def _held_at_epoch_2(tiny_config, start, *overrides):
    """Epoch 1 trains (its features are the start's: no drift); epoch 2's features, the trained model's, have moved."""
    return tiny_config(f"model.init_weights={start}", "model.init_mix=0.5", "model.ema_decay=0.9", "guard.enabled=true",
                       "guard.min_cross_camera_share=0", "guard.max_drift=0.001", *overrides)


def test_a_held_epoch_undoes_the_update_whose_features_failed(tmp_path, tiny_config, caplog):
    import logging

    start = _start_file(tmp_path, tiny_config)
    trainer = Trainer(_held_at_epoch_2(tiny_config, start, "train.epochs=3"), tmp_path / "run", progress=False)
    initial = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="hhcl"):
        summary = trainer.fit()
    assert [epoch["guard"]["decision"] for epoch in summary["history"]] == ["train", "hold"]
    assert trainer.iteration > 0 and trainer.trained_epochs == 0 and summary["trained_epochs"] == 0
    assert "undid epoch 1's update" in caplog.text and "kept the starting model" in caplog.text
    saved = model_weights(tmp_path / "run" / "model.pth")
    for name, tensor in initial.items():
        torch.testing.assert_close(saved[name].float(), tensor.float(), atol=1e-6, rtol=0)


def test_a_resumed_run_undoes_the_update_made_before_it_stopped(tmp_path, tiny_config):
    start = _start_file(tmp_path, tiny_config)
    first = Trainer(_held_at_epoch_2(tiny_config, start, "train.epochs=1"), tmp_path / "run", progress=False)
    initial = {name: tensor.clone() for name, tensor in first.model.state_dict().items()}
    first.fit()
    assert first.trained_epochs == 1
    resumed = Trainer(_held_at_epoch_2(tiny_config, start, "train.epochs=2"), tmp_path / "run", resume=True,
                      progress=False)
    resumed.fit()
    assert resumed.history[-1]["guard"]["decision"] == "hold" and resumed.trained_epochs == 0
    saved = model_weights(tmp_path / "run" / "model.pth")
    for name, tensor in initial.items():
        torch.testing.assert_close(saved[name].float(), tensor.float(), atol=1e-6, rtol=0)


def test_the_guard_lets_usable_pseudo_labels_train(tiny_config):
    trainer = Trainer(tiny_config("guard.enabled=true", "guard.min_cross_camera_share=0", "train.epochs=2"), None,
                      progress=False)
    trainer.fit()
    assert trainer.trained_epochs == 2 and trainer.stop_reason is None
    guard = trainer.history[-1]["guard"]
    assert guard["decision"] == "train" and guard["clustered_share"] > 0.25
    assert guard["epoch_stability"] is not None and 0 <= guard["drift"] <= 1


def test_outlier_instances_are_trained_on_and_their_memory_rows_move(tiny_config):
    from hhcl.cluster.pseudo_labels import outliers_as_instances

    trainer = Trainer(tiny_config("cluster.outliers=instances", "cluster.eps=0.45", "train.epochs=1",
                                  "train.iters=6", "memory.mode=centroid"), None, progress=False)
    features = trainer.extract_train_features()
    assignment = trainer.assign_labels(features)
    labels = assignment.train_labels
    num_clusters = assignment.num_clusters
    assert len(labels) > num_clusters and (labels >= num_clusters).any()
    loader = trainer.build_train_loader(labels, epoch=0)
    seen = torch.cat([targets for _, targets, _ in loader])
    assert (seen >= num_clusters).any()  # one-image identities are in the batches
    trainer.fit()
    memory = trainer.memory
    start = torch.nn.functional.normalize(features, dim=1)
    instance_rows = torch.arange(num_clusters, memory.num_clusters)
    images = torch.from_numpy(np.flatnonzero(outliers_as_instances(trainer.pseudo_labels) >= num_clusters))
    moved = ~torch.isclose(memory.centroid_memory[instance_rows], start[images], atol=1e-6).all(dim=1)
    assert moved.any()


def test_a_pool_holding_a_one_image_camera_trains(tiny_config):
    from hhcl.data import load_dataset

    config = tiny_config("cluster.camera_centering=true", "train.epochs=1")
    dataset = load_dataset("synthetic", config.dataset.root, **config.dataset.options)
    path, pid, _ = dataset.train[0]
    dataset.train[0] = (path, pid, 99)  # a camera of its own
    trainer = Trainer(config, None, dataset=dataset, progress=False)
    summary = trainer.fit()
    assert trainer.trained_epochs == 1 and np.isfinite(summary["history"][0]["loss"])


def test_the_final_check_undoes_a_last_update_whose_features_fail(tmp_path, tiny_config, caplog):
    import logging

    start = _start_file(tmp_path, tiny_config)
    unchecked = Trainer(_held_at_epoch_2(tiny_config, start, "train.epochs=1"), None, progress=False)
    unchecked.fit()
    assert unchecked.trained_epochs == 1 and unchecked.history[-1]["final_guard"] is None

    trainer = Trainer(_held_at_epoch_2(tiny_config, start, "train.epochs=1", "guard.check_final=true"),
                      tmp_path / "run", progress=False)
    initial = {name: tensor.clone() for name, tensor in trainer.model.state_dict().items()}
    with caplog.at_level(logging.INFO, logger="hhcl"):
        summary = trainer.fit()
    last = summary["history"][-1]
    assert last["guard"]["decision"] == "train" and last["final_guard"]["decision"] == "hold"
    assert last["final_guard"]["drift"] > 0.001 and "check_final" in last["seconds"]
    assert trainer.trained_epochs == 0 and "undid epoch 1's update" in summary["guard"]["stop_reason"]
    assert "kept the starting model" in caplog.text and "its update: guard hold" in caplog.text
    saved = model_weights(tmp_path / "run" / "model.pth")
    for name, tensor in initial.items():
        torch.testing.assert_close(saved[name].float(), tensor.float(), atol=1e-6, rtol=0)
    # the final figures are the kept model's, measured after the undo
    assert last["metrics"] is not None and last["metrics"] == trainer.evaluate()


def test_the_final_check_keeps_a_last_update_that_passes(tiny_config):
    trainer = Trainer(tiny_config("guard.enabled=true", "guard.min_cross_camera_share=0", "guard.check_final=true",
                                  "train.epochs=2"), None, progress=False)
    trainer.fit()
    assert trainer.trained_epochs == 2 and trainer.stop_reason is None
    assert [record["final_guard"] is None for record in trainer.history] == [True, False]
    assert trainer.history[-1]["final_guard"]["decision"] == "train"
