"""Bad inputs as a user meets them on the command line, corrupt files, and one writer per run folder.

Every case asserts: a non-zero exit status, no traceback, one error line naming the path or value,
and no earlier file lost.
"""

import builtins
import errno
import io
import json
import logging
import os
import pickle
import resource
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from hhcl.cli import main
from hhcl.errors import HHCLError

TINY_SET = {"num_identities": 12, "images_per_identity": 6, "num_cameras": 3, "height": 32, "width": 16, "seed": 0,
            "camera_strength": 0.0}
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root ignores file permissions (see owner_permissions)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    from hhcl.data import load_dataset

    root = tmp_path_factory.mktemp("tiny") / "synthetic"
    load_dataset("synthetic", root, **TINY_SET)
    return root


def train_arguments(root: Path, output: Path, *extra: str) -> list[str]:
    settings = [f"dataset.options.{key}={value}" for key, value in TINY_SET.items()]
    settings += ["cluster.k1=10", "cluster.k2=3", "train.num_threads=1", "model.arch=osnet_x0_25"]
    return ["train", "--config", "demo", "--root", str(root), "--output", str(output), "--height", "32",
            "--width", "16", "--num-workers", "0", "--batch-size", "16", "--num-instances", "4", "--eps", "0.6",
            "--iters", "2", "--eval-every", "0", "--no-progress",
            *[item for setting in settings for item in ("--set", setting)], *extra]


@pytest.fixture(scope="module")
def finished_run(tiny_root, tmp_path_factory) -> Path:
    """The run folder of a one-epoch tiny training: checkpoint.pth, model.pth..."""
    output = tmp_path_factory.mktemp("runs") / "run"
    assert main(train_arguments(tiny_root, output, "--epochs", "1")) == 0
    return output


def the_error_line(stderr: str, command: str) -> str:
    """The one error line of ``hhcl COMMAND``; fails on a traceback or several error lines."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith(f"hhcl {command}: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    status = main(argv)
    return status, capsys.readouterr().err


def default_ctrl_c() -> None:
    """In a child before it starts: SIGINT's default action, whatever the test runner inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def hhcl_process(*argv: str, preexec_fn=None, **options) -> subprocess.Popen:
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options}
    return subprocess.Popen([sys.executable, "-m", "hhcl", *argv], text=True, preexec_fn=preexec_fn, **options)


