"""What ``hhcl inspect`` needs to show a run's pseudo-labels, kept per epoch by ``hhcl train --inspect``.

    trainer = Trainer(config, run_dir, hooks=[InspectionHook()])

The hook writes, in ``RUN/inspect/``:

- ``images.npz`` once: ``paths`` (N,) str, ``cameras`` (N,) int64 and ``identities`` (N,) int64
  (the dataset's, -1 where unknown), in the order of ``trainer.dataset.train``;
- ``epoch_NNN.npz`` after each clustering (NNN the 1-based epoch): ``labels`` (N,) int64 (-1 =
  outlier), ``stats`` (the assignment's statistics as JSON, the guard's under ``"guard"``),
  ``decision`` and ``reasons`` (JSON).

Compressed arrays only, never the images: a few bytes per image and epoch. The page is made from
these files by :mod:`hhcl.retrieval.inspection_page`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hhcl.engine.hooks import Hook
from hhcl.files import atomic_file, ensure_writable_folder

if TYPE_CHECKING:
    from hhcl.engine.trainer import Trainer

INSPECT_FOLDER = "inspect"
IMAGES_FILE = "images.npz"


def epoch_file_name(epoch: int) -> str:
    """``epoch_003.npz`` for the 1-based ``epoch`` 3."""
    return f"epoch_{epoch:03d}.npz"


def write_compressed_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> Path:
    """``np.savez_compressed`` of ``arrays`` to ``path`` (the exact name), through :func:`hhcl.files.atomic_file`."""
    path = Path(path)
    with atomic_file(path) as temporary, open(temporary, "wb") as stream:
        np.savez_compressed(stream, **arrays)
    return path


def as_json(value) -> str:
    """``value`` (a statistics record: numbers, numpy scalars, lists, dicts) as JSON text."""
    def plain(item):
        if isinstance(item, np.generic):
            return item.item()
        if isinstance(item, np.ndarray):
            return item.tolist()
        return str(item)

    return json.dumps(value, default=plain)


class InspectionHook(Hook):
    """Keep each epoch's pseudo-labels, and once the images' paths, cameras and identities, in ``RUN/inspect/``.

    Only the main process of a run with an output folder writes; the hook does nothing otherwise.
    """

    def folder(self, trainer: "Trainer") -> Path | None:
        if not trainer.context.is_main or trainer.output_dir is None:
            return None
        return trainer.output_dir / INSPECT_FOLDER

    def before_run(self, trainer: "Trainer") -> None:
        folder = self.folder(trainer)
        if folder is None:
            return
        ensure_writable_folder(folder)
        train = trainer.dataset.train
        write_compressed_npz(folder / IMAGES_FILE, {
            "paths": np.array([str(path) for path, _, _ in train], dtype=str),
            "cameras": np.array([camid for _, _, camid in train], dtype=np.int64),
            "identities": np.array([pid for _, pid, _ in train], dtype=np.int64),
        })

    def after_cluster(self, trainer: "Trainer", assignment) -> None:
        folder = self.folder(trainer)
        if folder is None:
            return
        write_compressed_npz(folder / epoch_file_name(trainer.epoch + 1), {
            "labels": np.asarray(assignment.labels, dtype=np.int64),
            "stats": np.str_(as_json(assignment.stats)),
            "decision": np.str_(assignment.decision),
            "reasons": np.str_(as_json(list(assignment.reasons))),
        })


__all__ = ["IMAGES_FILE", "INSPECT_FOLDER", "InspectionHook", "epoch_file_name", "write_compressed_npz"]
