import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from hhcl.cli import main
from hhcl.cli.train import add_arguments, overrides_from_args
from hhcl.config import load_config

TINY_SET = {"num_identities": 12, "images_per_identity": 6, "num_cameras": 3, "height": 32, "width": 16, "seed": 0,
            "camera_strength": 0.0}


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from hhcl.data import load_dataset

    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    load_dataset("synthetic", root, **TINY_SET)
    return root


def tiny_arguments(root, output, *extra):
    options = [f"dataset.options.{key}={value}" for key, value in TINY_SET.items()]
    settings = options + ["cluster.k1=10", "cluster.k2=3", "train.num_threads=1", "model.arch=osnet_x0_25"]
    return ["train", "--config", "demo", "--root", str(root), "--output", str(output), "--height", "32",
            "--width", "16", "--num-workers", "0", "--batch-size", "16", "--num-instances", "4", "--eps", "0.6",
            "--eval-every", "0", "--no-progress", *[item for setting in settings for item in ("--set", setting)],
            *extra]


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(["--output", "run", *argv])


def test_flags_map_to_config_keys_and_set_wins():
    args = parse("--loss-form", "official", "--hard-weight", "0.3", "--supervised", "--init-weights",
                 "runs/duke/model.pth", "--memory", "hybrid_instance", "--eps", "0.45", "--dataset", "folder",
                 "--root", "my crops", "--set", "cluster.eps=0.5")
    config = load_config(args.config, overrides_from_args(args))
    assert (config.memory.loss_form, config.memory.hard_weight, config.memory.mode) == ("official", 0.3,
                                                                                       "hybrid_instance")
    assert config.train.supervised is True
    assert config.model.init_weights == "runs/duke/model.pth"
    assert (config.dataset.name, config.dataset.root) == ("folder", "my crops")
    assert config.cluster.eps == 0.5  # --set is applied last
    assert load_config(args.config, overrides_from_args(parse("--parts", "3"))).model.parts == 3
    assert load_config(parse().config, overrides_from_args(parse())).train.supervised is False
    assert load_config(parse().config, overrides_from_args(parse("--compile"))).train.compile is True
    assert load_config(parse().config, overrides_from_args(parse())).train.compile is False


def test_the_ensemble_and_camera_proxy_flags_reach_their_keys():
    args = parse("--ensemble-eps", "0.5", "--camera-proxies")
    config = load_config(args.config, overrides_from_args(args))
    assert (config.cluster.ensemble_eps, config.memory.camera_proxies) == ([0.5], True)
    args = parse("--ensemble-eps", "0.5", "0.6", "0.7")
    assert load_config(args.config, overrides_from_args(args)).cluster.ensemble_eps == [0.5, 0.6, 0.7]


def test_several_roots_pool_into_one_training_set(tmp_path):
    args = parse("--dataset", "folder", "--root", "cams/a", "cams/b")
    assert load_config(args.config, overrides_from_args(args)).dataset.root == ["cams/a", "cams/b"]


def test_a_paths_that_yaml_would_misread_stay_strings():
    args = parse("--init-weights", "1e-3", "--root", "yes")
    config = load_config(args.config, overrides_from_args(args))
    assert (config.model.init_weights, config.dataset.root) == ("1e-3", "yes")


def test_unknown_key_is_one_line_on_stderr_with_exit_2(tmp_path, capsys):
    status = main(["train", "--output", str(tmp_path / "run"), "--set", "memory.temprature=0.1"])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert len(error.splitlines()) == 1
    assert "did you mean 'memory.temperature'" in error
    assert not (tmp_path / "run").exists()


def test_train_writes_a_run_folder(tmp_path, tiny_root):
    output = tmp_path / "run"
    assert main(tiny_arguments(tiny_root, output, "--epochs", "1", "--iters", "2")) == 0
    for name in ("config.yaml", "train.log", "checkpoint.pth", "model.pth", "metrics.json"):
        assert (output / name).is_file(), name
    used = load_config(output / "config.yaml")
    assert (used.train.epochs, used.train.iters, used.dataset.height) == (1, 2, 32)
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["final"] is not None
    # the epoch line ends with the whole run's clock; after the last epoch, nothing is left
    epoch_line = next(line for line in (output / "train.log").read_text().splitlines() if "epoch 1/1: " in line
                      and " img/s)" in line)
    assert re.search(r"img/s\), run \d+ (s|min \d\d s)$", epoch_line), epoch_line


def test_the_epoch_line_says_how_long_the_run_took_and_has_left():
    from hhcl.engine.run_log import EpochRecord

    record = EpochRecord.of_labels(1, [0, 0, 1, -1], loss=1.5, lr=3.5e-4, seconds={"train": 100.0},
                                   train_images_per_second=12.0)
    line = record.summary_line(3, elapsed=125.0, remaining=250.0)
    assert line.endswith("img/s), run 2 min 05 s, about 4 min 10 s left")
    assert record.summary_line(3, elapsed=3725.0, remaining=0.0).endswith("run 1 h 02 min")
    assert "run " not in record.summary_line(3)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path, tiny_root):
    arguments = tiny_arguments(tiny_root, tmp_path / "straight", "--epochs", "4", "--iters", "3")
    assert main(arguments) == 0

    killed = tmp_path / "killed"
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([sys.executable, "-m", "hhcl", *tiny_arguments(tiny_root, killed, "--epochs", "4",
                                                                              "--iters", "3")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=environment)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoint.pth").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    still_running = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    stderr = process.stderr.read().decode()
    assert still_running, f"the run ended before it could be killed: {stderr[-2000:]}"
    assert process.returncode == -signal.SIGKILL
    assert not (killed / "model.pth").exists()

    assert main(tiny_arguments(tiny_root, killed, "--epochs", "4", "--iters", "3", "--resume")) == 0
    straight = torch.load(tmp_path / "straight" / "model.pth", weights_only=True)["model"]
    resumed = torch.load(killed / "model.pth", weights_only=True)["model"]
    assert straight.keys() == resumed.keys()
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
    assert "resumed from" in (killed / "train.log").read_text()


def adapt_arguments(root, init, output, *extra):
    return ["train", "--config", "adapt", "--dataset", "folder", "--root", str(root), "--init-weights", str(init),
            "--output", str(output), "--height", "32", "--width", "16", "--num-workers", "0", "--batch-size", "16",
            "--num-instances", "4", "--iters", "2", "--no-progress", "--set", "cluster.k1=10", "--set", "cluster.k2=3",
            "--set", "train.num_threads=1", *extra]


def test_the_adapt_preset_runs_from_a_model_file_and_resumes_exactly(tmp_path, tiny_root, osnet_weights):
    init = osnet_weights

    assert main(adapt_arguments(tiny_root, init, tmp_path / "straight", "--epochs", "2")) == 0
    used = load_config(tmp_path / "straight" / "config.yaml")
    assert used.cluster.camera_centering and used.cluster.outliers == "drop" and used.guard.enabled
    assert used.model.init_mix == load_config("adapt").model.init_mix > 0
    assert main(adapt_arguments(tiny_root, init, tmp_path / "halted", "--epochs", "1")) == 0
    assert main(adapt_arguments(tiny_root, init, tmp_path / "halted", "--epochs", "2", "--resume")) == 0

    straight = torch.load(tmp_path / "straight" / "model.pth", weights_only=True)["model"]
    resumed = torch.load(tmp_path / "halted" / "model.pth", weights_only=True)["model"]
    start = torch.load(init, weights_only=True)
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert any(not torch.equal(straight[name], start[name]) for name in start if start[name].is_floating_point())