def flip_middle_byte_of_largest_tensor(path: Path, tensors: dict) -> None:
    """Flip one bit in the middle of the file's largest tensor, as a bad disk or copy would."""
    largest = max(tensors.values(), key=lambda tensor: tensor.numel())
    data = largest.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    content = bytearray(path.read_bytes())
    start = content.index(data)
    content[start + len(data) // 2] ^= 0x10
    path.write_bytes(bytes(content))


# -- corrupt files ----------------------------------------------------------------------------------


def test_a_flipped_byte_in_a_real_model_file_and_checkpoint_is_refused(finished_run, tiny_root, tmp_path, capsys):
    model_file, checkpoint_file = tmp_path / "model.pth", tmp_path / "checkpoint.pth"
    model_file.write_bytes((finished_run / "model.pth").read_bytes())
    checkpoint_file.write_bytes((finished_run / "checkpoint.pth").read_bytes())
    flip_middle_byte_of_largest_tensor(model_file, torch.load(model_file, weights_only=True)["model"])
    flip_middle_byte_of_largest_tensor(checkpoint_file, torch.load(checkpoint_file, weights_only=True)["model"])

    status, stderr = run_cli(["extract", "--weights", str(model_file), "--images", str(tiny_root / "query"),
                              "--output", str(tmp_path / "features.npz")], capsys)
    assert status == 2
    assert f"{model_file} is corrupt" in the_error_line(stderr, "extract")
    assert not (tmp_path / "features.npz").exists()

    corrupt = checkpoint_file.read_bytes()
    status, stderr = run_cli(train_arguments(tiny_root, tmp_path / "resumed", "--epochs", "2", "--resume",
                                             str(checkpoint_file)), capsys)
    assert status == 2
    assert f"{checkpoint_file} is corrupt" in the_error_line(stderr, "train")
    assert checkpoint_file.read_bytes() == corrupt  # never loaded, never rewritten


# -- the table of bad inputs ------------------------------------------------------------------------


def output_is_a_file(tmp_path, tiny_root, finished_run):
    blocker = tmp_path / "results.txt"
    blocker.write_text("kept")
    return train_arguments(tiny_root, blocker), str(blocker), [blocker]


def read_only_output(tmp_path, tiny_root, finished_run):
    folder = tmp_path / "readonly"
    folder.mkdir()
    folder.chmod(0o555)
    return train_arguments(tiny_root, folder / "run"), str(folder), []


def unreadable_data_folder(tmp_path, tiny_root, finished_run):
    folder = tmp_path / "crops"
    folder.mkdir()
    (folder / "a.jpg").write_bytes((tiny_root / "query").iterdir().__next__().read_bytes())
    folder.chmod(0o000)
    return (["extract", "--weights", str(finished_run / "model.pth"), "--images", str(folder), "--output",
             str(tmp_path / "f.npz")], str(folder), [])


def unreadable_weights(tmp_path, tiny_root, finished_run):
    weights = tmp_path / "model.pth"
    weights.write_bytes((finished_run / "model.pth").read_bytes())
    weights.chmod(0o000)
    return (["extract", "--weights", str(weights), "--images", str(tiny_root / "query"), "--output",
             str(tmp_path / "f.npz")], str(weights), [])


def small_folder_dataset(root: Path, tiny_root: Path) -> Path:
    """Three images of each split of the tiny set, in the ``folder`` layout under ``root``."""
    for split in ("train", "query", "gallery"):
        (root / split).mkdir(parents=True)
        for image in sorted((tiny_root / split).iterdir())[:3]:
            (root / split / image.name).write_bytes(image.read_bytes())
    return root


def unreadable_image(tmp_path, tiny_root, finished_run):
    root = small_folder_dataset(tmp_path / "crops", tiny_root)
    image = sorted((root / "train").iterdir())[1]
    image.chmod(0o000)
    return (["datasets", "info", "folder", "--root", str(root), "--check-images", "--strict"],
            f"cannot read image {image}: no read permission on the file", [])


def symlink_loop_in_data(tmp_path, tiny_root, finished_run):
    folder = tmp_path / "crops" / "train"
    folder.mkdir(parents=True)
    (folder / "0001_c1_0001.jpg").write_bytes(next((tiny_root / "query").iterdir()).read_bytes())
    (folder / "loop.jpg").symlink_to("loop.jpg")
    return (["datasets", "info", "folder", "--root", str(tmp_path / "crops"), "--pattern", ""],
            str(folder / "loop.jpg"), [folder / "0001_c1_0001.jpg"])


def symlink_cycle_in_images(tmp_path, tiny_root, finished_run):
    folder = tmp_path / "crops"
    folder.mkdir()
    (folder / "a.jpg").symlink_to("b.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    return (["extract", "--weights", str(finished_run / "model.pth"), "--images", str(folder), "--output",
             str(tmp_path / "f.npz")], f"{folder}{os.sep}", [])  # a.jpg or b.jpg, whichever is listed first


def symlink_loop_in_a_training_set(tmp_path, tiny_root, finished_run):
    root = small_folder_dataset(tmp_path / "crops", tiny_root)
    images = sorted((root / "train").iterdir())
    (root / "train" / "loop.jpg").symlink_to("loop.jpg")
    return (["train", "--dataset", "folder", "--root", str(root), "--output", str(tmp_path / "run"), "--no-progress"],
            str(root / "train" / "loop.jpg"), images)


def symlink_loop_in_a_search_gallery(tmp_path, tiny_root, finished_run):
    gallery = tmp_path / "gallery"
    gallery.mkdir()
    query = next((tiny_root / "query").iterdir())
    (gallery / query.name).write_bytes(query.read_bytes())
    (gallery / "loop.jpg").symlink_to("loop.jpg")
    return (["search", "--weights", str(finished_run / "model.pth"), "--query", str(query), "--gallery", str(gallery),
             "--output", str(tmp_path / "ranked")], str(gallery / "loop.jpg"), [gallery / query.name])


