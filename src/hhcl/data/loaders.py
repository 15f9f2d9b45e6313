"""DataLoaders: workers decode and resize (Pillow, bicubic); everything else is batched later
on the training device (:mod:`hhcl.data.transforms`).

A file that turns out broken when it is loaded is dropped from its batch with a warning naming it
(once per file), so its index is missing from that batch's ``indices``; with ``strict=True`` it is
an :class:`HHCLError` instead. The warning and the error are raised in the main process, never as a
worker traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from hhcl.data.images import broken_image_log, load_resized
from hhcl.data.sampler import PKSampler
from hhcl.errors import HHCLError

ItemLike = str | os.PathLike | tuple


def item_paths(items: Sequence[ItemLike]) -> list[str]:
    """Paths of ``items``: plain paths or ``(path, pid, camid)`` tuples."""
    return [os.fspath(item[0] if isinstance(item, tuple) else item) for item in items]


class ResizedImages(Dataset):
    """Image ``i`` decoded to RGB and resized to ``(height, width)``.

    ``__getitem__`` returns ``(image uint8 (3, H, W) or None, index, problem or None)``: a broken
    file gives ``None`` and a one-line description instead of raising in the worker.
    """

    def __init__(self, paths: Sequence[str], height: int, width: int) -> None:
        self.paths = list(paths)
        self.height = height
        self.width = width

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return load_resized(self.paths[index], self.height, self.width), index, None
        except HHCLError as problem:
            return None, index, str(problem)


def collate_images(samples) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, str]]]:
    """Stack the good samples: ``(images uint8 (B, 3, H, W), indices int64 (B,), broken)`` where
    ``broken`` lists ``(index, problem)`` of the files that failed."""
    good = [(image, index) for image, index, problem in samples if problem is None]
    broken = [(index, problem) for _, index, problem in samples if problem is not None]
    images = torch.stack([image for image, _ in good]) if good else torch.empty((0, 3, 0, 0), dtype=torch.uint8)
    indices = torch.tensor([index for _, index in good], dtype=torch.int64)
    return images, indices, broken


def report_broken(broken: list[tuple[int, str]], paths: Sequence[str], strict: bool) -> None:
    """Warn about (or, when ``strict``, raise for) images that failed to load."""
    for index, problem in broken:
        if strict:
            raise HHCLError(f"{problem} (or drop --strict to skip broken images with a warning)")
        broken_image_log.warn(f"skipping broken image: {problem}", paths[index])


class TestLoader(DataLoader):
    """A sequential DataLoader yielding ``(images uint8 (B, 3, H, W), indices int64 (B,))`` in
    dataset order; broken images are reported (see the module docstring)."""

    def __init__(self, paths: Sequence[str], batch_size: int, height: int, width: int, num_workers: int, strict: bool):
        super().__init__(
            ResizedImages(paths, height, width),
            batch_size=batch_size,
            shuffle=False,
            num_workers=num_workers,
            collate_fn=collate_images,
            persistent_workers=False,
        )
        self.strict = strict

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        paths = self.dataset.paths
        for images, indices, broken in super().__iter__():
            report_broken(broken, paths, self.strict)
            if indices.numel():
                yield images, indices


def build_test_loader(
    items: Sequence[ItemLike],
    batch_size: int = 128,
    height: int = 256,
    width: int = 128,
    num_workers: int = 0,
    strict: bool = False,
) -> DataLoader:
    """Loader over ``items`` (paths or ``(path, pid, camid)``) in order, yielding
    ``(images uint8 (B, 3, height, width), indices int64 (B,))``."""
    return TestLoader(item_paths(items), batch_size, height, width, num_workers, strict)


class PKBatches:
    """Batch sampler: ``iters`` batches of ``batch_size`` indices cut from a stream of PK passes.

    The stream continues across iterations (what one iteration leaves of a pass starts the next).
    """

    def __init__(self, sampler: PKSampler, batch_size: int, iters: int) -> None:
        self.sampler = sampler
        self.batch_size = batch_size
        self.iters = iters
        self._pending: list[int] = []

    def __len__(self) -> int:
        return self.iters

    def __iter__(self) -> Iterator[list[int]]:
        for _ in range(self.iters):
            while len(self._pending) < self.batch_size:
                self._pending.extend(iter(self.sampler))
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
            yield batch


class TrainLoader:
    """``iters`` batches per iteration, each ``(images uint8 (B, 3, H, W), labels int64 (B,),
    indices int64 (B,))`` with P identities x K instances (fewer rows if a file was broken);
    ``indices`` are the items' positions, or their ``image_ids`` when given."""

    def __init__(
        self,
        paths: Sequence[str],
        labels: np.ndarray,
        cams: np.ndarray | None,
        batch_size: int,
        num_instances: int,
        height: int,
        width: int,
        num_workers: int,
        seed: int,
        iters: int,
        strict: bool,
        keep_singletons: bool = False,
        image_ids: np.ndarray | None = None,
    ) -> None:
        self.paths = list(paths)
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.image_ids = None if image_ids is None else torch.as_tensor(image_ids, dtype=torch.int64)
        self.strict = strict
        self.sampler = PKSampler(labels, cams, num_instances, seed, keep_singletons=keep_singletons)
        if len(self.sampler) == 0:
            raise HHCLError(
                "no identity (or cluster) has two or more images, so there is nothing to sample; "
                "check the labels (all outliers?) or lower the clustering threshold"
            )
        self.batches = PKBatches(self.sampler, batch_size, iters)
        self.loader = DataLoader(
            ResizedImages(self.paths, height, width),
            batch_sampler=self.batches,
            num_workers=num_workers,
            collate_fn=collate_images,
            persistent_workers=num_workers > 0,
        )

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for images, indices, broken in self.loader:
            report_broken(broken, self.paths, self.strict)
            if indices.numel():
                yield images, self.labels[indices], indices if self.image_ids is None else self.image_ids[indices]


