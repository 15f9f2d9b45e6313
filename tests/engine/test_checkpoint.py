import random

import numpy as np
import pytest
import torch

from hhcl.checksum import CHECKSUM_KEY
from hhcl.engine import checkpoint, runtime
from hhcl.engine.distributed import all_gather_sharded_rows, interleave_shards
from hhcl.errors import HHCLError


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("cannot pickle this")


def test_save_atomically_replaces_the_file(tmp_path):
    path = tmp_path / "checkpoint.pth"
    checkpoint.save_atomically({"format": checkpoint.CHECKPOINT_FORMAT, "epoch": 1}, path)
    checkpoint.save_atomically({"format": checkpoint.CHECKPOINT_FORMAT, "epoch": 2}, path)
    assert checkpoint.load_checkpoint(path)["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_a_failed_save_keeps_the_previous_checkpoint_and_no_temporary_file(tmp_path):
    path = tmp_path / "checkpoint.pth"
    checkpoint.save_atomically({"format": checkpoint.CHECKPOINT_FORMAT, "epoch": 1}, path)
    with pytest.raises(Exception):
        checkpoint.save_atomically({"format": checkpoint.CHECKPOINT_FORMAT, "epoch": 2, "bad": Unpicklable()}, path)
    assert checkpoint.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]


def test_load_checkpoint_errors_are_one_line(tmp_path):
    with pytest.raises(HHCLError, match="not found"):
        checkpoint.load_checkpoint(tmp_path / "missing.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(HHCLError, match="is not a PyTorch checkpoint") as error:
        checkpoint.load_checkpoint(truncated)
    assert "\n" not in str(error.value)
    weights_only = tmp_path / "model.pth"
    torch.save({"model": {"w": torch.zeros(1)}}, weights_only)
    with pytest.raises(HHCLError, match="--init-weights"):
        checkpoint.load_checkpoint(weights_only)


def test_a_checkpoint_carries_a_checksum_that_loading_verifies_and_removes(tmp_path):
    path = tmp_path / "checkpoint.pth"
    state = {"format": checkpoint.CHECKPOINT_FORMAT, "model": {"w": torch.arange(6.0)}, "epoch": 3}
    checkpoint.save_atomically(state, path)
    assert CHECKSUM_KEY in torch.load(path, weights_only=True)
    loaded = checkpoint.load_checkpoint(path)
    assert set(loaded) == set(state) and torch.equal(loaded["model"]["w"], state["model"]["w"])


def test_a_checkpoint_whose_payload_changed_is_refused_in_one_line(tmp_path):
    path = tmp_path / "checkpoint.pth"
    checkpoint.save_atomically({"format": checkpoint.CHECKPOINT_FORMAT, "model": {"w": torch.zeros(6)}}, path)
    tampered = torch.load(path, weights_only=True)
    tampered["model"]["w"][2] = 1.0  # saved with the old checksum, as a flipped bit on disk would be
    torch.save(tampered, path)
    with pytest.raises(HHCLError, match="checkpoint.pth is corrupt.*not loaded") as error:
        checkpoint.load_checkpoint(path)
    assert "\n" not in str(error.value)


def test_rng_state_round_trip_through_a_weights_only_file(tmp_path):
    runtime.seed_everything(123)
    state = checkpoint.capture_rng_state()
    expected = (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn())
    path = tmp_path / "rng.pth"
    checkpoint.save_atomically({"format": checkpoint.CHECKPOINT_FORMAT, "rng": state}, path)
    random.random(), np.random.rand(7), torch.rand(5)  # move every generator on
    checkpoint.restore_rng_state(checkpoint.load_checkpoint(path)["rng"])
    assert (random.random(), np.random.rand(3).tolist(), torch.rand(3).tolist(), np.random.randn()) == expected


def test_rng_state_keeps_a_cached_gaussian():
    runtime.seed_everything(5)
    np.random.randn()  # numpy's legacy generator caches the second normal of a pair
    state = checkpoint.capture_rng_state()
    expected = np.random.randn(3).tolist()
    checkpoint.restore_rng_state(state)
    assert np.random.randn(3).tolist() == expected


def test_interleave_shards_undoes_a_round_robin_split():
    rows = torch.arange(7 * 2).reshape(7, 2)
    world_size = 3
    longest = -(-7 // world_size)
    parts = []
    for rank in range(world_size):
        shard = rows[rank::world_size]
        padded = torch.full((longest, 2), -1)
        padded[: len(shard)] = shard
        parts.append(padded)
    assert torch.equal(interleave_shards(parts, 7), rows)


def test_gather_helpers_are_identity_in_one_process():
    rows = torch.arange(6).reshape(3, 2)
    assert all_gather_sharded_rows(rows, 3) is rows
