"""Checkpoints written atomically, and the random number generator states they carry.

A checkpoint is a dict of tensors and plain Python values only, so that it loads with
``torch.load(weights_only=True)``: the numpy generator state is stored as a tensor.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hhcl.checksum import with_checksum
from hhcl.errors import HHCLError
from hhcl.files import atomic_file

CHECKPOINT_FORMAT = "hhcl-checkpoint"
CHECKPOINT_VERSION = 1


def save_atomically(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` ``state`` with its sha256 checksum through :func:`hhcl.files.atomic_file`.

    A run killed while saving leaves the previous file intact, and a changed byte in the file is
    found when it is loaded (:func:`hhcl.models.weights.read_checkpoint`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()  # torch.save reports a full disk as a bare RuntimeError; Python's write names it
    torch.save(with_checksum(state), buffer)
    with atomic_file(path) as temporary:
        temporary.write_bytes(buffer.getbuffer())
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomically` (on CPU, checksum verified); one-line errors."""
    from hhcl.models.weights import read_checkpoint

    path = Path(path)
    if not path.is_file():
        raise HHCLError(f"checkpoint {path} not found: give the checkpoint.pth of an earlier run")
    state = read_checkpoint(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise HHCLError(f"{path} is not an hhcl training checkpoint: --resume needs the checkpoint.pth of a run; "
                        "use --init-weights to start from a model file")
    return state


def check_same_model(state: dict[str, Any], build_options: dict[str, Any]) -> None:
    """Refuse, in one line, a checkpoint whose model was built with other options (``--arch``...) than this run's."""
    import inspect

    from hhcl.models import build_model

    saved = state.get("build_options") or {}
    # An option recorded only when it differs from its default (a ViT's patch_stride, parts) reads as that default
    # where it is absent.
    defaults = {name: parameter.default for name, parameter in inspect.signature(build_model).parameters.items()
                if parameter.default is not inspect.Parameter.empty}
    changed = []
    for key in {**saved, **build_options}:
        if key not in defaults and not (key in saved and key in build_options):
            continue  # recorded on one side only, with no default to stand for the other
        before, now = saved.get(key, defaults.get(key)), build_options.get(key, defaults.get(key))
        if before != now:
            changed.append(f"{key} {before!r} (now {now!r})")
    if changed:
        raise HHCLError(f"the checkpoint holds a model built with {', '.join(changed)}: resume with the checkpoint's "
                        f"settings (e.g. --arch {saved.get('arch')}), or train the new model into another --output")


def capture_rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's and torch's (CPU and CUDA) global generators."""
    numpy_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    python_state = state["python"]
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainer_state(trainer) -> dict[str, Any]:
    """Everything ``--resume`` needs from a :class:`hhcl.engine.Trainer`. Collective under DDP: every rank calls it."""
    from hhcl.engine import distributed

    rng_states = distributed.all_gather_object({
        "global": capture_rng_state(),
        "augmentation": trainer.augmentation_generator.get_state(),
    })
    memory = None
    if trainer.memory is not None:  # the last epoch's memory, a record of the run (each epoch builds its own)
        memory = {"mode": trainer.memory.mode, "num_clusters": trainer.memory.num_clusters,
                  "state": {k: v.cpu() for k, v in trainer.memory.state_dict().items()}}

    def as_tensor(array):
        return torch.from_numpy(array) if array is not None else None

    return {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model": {k: v.cpu() for k, v in trainer.model.state_dict().items()},
        "weight_average": trainer.output_weights.state_dict(),
        "build_options": dict(trainer.model.build_options),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "memory": memory,
        "pseudo_labels": as_tensor(trainer.pseudo_labels),
        "num_threads": trainer.num_threads,
        "initial_neighbours": as_tensor(trainer.initial_neighbours),
        "trained_epochs": trainer.trained_epochs,
        "passed_weights": trainer.passed_weights,
        "stop_reason": trainer.stop_reason,
        "epoch": trainer.epoch,
        "iteration": trainer.iteration,
        "rng": rng_states,
        "world_size": trainer.context.world_size,
        "best": trainer.best,
        "history": trainer.history,
        "config": trainer.config.to_dict(),
    }


def restore_trainer_state(trainer, state: dict[str, Any]) -> None:
    """Put a :func:`trainer_state` back into ``trainer`` (the inverse, on this rank)."""
    import logging

    log = logging.getLogger("hhcl")
    check_same_model(state, trainer.model.build_options)
    trainer.model.load_state_dict(state["model"])
    trainer.output_weights.load_state_dict(state.get("weight_average"), trainer.model)
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        trainer.scaler.load_state_dict(state["scaler"])
    trainer.epoch = int(state["epoch"])
    trainer.iteration = int(state["iteration"])
    trainer.best = dict(state.get("best") or {"mAP": None, "epoch": None})
    trainer.history = list(state.get("history") or [])
    if state.get("pseudo_labels") is not None:
        trainer.pseudo_labels = state["pseudo_labels"].numpy()
    if state.get("initial_neighbours") is not None:
        trainer.initial_neighbours = state["initial_neighbours"].numpy()
    trainer.trained_epochs = int(state.get("trained_epochs", trainer.epoch))
    trainer.stop_reason = state.get("stop_reason")
    trainer.passed_weights = state.get("passed_weights")
    recorded_threads = state.get("num_threads")
    if recorded_threads and trainer.config.train.num_threads == 0 and recorded_threads != trainer.num_threads:
        # auto chose from the load when the run started: the same count continues it bit-identically
        torch.set_num_threads(recorded_threads)
        trainer.num_threads = recorded_threads
        log.info("CPU threads: %d, as when the run started (train.num_threads 0 = auto)", recorded_threads)
    rng_states = state["rng"]
    if len(rng_states) != trainer.context.world_size:
        log.warning("the checkpoint was written by %d processes and this run has %d: training continues, but "
                    "not bit-identically", len(rng_states), trainer.context.world_size)
    own = rng_states[min(trainer.context.rank, len(rng_states) - 1)]
    restore_rng_state(own["global"])
    try:
        trainer.augmentation_generator.set_state(own["augmentation"])
    except RuntimeError:
        log.warning("the augmentation generator state does not fit this device: it is reseeded")
    changed = changed_keys(state.get("config") or {}, trainer.config.to_dict())
    if changed:
        log.info("resuming with a changed config: %s", ", ".join(changed))


def model_file_state(trainer, metrics: dict[str, float] | None = None) -> dict[str, Any]:
    """What model.pth holds: the output model's weights under ``model`` (as :func:`hhcl.models.load_weights`
    reads them), its build options, and the config it was trained with (input size included)."""
    output = trainer.output_model()
    return {
        "model": {k: v.cpu() for k, v in output.state_dict().items()},
        "build_options": dict(output.build_options),
        "epoch": trainer.epoch,
        "metrics": metrics,
        "config": trainer.config.to_dict(),
    }


def changed_keys(before: dict, after: dict) -> list[str]:
    """``section.key old -> new`` for each config value that differs."""
    changed = []
    for section, values in after.items():
        for key, value in values.items():
            old = (before.get(section) or {}).get(key, value)
            if old != value:
                changed.append(f"{section}.{key} {old!r} -> {value!r}")
    return changed