def resume_with_another_arch(tmp_path, tiny_root, finished_run):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pth").write_bytes((finished_run / "checkpoint.pth").read_bytes())
    return (train_arguments(tiny_root, run, "--epochs", "2", "--resume", "--set", "model.arch=resnet18"),
            "arch 'osnet_x0_25' (now 'resnet18')", [run / "checkpoint.pth"])


def malicious_pickle(tmp_path, tiny_root, finished_run):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    weights = tmp_path / "model.pth"
    torch.save({"model": RunsCode()}, weights)
    return (["extract", "--weights", str(weights), "--arch", "osnet_x0_25", "--images", str(tiny_root / "query"),
             "--output", str(tmp_path / "f.npz")], f"{weights} holds code", [weights])


def resume_from_a_checkpoint_that_holds_code(tmp_path, tiny_root, finished_run):
    class RunsCode:
        def __reduce__(self):
            return (os.system, ("echo should never run",))

    run = tmp_path / "run"
    run.mkdir()
    torch.save({"model": RunsCode(), "epoch": 1}, run / "checkpoint.pth")
    return (train_arguments(tiny_root, run, "--epochs", "2", "--resume"), f"{run / 'checkpoint.pth'} holds code",
            [run / "checkpoint.pth"])


def raw_pickle(tmp_path, tiny_root, finished_run):
    weights = tmp_path / "model.pkl"
    weights.write_bytes(pickle.dumps({"model": np.zeros(3)}))
    return (["extract", "--weights", str(weights), "--arch", "osnet_x0_25", "--images", str(tiny_root / "query"),
             "--output", str(tmp_path / "f.npz")], f"{weights} is a pickle that safe loading refuses", [weights])


def export_height_zero(tmp_path, tiny_root, finished_run):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return (["export", "--weights", str(finished_run / "model.pth"), "--output", str(tmp_path / "m.onnx"),
             "--height", "0"], "--height 0 is not positive", [])


def device_tpu(tmp_path, tiny_root, finished_run):
    return train_arguments(tiny_root, tmp_path / "run", "--device", "tpu"), "'tpu'", []


def num_instances_zero(tmp_path, tiny_root, finished_run):
    return (train_arguments(tiny_root, tmp_path / "run", "--num-instances", "0"),
            "override 'train.num_instances=0': train.num_instances = 0 is invalid; it must be at least 1", [])


def batch_size_zero(tmp_path, tiny_root, finished_run):
    return (train_arguments(tiny_root, tmp_path / "run", "--batch-size", "0"),
            "train.batch_size = 0 is invalid; it must be a positive number", [])


CASES = [
    pytest.param(num_instances_zero, id="num-instances-0"),
    pytest.param(batch_size_zero, id="batch-size-0"),
    pytest.param(output_is_a_file, id="output-is-a-file"),
    pytest.param(read_only_output, id="read-only-output"),
    pytest.param(unreadable_data_folder, id="unreadable-data-folder"),
    pytest.param(unreadable_weights, id="unreadable-weights"),
    pytest.param(unreadable_image, id="unreadable-image"),
    pytest.param(symlink_loop_in_data, id="symlink-loop-in-a-dataset"),
    pytest.param(symlink_loop_in_a_training_set, id="symlink-loop-in-a-training-set"),
    pytest.param(symlink_cycle_in_images, id="symlink-cycle-in-images"),
    pytest.param(symlink_loop_in_a_search_gallery, id="symlink-loop-in-a-search-gallery"),
    pytest.param(resume_with_another_arch, id="resume-with-another-arch"),
    pytest.param(malicious_pickle, id="weights-that-hold-code"),
    pytest.param(resume_from_a_checkpoint_that_holds_code, id="resume-from-a-checkpoint-that-holds-code"),
    pytest.param(raw_pickle, id="a-raw-pickle"),
    pytest.param(export_height_zero, id="export-height-0"),
    pytest.param(device_tpu, id="device-tpu"),
]


