import os
import resource
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch

from hhcl.checksum import payload_sha256, verified, with_checksum
from hhcl.errors import HHCLError
from hhcl.files import (
    atomic_file,
    describe_bytes,
    remove_stray_temporaries,
    stray_temporaries,
    temporary_path,
    write_bytes_atomically,
)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_atomic_file_replaces_the_target_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_bytes_atomically(target, "one")
    write_bytes_atomically(target, "two")
    assert target.read_text() == "two"
    assert [path.name for path in tmp_path.iterdir()] == ["metrics.json"]


def test_an_error_inside_the_block_keeps_the_previous_file(tmp_path):
    target = tmp_path / "features.npz"
    target.write_bytes(b"previous")
    with pytest.raises(ZeroDivisionError):
        with atomic_file(target) as temporary:
            temporary.write_bytes(b"half")
            1 / 0
    assert target.read_bytes() == b"previous"
    assert [path.name for path in tmp_path.iterdir()] == ["features.npz"]


def _small_file_size_limit():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))


def test_a_full_disk_is_a_one_line_error_and_the_previous_file_stays(tmp_path):
    target = tmp_path / "checkpoint.pth"
    target.write_bytes(b"previous")
    script = ("from hhcl.errors import HHCLError\nfrom hhcl.files import write_bytes_atomically\n"
              f"try:\n    write_bytes_atomically({str(target)!r}, bytes(100000))\n"
              "except HHCLError as error:\n    print(error)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            preexec_fn=_small_file_size_limit, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and f"cannot write {target}" in result.stdout
    assert "free some space" in result.stdout
    assert target.read_bytes() == b"previous"
    assert [path.name for path in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_only_the_temporaries_of_dead_processes_are_stray(tmp_path):
    dead = dead_pid()
    stray_file = tmp_path / f".checkpoint.pth.tmp-{dead}"
    stray_file.write_bytes(bytes(1500))
    stray_folder = tmp_path / f".synthetic.tmp-{dead}-x1y2"
    (stray_folder / "train").mkdir(parents=True)
    (stray_folder / "train" / "a.jpg").write_bytes(bytes(500))
    ours = temporary_path(tmp_path / "model.pth")
    ours.write_bytes(b"being written")
    (tmp_path / "checkpoint.pth").write_bytes(b"kept")
    (tmp_path / f"notes.tmp-{dead}").write_bytes(b"not hidden: not ours")

    assert stray_temporaries(tmp_path) == sorted([stray_file, stray_folder])
    assert remove_stray_temporaries(tmp_path) == (2, 2000)
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        [ours.name, "checkpoint.pth", f"notes.tmp-{dead}"])


def test_describe_bytes():
    assert [describe_bytes(n) for n in (0, 999, 1500, 283_000_000, 5 * 10**12)] == [
        "0 B", "999 B", "1.5 kB", "283.0 MB", "5000.0 GB"]


def test_the_payload_checksum_survives_a_torch_round_trip(tmp_path):
    state = {"model": {"w": torch.randn(3, 2), "n": torch.tensor(4), "half": torch.ones(2, dtype=torch.bfloat16),
                       "empty": torch.zeros(0), "flag": torch.tensor([True, False])},
             "rng": (3, tuple(range(5)), None), "lr": 3.5e-4, "name": "osnet", "nested": [1, {"a": 2.0}]}
    torch.save(with_checksum(state), tmp_path / "state.pth")
    loaded = verified(torch.load(tmp_path / "state.pth", weights_only=True), tmp_path / "state.pth")
    assert payload_sha256(loaded) == payload_sha256(state)


def test_the_payload_checksum_sees_every_kind_of_change():
    base = {"w": torch.zeros(4), "epoch": 1, "name": "a"}
    digest = payload_sha256(base)
    changed = [{**base, "w": torch.zeros(4, dtype=torch.float64)}, {**base, "w": torch.zeros(2, 2)},
               {**base, "w": torch.tensor([0.0, 0.0, 0.0, 1e-30])}, {**base, "epoch": 2}, {**base, "epoch": 1.0},
               {**base, "epoch": True}, {**base, "name": "b"}, {**base, "extra": None}]
    assert all(payload_sha256(state) != digest for state in changed)
    assert payload_sha256({"name": "a", "epoch": 1, "w": torch.zeros(4)}) == digest  # key order is not content
    assert payload_sha256({"x": np.arange(3)}) != payload_sha256({"x": np.arange(3).astype(np.int32)})


def test_a_file_without_a_checksum_is_returned_as_it_is(tmp_path):
    state = {"conv1.weight": torch.zeros(1)}
    assert verified(state, tmp_path / "resnet50.pth") is state


def test_a_mismatch_names_the_file_in_one_line(tmp_path):
    stored = with_checksum({"w": torch.zeros(3)})
    stored["w"][1] = 1.0
    with pytest.raises(HHCLError, match="model.pth is corrupt") as error:
        verified(stored, tmp_path / "model.pth")
    assert "\n" not in str(error.value)


@pytest.mark.skipif(os.name != "posix", reason="process ids and signals of POSIX")
def test_a_killed_writer_leaves_a_stray_that_the_next_cleanup_removes(tmp_path):
    script = ("import time\nfrom hhcl.files import atomic_file\n"
              f"with atomic_file({str(tmp_path / 'model.pth')!r}) as temporary:\n"
              "    temporary.write_bytes(bytes(3000))\n    print('written', flush=True)\n    time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    assert stray_temporaries(tmp_path) == []  # its writer is alive
    writer.kill()
    writer.wait()
    assert remove_stray_temporaries(tmp_path) == (1, 3000)
    assert list(tmp_path.iterdir()) == []


def test_permission_problems_name_the_path_and_the_missing_permission(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    from hhcl.data.scan import list_image_files
    from hhcl.files import ensure_writable_folder
    from hhcl.models.weights import read_checkpoint

    def refused(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    with monkeypatch.context() as patch:  # root ignores permissions: the refusals are simulated
        patch.setattr(Path, "mkdir", refused)
        with pytest.raises(HHCLError, match=f"no write permission on {tmp_path} .*choose another --output"):
            ensure_writable_folder(tmp_path / "run")
    with monkeypatch.context() as patch:
        patch.setattr(os, "access", lambda path, mode: False)
        with pytest.raises(HHCLError, match=f"the folder {tmp_path} is not writable"):
            ensure_writable_folder(tmp_path)
        (tmp_path / "model.pth").write_bytes(b"x")
        with pytest.raises(HHCLError, match=f"cannot read {tmp_path / 'model.pth'}: no read permission"):
            read_checkpoint(tmp_path / "model.pth")
    with monkeypatch.context() as patch:
        patch.setattr(os, "scandir", refused)
        with pytest.raises(HHCLError, match=f"cannot list the folder {tmp_path}: no read permission"):
            list_image_files(tmp_path)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(HHCLError, match="--output .*a_file is a file, not a folder"):
        ensure_writable_folder(tmp_path / "a_file")
