"""The camera-aware PK sampler: per identity, one anchor and K-1 instances preferably from other
cameras.

One pass (an "epoch" of the sampler) visits every identity once, in random order, and emits K
consecutive indices for it: the anchor, then K-1 others drawn from the anchor's identity, from
cameras other than the anchor's when there are any, otherwise from the anchor's camera. They are
drawn without replacement when the pool holds at least K-1 images, with replacement otherwise.
Consecutive batches of ``P * K`` indices thus hold P identities with K images each.

Identities with a single image have nothing to pair with and are left out, as are negative labels
(DBSCAN outliers), unless ``keep_singletons``: a one-image identity (an outlier kept as an instance
of its own, SpCL style) then takes part like any other, its K draws all the one image, which the
batched augmentation makes K different views of. Cameras may be unknown (``cams=None``): every image then counts as one camera.
The whole pass is computed with a few array operations, not a loop over identities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler

from hhcl.errors import HHCLError


def pk_indices(
    labels: np.ndarray, cams: np.ndarray, num_instances: int, rng: np.random.Generator, keep_singletons: bool = False
) -> np.ndarray:
    """One pass of the camera-aware PK sampling.

    ``labels`` and ``cams`` are int ``(N,)``; ``labels < 0`` are ignored. Returns int64
    ``(num_identities * num_instances,)`` indices into the N images: for each identity (in
    random order) its anchor followed by ``num_instances - 1`` others.
    """
    labels = np.asarray(labels, dtype=np.int64)
    cams = np.asarray(cams, dtype=np.int64)
    candidates = np.flatnonzero(labels >= 0)
    if candidates.size == 0:
        return np.empty(0, dtype=np.int64)
    # Group the images by identity, in random order within each identity.
    shuffle = rng.permutation(candidates.size)
    candidates = candidates[shuffle]
    candidates = candidates[np.argsort(labels[candidates], kind="stable")]
    group_labels = labels[candidates]
    starts = np.flatnonzero(np.r_[True, group_labels[1:] != group_labels[:-1]])
    sizes = np.diff(np.r_[starts, candidates.size])
    # A single image has nothing to pair with (unless it stands as an instance of its own).
    keep = sizes >= (1 if keep_singletons else 2)
    members = candidates[np.repeat(keep, sizes)]
    sizes = sizes[keep]
    num_groups = sizes.size
    if num_groups == 0:
        return np.empty(0, dtype=np.int64)
    member_group = np.repeat(np.arange(num_groups), sizes)

    # The anchor: the first member of each (already shuffled) group.
    first = np.cumsum(sizes) - sizes
    anchors = members[first]
    anchor_cam = cams[anchors]
    # Order each group: other cameras first, then the anchor's camera, the anchor itself last;
    # the shuffle above keeps each category in random order.
    category = np.where(cams[members] != anchor_cam[member_group], 0, 1)
    category[first] = 2
    order = np.lexsort((category, member_group))
    members, category = members[order], category[order]
    other_cams = np.bincount(member_group, weights=(category == 0), minlength=num_groups).astype(np.int64)
    # The pool: images of other cameras if any, else every image but the anchor.
    pool_size = np.where(other_cams > 0, other_cams, sizes - 1)

    needed = num_instances - 1
    draws = np.arange(needed)[None, :].repeat(num_groups, axis=0)
    with_replacement = pool_size[:, None] < needed
    random_draws = np.floor(rng.random((num_groups, needed)) * pool_size[:, None]).astype(np.int64)
    draws = np.where(with_replacement, random_draws, draws)
    # a singleton's pool is empty: every draw is the anchor itself
    draws = np.where((sizes > 1)[:, None], draws, -1)
    picked = members[first[:, None] + draws + (sizes == 1)[:, None]]

    batch = np.concatenate([anchors[:, None], picked], axis=1)
    return batch[rng.permutation(num_groups)].reshape(-1)


class PKSampler(Sampler[int]):
    """Camera-aware PK sampling over pseudo-labels, deterministic by ``seed``.

    ``labels`` (N,) int, negative for outliers; ``cams`` (N,) int or None when unknown.
    Each iteration yields one pass (see :func:`pk_indices`); successive iterations draw new
    passes (pass ``p`` uses the seed ``(seed, p)``), and :meth:`set_epoch` sets ``p``.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        cams: Sequence[int] | np.ndarray | torch.Tensor | None,
        num_instances: int,
        seed: int = 0,
        keep_singletons: bool = False,
    ) -> None:
        self.labels = _as_int_array(labels)
        if cams is None:
            self.cams = np.zeros_like(self.labels)
        else:
            self.cams = _as_int_array(cams)
            if self.cams.shape != self.labels.shape:
                raise ValueError(f"cams has shape {self.cams.shape} but labels has {self.labels.shape}")
        if num_instances < 1:
            raise HHCLError(f"num_instances must be at least 1, got {num_instances}")
        self.num_instances = int(num_instances)
        self.seed = int(seed)
        self.epoch = 0
        self.keep_singletons = bool(keep_singletons)
        _, counts = np.unique(self.labels[self.labels >= 0], return_counts=True)
        self.num_identities = int((counts >= (1 if keep_singletons else 2)).sum())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_identities * self.num_instances

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        return iter(pk_indices(self.labels, self.cams, self.num_instances, rng, self.keep_singletons).tolist())


def _as_int_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"expected a 1-D array of ints, got shape {array.shape}")
    return array.astype(np.int64)