def build_train_loader(
    items: Sequence[ItemLike],
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    batch_size: int = 256,
    num_instances: int = 16,
    height: int = 256,
    width: int = 128,
    num_workers: int = 0,
    seed: int = 0,
    iters: int = 200,
    strict: bool = False,
    keep_singletons: bool = False,
    image_ids: Sequence[int] | np.ndarray | None = None,
) -> TrainLoader:
    """Training loader over ``items`` with (pseudo-)``labels`` (N,), negative for outliers.

    Yields ``iters`` batches ``(images uint8 (B, 3, height, width), labels int64 (B,), indices
    int64 (B,))``, ``B = batch_size``: ``batch_size / num_instances`` identities x
    ``num_instances`` images, drawn by :class:`hhcl.data.sampler.PKSampler` with the cameras of
    ``items`` when they are ``(path, pid, camid)`` tuples. Deterministic by ``seed``.
    ``keep_singletons``: one-image identities take part (K augmented views of the image).
    ``image_ids``: ``(N,)`` what ``indices`` gives for each item instead of its position (the
    trainer passes each item's row in the whole training set).
    """
    if batch_size < 1 or iters < 1:
        raise HHCLError(f"batch_size and iters must be positive, got batch_size={batch_size} iters={iters}")
    if batch_size % num_instances:
        raise HHCLError(
            f"batch_size {batch_size} is not a multiple of num_instances {num_instances}; "
            "a batch holds P identities x K instances"
        )
    label_array = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64)
    if label_array.shape != (len(items),):
        raise ValueError(f"labels has shape {label_array.shape}, expected ({len(items)},)")
    cams = np.array([item[2] for item in items], dtype=np.int64) if items and isinstance(items[0], tuple) else None
    if image_ids is not None and np.shape(image_ids) != (len(items),):
        raise ValueError(f"image_ids has shape {np.shape(image_ids)}, expected ({len(items)},)")
    return TrainLoader(
        item_paths(items), label_array, cams, batch_size, num_instances, height, width, num_workers, seed, iters, strict,
        keep_singletons, image_ids,
    )
