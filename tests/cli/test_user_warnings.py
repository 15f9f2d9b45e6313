"""Warnings during a command: known harmless ones not shown, every other one a single line."""

import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import hhcl.cli.config
from cli_helpers import run_cli
from hhcl.cli.user_warnings import one_line


@pytest.fixture
def config_list_that_warns(monkeypatch):
    """``hhcl config list`` that first runs ``trigger`` (a warning raised in the middle of a command)."""
    original = hhcl.cli.config.run

    def warn_first(trigger):
        def run(args):
            trigger()
            return original(args)

        monkeypatch.setattr(hhcl.cli.config, "run", run)  # build_parser reads it when main is called

    return warn_first


def run_recording(capsys, *argv):
    """``hhcl *argv`` under an outer 'always' filter, as ``PYTHONWARNINGS=always`` would run it:
    stderr, and the warnings that reached Python's own display instead of hhcl's."""
    with warnings.catch_warnings(record=True) as reached_python:
        warnings.simplefilter("always")
        status, _, err = run_cli(capsys, *argv)
    assert status == 0, err
    return err, reached_python


def fork_in_a_threaded_process():  # as Python >= 3.12 says it when a DataLoader forks its workers
    warnings.warn_explicit("This process (pid=4242) is multi-threaded, use of fork() may lead to deadlocks in the "
                           "child.", DeprecationWarning, "/usr/lib/python3.12/multiprocessing/popen_fork.py", 66,
                           module="multiprocessing.popen_fork")


@pytest.mark.parametrize("trigger", [
    pytest.param(lambda: torch.zeros(2).storage(), id="torch-typed-storage"),  # torch's own, for real
    pytest.param(fork_in_a_threaded_process, id="fork-with-threads"),
    pytest.param(lambda: warnings.warn("builtin type swigvarlink has no __module__ attribute", DeprecationWarning),
                 id="faiss-swig"),
])
def test_a_known_harmless_warning_is_not_shown(config_list_that_warns, capsys, trigger):
    config_list_that_warns(trigger)
    err, reached_python = run_recording(capsys, "config", "list")
    assert err == "" and reached_python == []


def test_any_other_warning_is_one_line_without_the_source(config_list_that_warns, capsys):
    def hhcl_warns():
        warnings.warn("k1=30 is larger than the 12 images; using k1=12", stacklevel=2)
        warnings.warn("k1=30 is larger than the 12 images; using k1=12", stacklevel=1)  # another place: not again
        warnings.warn("a new\n  torch notice", FutureWarning)

    config_list_that_warns(hhcl_warns)
    err, reached_python = run_recording(capsys, "config", "list")
    assert reached_python == []
    assert err.splitlines() == ["hhcl: warning: k1=30 is larger than the 12 images; using k1=12 (UserWarning)",
                                "hhcl: warning: a new torch notice (FutureWarning)"]
    assert __file__ not in err and "warnings.warn" not in err


def test_the_deterministic_alert_in_hhcl_words():
    alert = ("adaptive_avg_pool2d_backward_cuda does not have a deterministic implementation, but you set "
             "'torch.use_deterministic_algorithms(True, warn_only=True)'. You can file an issue at "
             "https://github.com/pytorch/pytorch/issues to help us prioritize adding deterministic support for "
             "this operation.")
    assert one_line(UserWarning(alert), UserWarning) == (
        "hhcl: warning: adaptive_avg_pool2d_backward_cuda has no deterministic implementation on this device: "
        "train.deterministic cannot make this run repeat bit-identically (UserWarning)")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="torch counts the usable cores with it")
def test_too_many_loader_workers_is_said_once_in_hhcl_words(tmp_path, osnet_weights):
    """A real torch warning in a real ``hhcl`` process: DataLoader's worker count, which torch says twice."""
    images = tmp_path / "images"
    images.mkdir()
    for index in range(3):
        Image.fromarray(np.full((32, 16, 3), 40 * index, dtype=np.uint8)).save(images / f"{index}.png")
    workers = len(os.sched_getaffinity(0)) + 1
    process = subprocess.run(
        [sys.executable, "-m", "hhcl", "extract", "--weights", str(osnet_weights), "--arch", "osnet_x0_25",
         "--images", str(images), "--output", str(tmp_path / "f.npz"), "--height", "32", "--width", "16",
         "--num-workers", str(workers), "--no-progress"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONWARNINGS": ""})
    assert process.returncode == 0, process.stderr
    assert "dataloader.py" not in process.stderr and "check_worker_number_rationality" not in process.stderr
    assert [line for line in process.stderr.splitlines() if "warning" in line.lower()] == [
        f"hhcl: warning: --num-workers {workers} starts more loader processes than the "
        f"{len(os.sched_getaffinity(0))} CPU cores this process may use; fewer may be faster (UserWarning)"]