def owner_permissions(monkeypatch) -> None:
    """Make the OS calls hhcl reads and writes files with check the owner's permission bits, as the
    kernel does for an ordinary user and does not for root: the permission cases then run as root too."""

    def refused(path, bits: int) -> bool:
        if isinstance(path, int):  # a file descriptor: checked when it was opened
            return False
        path = Path(os.path.abspath(os.fsdecode(path)))
        if any(parent.exists() and not parent.stat().st_mode & stat.S_IXUSR for parent in path.parents):
            return True
        return path.exists() and (path.stat().st_mode & bits) != bits

    def check(path, bits: int, creating: bool = False) -> None:
        target = os.path.dirname(os.path.abspath(path)) if creating else path
        if refused(target, bits):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def check_open(path, writing: bool) -> None:
        if not writing:
            check(path, stat.S_IRUSR)
        elif isinstance(path, int) or os.path.exists(path):
            check(path, stat.S_IWUSR)
        else:  # a new file: the folder must be writable
            check(path, stat.S_IWUSR | stat.S_IXUSR, creating=True)

    def access(path, mode, *args, **kwargs):
        bits = ((stat.S_IRUSR if mode & os.R_OK else 0) | (stat.S_IWUSR if mode & os.W_OK else 0)
                | (stat.S_IXUSR if mode & os.X_OK else 0))
        return real["access"](path, mode, *args, **kwargs) and not refused(path, bits)

    def listing(name):
        def call(path=".", *args, **kwargs):
            check(path, stat.S_IRUSR | stat.S_IXUSR)
            return real[name](path, *args, **kwargs)
        return call

    def mkdir(path, *args, **kwargs):
        check(path, stat.S_IWUSR | stat.S_IXUSR, creating=True)
        return real["mkdir"](path, *args, **kwargs)

    def open_file(file, mode="r", *args, **kwargs):
        check_open(file, any(flag in mode for flag in "wax+"))
        return real["open"](file, mode, *args, **kwargs)

    def os_open(path, flags, *args, **kwargs):
        check_open(path, bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)))
        return real["os_open"](path, flags, *args, **kwargs)

    real = {"access": os.access, "scandir": os.scandir, "listdir": os.listdir, "mkdir": os.mkdir,
            "open": builtins.open, "os_open": os.open}
    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr(os, "scandir", listing("scandir"))
    monkeypatch.setattr(os, "listdir", listing("listdir"))
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(builtins, "open", open_file)
    monkeypatch.setattr(io, "open", open_file)


@pytest.mark.parametrize("make_case", CASES)
def test_a_bad_input_is_one_line_that_names_it(make_case, tmp_path, tiny_root, finished_run, capsys, monkeypatch):
    argv, named, kept = make_case(tmp_path, tiny_root, finished_run)
    if AS_ROOT:
        owner_permissions(monkeypatch)
    before = {path: path.read_bytes() for path in kept}
    try:
        status, stderr = run_cli(argv, capsys)
    finally:
        for path in tmp_path.rglob("*"):  # let pytest clean up what the case locked
            if not path.is_symlink():
                path.chmod(0o755)
    assert status == 2
    line = the_error_line(stderr, argv[0])
    assert named in line
    assert "weights_only" not in line  # hhcl never advises unpickling an untrusted file
    assert {path: path.read_bytes() for path in kept} == before


def test_evaluate_features_with_an_empty_query_set_is_one_line():
    from hhcl.evaluation import evaluate_features

    with pytest.raises(HHCLError, match="the query set is empty") as error:
        evaluate_features(np.zeros((0, 4)), np.ones((3, 4)), [], [1, 2, 3], [], [0, 1, 0])
    assert "\n" not in str(error.value)


