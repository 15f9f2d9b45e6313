import json
import math

import numpy as np
import pytest
import torch

from hhcl.engine import Hook, Trainer
from hhcl.engine.checkpoint import load_checkpoint
from hhcl.engine.trainer import derived_seed
from hhcl.errors import HHCLError
from hhcl.models import build_model, load_weights
from trainer_hooks import InterruptAt, assert_same_tensors, model_weights


def _finished_run(tmp_path, config):
    output = tmp_path / "run"
    summary = Trainer(config, output, progress=False).fit()
    return output, summary


def test_a_run_writes_its_folder_and_a_loadable_model(tmp_path, tiny_config):
    config = tiny_config("evaluation.eval_every=1")
    output, summary = _finished_run(tmp_path, config)
    for name in ("config.yaml", "train.log", "checkpoint.pth", "model.pth", "metrics.json"):
        assert (output / name).is_file(), name
    assert list((output / "tensorboard").glob("events.out.tfevents.*"))
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["iterations"] == 4
    assert [record["epoch"] for record in metrics["history"]] == [1, 2]
    for record in metrics["history"]:
        assert record["num_clusters"] >= 1
        assert set(record["seconds"]) == {"extract", "cluster", "train", "evaluate"}
    # the recorded figures are those of the saved model, evaluated again from the file
    from hhcl.evaluation.model import evaluate_model
    from hhcl.retrieval.extractor import load_trained_model

    trainer_dataset = Trainer(config, None, progress=False).dataset
    again = evaluate_model(load_trained_model(None, output / "model.pth"), trainer_dataset, config)
    assert again["mAP"] == pytest.approx(metrics["history"][-1]["metrics"]["mAP"], abs=1e-6)
    assert metrics["history"][0]["metrics"] != metrics["history"][1]["metrics"]  # the model moved between epochs
    assert metrics["final"] == metrics["history"][-1]["metrics"]
    assert summary["final"] == metrics["final"]
    log_text = (output / "train.log").read_text()
    assert "epoch 2/2:" in log_text and "clusters" in log_text

    fresh = build_model("osnet_x0_25")
    initial = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = load_weights(fresh, output / "model.pth", verbose=False)
    assert not report.missing and not report.unexpected
    assert_same_tensors(fresh.state_dict(), model_weights(output / "model.pth"))
    changed = [k for k in initial if initial[k].dtype.is_floating_point and not torch.equal(initial[k], fresh.state_dict()[k])]
    assert changed, "training did not change any weight"

    checkpoint = load_checkpoint(output / "checkpoint.pth")
    assert (checkpoint["epoch"], checkpoint["iteration"]) == (2, 4)
    assert {"model", "optimizer", "scheduler", "memory", "rng"} <= set(checkpoint)
    assert checkpoint["memory"]["mode"] == "hybrid"

    # the same folder is not silently overwritten by a new run
    with pytest.raises(HHCLError, match="--resume"):
        Trainer(config, output, progress=False)


def test_resume_after_an_interruption_matches_an_uninterrupted_run(tmp_path, tiny_config):
    config = tiny_config("train.epochs=3")
    straight = tmp_path / "straight"
    Trainer(config, straight, progress=False).fit()

    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, interrupted, progress=False, hooks=[InterruptAt(iteration=3)]).fit()  # in epoch 2
    assert load_checkpoint(interrupted / "checkpoint.pth")["epoch"] == 1
    assert not (interrupted / "model.pth").exists()
    resumed = Trainer(config, interrupted, resume=True, progress=False)
    assert (resumed.epoch, resumed.iteration) == (1, 2)
    resumed.fit()

    assert_same_tensors(model_weights(straight / "model.pth"), model_weights(interrupted / "model.pth"))
    final_straight = load_checkpoint(straight / "checkpoint.pth")
    final_resumed = load_checkpoint(interrupted / "checkpoint.pth")
    assert_same_tensors(final_straight["memory"]["state"], final_resumed["memory"]["state"])
    assert final_straight["iteration"] == final_resumed["iteration"] == 6
    history_straight = json.loads((straight / "metrics.json").read_text())["history"]
    history_resumed = json.loads((interrupted / "metrics.json").read_text())["history"]
    assert [r["loss"] for r in history_straight] == [r["loss"] for r in history_resumed]


