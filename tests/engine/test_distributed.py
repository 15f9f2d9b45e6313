"""DDP on CPU: two processes under torchrun with the gloo backend."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

RANK_SCRIPT = textwrap.dedent("""
    import json, os, sys
    import torch
    from hhcl.config import load_config
    from hhcl.engine import Trainer

    overrides, output = json.loads(sys.argv[1]), sys.argv[2]
    trainer = Trainer(load_config("demo", overrides), output, progress=False)
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit()
    rank = int(os.environ["RANK"])
    torch.save({
        "model": trainer.model.state_dict(),
        "initial": initial,
        "memory": trainer.memory.state_dict(),
        "pseudo_labels": torch.from_numpy(trainer.pseudo_labels),
        "iteration": trainer.iteration,
    }, os.path.join(output, f"rank{rank}.pt"))
""")


@pytest.mark.slow
def test_two_gloo_processes_hold_identical_memories_and_weights(tmp_path, tiny_config_overrides):
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    output = tmp_path / "run"
    overrides = tiny_config_overrides + ["train.epochs=2", "train.iters=2", "train.batch_size=16"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script),
         json.dumps(overrides), str(output)],
        capture_output=True, text=True, timeout=600, env=environment,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rank0 = torch.load(output / "rank0.pt", weights_only=True)
    rank1 = torch.load(output / "rank1.pt", weights_only=True)

    assert rank0["iteration"] == rank1["iteration"] == 4
    assert torch.equal(rank0["pseudo_labels"], rank1["pseudo_labels"])
    for key in rank0["memory"]:
        assert torch.equal(rank0["memory"][key], rank1["memory"][key]), key
    for key in rank0["model"]:
        assert torch.equal(rank0["model"][key], rank1["model"][key]), key
    trained = [k for k, v in rank0["model"].items() if v.dtype.is_floating_point
               and not torch.equal(v, rank0["initial"][k])]
    assert trained, "the weights did not change"
    # rank 0 alone writes the run folder
    assert (output / "model.pth").is_file() and (output / "checkpoint.pth").is_file()
    saved = torch.load(output / "model.pth", weights_only=True)["model"]
    for key in saved:
        assert torch.equal(saved[key], rank0["model"][key]), key