def test_one_pseudo_identity_is_said_and_the_epoch_trains_nothing(tiny_root, tmp_path, capsys, caplog):
    """Every image in one cluster: the loss would be 0. A warning-level line, exit 0, no update."""
    output = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="hhcl"):
        status, stderr = run_cli(train_arguments(tiny_root, output, "--epochs", "2", "--eps", "0.99"), capsys)
    assert status == 0 and "Traceback" not in stderr, stderr
    said = [record for record in caplog.records if "one pseudo-identity" in record.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING and "lower cluster.eps" in said[0].getMessage()
    written = json.loads((output / "metrics.json").read_text())
    assert written["trained_epochs"] == 0 and written["iterations"] == 0


# -- a full disk ------------------------------------------------------------------------------------


def file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    return apply


def test_a_full_disk_while_saving_a_checkpoint_keeps_the_previous_one(finished_run, tiny_root, tmp_path):
    from hhcl.engine.checkpoint import load_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    for name in ("checkpoint.pth", "config.yaml"):
        (run / name).write_bytes((finished_run / name).read_bytes())
    limit = (run / "checkpoint.pth").stat().st_size // 2
    process = hhcl_process(*train_arguments(tiny_root, run, "--epochs", "2", "--resume"),
                           preexec_fn=file_size_limit(limit))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2
    line = the_error_line(stderr, "train")
    assert f"cannot write {run / 'checkpoint.pth'}" in line and "previous file" in line
    assert load_checkpoint(run / "checkpoint.pth")["epoch"] == 1
    assert not list(run.glob(".*.tmp-*"))


def test_a_full_disk_while_writing_features_keeps_the_previous_file(finished_run, tiny_root, tmp_path):
    output = tmp_path / "features.npz"
    output.write_bytes(b"an earlier file")
    process = hhcl_process("extract", "--weights", str(finished_run / "model.pth"), "--images",
                           str(tiny_root / "query"), "--output", str(output), preexec_fn=file_size_limit(4096))
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 2
    assert f"cannot write {output}" in the_error_line(stderr, "extract")
    assert output.read_bytes() == b"an earlier file"


# -- one writer per run folder ----------------------------------------------------------------------


def wait_for(condition, process: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the training ended early: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail("the training did not reach the expected point")
        time.sleep(0.2)


@pytest.mark.skipif(os.name != "posix", reason="fcntl locks and signals of POSIX")
def test_one_training_per_run_folder_and_a_killed_one_does_not_block_resume(tiny_root, tmp_path):
    run = tmp_path / "run"
    # Weights that do not move keep every epoch's pseudo-labels those of the first. Trained for real,
    # the tiny network from scratch may collapse into one cluster after some epochs while the suite
    # is loaded, and then the run ends by itself (exit 0) before the Ctrl-C arrives.
    steady = ("--set", "optim.lr=1e-12", "--set", "model.freeze_bn=true")
    long_run = train_arguments(tiny_root, run, "--epochs", "1000", *steady)
    # Its log goes to a file, as on a terminal (a pipe nobody reads fills and blocks the run), and it
    # starts with Ctrl-C's default action: a suite launched in the background (`.ci/run &`) ignores
    # SIGINT, its children inherit that, and Python then installs no KeyboardInterrupt handler.
    first_log = tmp_path / "first.stderr"
    with first_log.open("w") as log_file:  # the child holds its own copy of the file
        first = hhcl_process(*long_run, stderr=log_file, preexec_fn=default_ctrl_c)
    wait_for(lambda: (run / "checkpoint.pth").is_file(), first)

    second = hhcl_process(*long_run)
    _, stderr = second.communicate(timeout=300)
    assert second.returncode == 2
    line = the_error_line(stderr, "train")
    assert f"{run} is in use by process {first.pid} (started " in line
    assert "choose another --output or wait" in line

    assert first.poll() is None, "the long training ended by itself: " + first_log.read_text()[-2000:]
    first.send_signal(signal.SIGINT)  # Ctrl-C
    first.communicate(timeout=300)
    stderr = first_log.read_text()
    assert first.returncode == 130, stderr[-2000:]
    line = the_error_line(stderr, "train")
    assert "interrupted after epoch " in line and "--resume`" in line and str(run) in line

    killed = hhcl_process(*long_run, "--resume")
    wait_for(lambda: str(killed.pid) in (run / ".lock").read_text(), killed)
    killed.kill()
    killed.wait()
    stray = run / f".checkpoint.pth.tmp-{killed.pid}"
    stray.write_bytes(bytes(12345))  # as a kill during a save leaves it

    resumed = hhcl_process(*train_arguments(tiny_root, run, "--epochs", "1", "--resume", *steady))
    _, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "removed 1 unfinished temporary file(s) of killed runs" in stderr and "12.3 kB freed" in stderr
    assert not stray.exists() and (run / "model.pth").is_file()