class PoisonWeightsAt(Hook):
    """Makes the model produce NaN after a given optimizer step, as a diverging run does."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_iteration(self, trainer, loss):
        if trainer.iteration == self.iteration:
            with torch.no_grad():
                trainer.model.neck.weight.fill_(float("nan"))


def test_a_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path, tiny_config):
    config = tiny_config("train.epochs=3")
    output = tmp_path / "run"
    with pytest.raises(HHCLError) as error:
        Trainer(config, output, progress=False, hooks=[PoisonWeightsAt(iteration=3)]).fit()
    message = str(error.value)
    assert "loss became nan at epoch 2, iteration 2" in message and "\n" not in message
    assert str(output / "checkpoint.pth") in message
    checkpoint = load_checkpoint(output / "checkpoint.pth")
    assert checkpoint["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values() if v.dtype.is_floating_point)
    assert not (output / "model.pth").exists()


def test_no_cluster_stops_with_distance_quantiles_and_a_suggested_eps(tmp_path, tiny_config):
    config = tiny_config("cluster.eps=0.001", "cluster.min_samples=5")
    with pytest.raises(HHCLError) as error:
        Trainer(config, tmp_path / "run", progress=False).fit()
    message = str(error.value)
    assert "no cluster" in message and "q50" in message and "--set cluster.eps=" in message
    suggested = float(message.rsplit("cluster.eps=", 1)[1])
    assert 0.001 < suggested <= 1.0
    assert "\n" not in message


def test_supervised_mode_trains_on_the_identities(tmp_path, tiny_config):
    config = tiny_config("train.supervised=true", "train.epochs=1")
    output, summary = _finished_run(tmp_path, config)
    record = summary["history"][0]
    assert (record["num_clusters"], record["num_outliers"]) == (12, 0)


def test_init_weights_start_from_a_model_file(tmp_path, tiny_config):
    source = build_model("osnet_x0_25")
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(0.5)
    path = tmp_path / "source.pth"
    torch.save({"model": source.state_dict()}, path)
    trainer = Trainer(tiny_config(f"model.init_weights={path}"), None, progress=False)
    assert_same_tensors({k: v.cpu() for k, v in trainer.model.state_dict().items()}, source.state_dict())


def test_select_best_warns_that_it_uses_test_labels(tmp_path, tiny_config):
    config = tiny_config("evaluation.eval_every=1", "evaluation.select_best=true")
    output = tmp_path / "run"
    with pytest.warns(UserWarning, match="test labels"):
        summary = Trainer(config, output, progress=False).fit()
    maps = [record["metrics"]["mAP"] for record in summary["history"]]
    assert summary["selected_by_test_labels"] is True
    assert summary["selected_epoch"] == 1 + int(np.argmax(maps))
    assert summary["final"]["mAP"] == max(maps)
    assert_same_tensors(model_weights(output / "model.pth"), model_weights(output / "model_best.pth"))


@pytest.mark.parametrize("mode", ["centroid", "hard", "hybrid_instance"])
def test_every_memory_mode_trains(tmp_path, tiny_config, mode):
    config = tiny_config(f"memory.mode={mode}", "train.epochs=1")
    trainer = Trainer(config, None, progress=False)
    summary = trainer.fit()
    assert trainer.memory.mode == mode
    assert math.isfinite(summary["history"][0]["loss"])


def test_official_loss_form_reaches_the_memory(tiny_config):
    trainer = Trainer(tiny_config("memory.loss_form=official", "memory.hard_weight=0.3"), None, progress=False)
    features = trainer.extract_train_features()
    labels = trainer.assign_labels(features).labels
    memory = trainer.build_memory(features, labels, epoch=0)
    assert (memory.loss_form, memory.hard_weight) == ("official", 0.3)
    # the memory starts from the normalised cluster means
    first = torch.from_numpy(labels) == 0
    expected = torch.nn.functional.normalize(features[first].mean(0), dim=0)
    assert torch.allclose(memory.centroid_memory[0], expected, atol=1e-6)
    assert torch.allclose(memory.hard_memory[0], expected, atol=1e-6)


def test_fp16_on_cpu_is_refused(tiny_config):
    with pytest.raises(HHCLError, match="fp16"):
        Trainer(tiny_config("train.precision=fp16", "train.device=cpu"), None, progress=False)


def test_derived_seeds_are_stable_and_distinct():
    assert derived_seed(1, "sampler", 0, 0) == derived_seed(1, "sampler", 0, 0)
    seeds = {derived_seed(1, "sampler", epoch, rank) for epoch in range(5) for rank in range(2)}
    assert len(seeds) == 10
    assert all(0 <= seed < 2**31 for seed in seeds)


def test_auto_threads_are_recorded_and_a_resumed_run_keeps_them(tmp_path, tiny_config, monkeypatch, caplog):
    from hhcl.engine import runtime

    previous = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1}, raising=False)
    config = tiny_config("train.num_threads=0", "train.epochs=2")
    run = tmp_path / "run"
    try:
        monkeypatch.setattr(runtime, "busy_cores", lambda: 1.0)  # another job holds a core: one thread
        with pytest.raises(KeyboardInterrupt):
            Trainer(config, run, progress=False, hooks=[InterruptAt(iteration=3)]).fit()
        assert "CPU threads: 1 (auto: 1.0 of 2 cores busy at the start)" in (run / "train.log").read_text()
        assert load_checkpoint(run / "checkpoint.pth")["num_threads"] == 1

        monkeypatch.setattr(runtime, "busy_cores", lambda: 0.0)  # idle at resume: auto alone would take two
        resumed = Trainer(config, run, resume=True, progress=False)
        assert resumed.num_threads == torch.get_num_threads() == 1
        assert resumed.fit()["num_threads"] == 1
    finally:
        torch.set_num_threads(previous)


def test_a_vit_with_overlapping_patches_trains_end_to_end_and_reloads(tmp_path, tiny_config):
    from hhcl.retrieval.extractor import load_trained_model

    config = tiny_config("model.arch=vit_small", "model.patch_stride=12", "train.epochs=1", "train.iters=1")
    Trainer(config, tmp_path / "run", progress=False).fit()
    model = load_trained_model(None, tmp_path / "run" / "model.pth")
    assert model.build_options["patch_stride"] == 12
    assert model.backbone.patch_embed.proj.stride == (12, 12)
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 16)).shape == (2, 384)


def test_parts_train_end_to_end_and_the_model_file_rebuilds_them(tmp_path, tiny_config):
    from hhcl.memory import PartMemory
    from hhcl.retrieval.extractor import load_trained_model

    config = tiny_config("model.parts=2", "train.epochs=1")
    trainer = Trainer(config, tmp_path / "run", progress=False)
    summary = trainer.fit()
    assert math.isfinite(summary["history"][0]["loss"])
    assert isinstance(trainer.memory, PartMemory) and len(trainer.memory.part_memories) == 2
    model = load_trained_model(None, tmp_path / "run" / "model.pth")
    assert model.build_options["parts"] == 2 and model.feature_dim == 3 * 512
    images = torch.randn(3, 3, 32, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(images), trainer.model.eval()(images), rtol=0, atol=0)


def test_parts_cluster_on_the_global_piece_and_fill_each_memory_from_its_own(tiny_config, monkeypatch):
    import hhcl.cluster.assign
    from hhcl.models.head import global_features

    trainer = Trainer(tiny_config("model.parts=2"), None, progress=False)
    features = trainer.extract_train_features()
    assert features.shape == (len(trainer.dataset.train), 3 * 512)
    clustered = []
    assign = hhcl.cluster.assign.assign_pseudo_labels

    def recording_assign(features, *args, **kwargs):
        clustered.append(features)
        return assign(features, *args, **kwargs)

    monkeypatch.setattr(hhcl.cluster.assign, "assign_pseudo_labels", recording_assign)
    labels = trainer.assign_labels(features).labels
    assert torch.equal(clustered[0], global_features(features, 2))
    memory = trainer.build_memory(features, labels, epoch=0)
    first = torch.from_numpy(labels) == 0
    pieces = features[first].unflatten(1, (3, 512)).mean(0)
    torch.testing.assert_close(memory.global_memory.centroid_memory[0], torch.nn.functional.normalize(pieces[0], dim=0))
    for index, part_memory in enumerate(memory.part_memories):
        torch.testing.assert_close(part_memory.centroid_memory[0],
                                   torch.nn.functional.normalize(pieces[1 + index], dim=0))


def test_a_run_with_parts_resumes_exactly_and_refuses_to_resume_without_them(tmp_path, tiny_config):
    config = tiny_config("model.parts=2", "train.iters=1")
    straight = tmp_path / "straight"
    Trainer(config, straight, progress=False).fit()
    interrupted = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        Trainer(config, interrupted, progress=False, hooks=[InterruptAt(iteration=2)]).fit()  # in epoch 2
    with pytest.raises(HHCLError, match=r"parts 2 \(now 0\)") as error:
        Trainer(tiny_config("train.iters=1"), interrupted, resume=True, progress=False)
    assert "\n" not in str(error.value)
    Trainer(config, interrupted, resume=True, progress=False).fit()
    assert_same_tensors(model_weights(straight / "model.pth"), model_weights(interrupted / "model.pth"))
