"""Cluster memories: one L2-normalised row (or set of rows) per pseudo-identity.

A memory is rebuilt at the start of every epoch from the cluster means of the training features.
During the epoch, each step computes a loss from the similarities of the batch to the memory
(:mod:`hhcl.losses`), and after the optimizer step the trainer calls ``update`` under
``torch.no_grad()``. Updates are vectorised over the batch (``index_add_``, ``scatter_reduce``);
there is no Python loop over samples.

Modes (the names of the authors' code in brackets):

- ``centroid`` (``CM``): one row per cluster, moved towards the batch mean of its cluster.
- ``hard`` (``CMhard``): one row per cluster, moved towards the cluster's instance in the batch
  that is least similar to the row.
- ``hybrid`` (``CMhybrid``, HHCL, the default): a hard memory and a centroid memory side by side.
- ``hybrid_instance`` (``CMhybrid_v2``): a centroid memory plus K instance slots per cluster,
  overwritten by the batch's instances of that cluster.

Per-image terms on top of the mode's memory, gathered in :class:`EpochMemory` (both off by default):

- the clustering ensemble (``cluster.ensemble_eps``): one memory of the same mode per granularity;
- camera-aware proxies (``memory.camera_proxies``): :class:`CameraProxyMemory`, one row per
  (pseudo-identity, camera).

Their targets are not the batch's pseudo-labels but each image's row in their own memory: every
memory is called as ``memory(features, targets, image_ids)`` and ``memory.update(features,
targets, image_ids)``, where ``image_ids`` are the batch's rows in the training set; a cluster
memory ignores them, an :class:`EpochMemory` looks its terms' targets up with them.

With ``model.parts`` P > 0, :class:`PartMemory` wraps the memory of the mode (for the global
feature) and adds one centroid memory per horizontal stripe, for selective contrast.

Notation: ``B`` batch size, ``C`` clusters, ``K`` instance slots, ``D`` feature dimension.

Why the centroid update uses the batch mean: the authors' ``CM`` applies
``row = m*row + (1-m)*x`` once per sample, in batch order, renormalising after each. That is a
sequential loop whose result depends on the order of the batch; with K instances of a cluster
it weights the last instance by ``(1-m)`` and the first by ``(1-m)*m**(K-1)``. We apply the
rule once per cluster with ``x`` the mean of the cluster's instances in the batch, which is
order-independent, vectorises, and is exactly what the authors' ``CMhybrid`` does for its
centroid half.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hhcl import losses
from hhcl.config import MEMORY_MODES


# ---------------------------------------------------------------------------------------------
# Pure functions: cluster statistics and the update rule
# ---------------------------------------------------------------------------------------------


def cluster_centers(features: torch.Tensor, labels: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """L2-normalised mean feature of each cluster.

    Args:
        features: ``(N, D)`` float.
        labels: ``(N,)`` int64 in ``[-1, num_clusters)``; ``-1`` (an outlier) is ignored.
        num_clusters: ``C``; every cluster must have at least one member.

    Returns:
        ``(C, D)`` float32, L2-normalised rows.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64, device=features.device)
    clustered = labels >= 0
    sums = torch.zeros(num_clusters, features.shape[1], dtype=torch.float32, device=features.device)
    sums.index_add_(0, labels[clustered], features[clustered].float())
    counts = torch.bincount(labels[clustered], minlength=num_clusters)
    if bool((counts == 0).any()):
        empty = int(torch.nonzero(counts == 0)[0])
        raise ValueError(f"cluster {empty} has no member; labels must be 0..{num_clusters - 1} with no gap")
    return F.normalize(sums / counts.unsqueeze(1), dim=1)


def sample_cluster_members(
    features: torch.Tensor,
    labels: torch.Tensor,
    num_clusters: int,
    num_slots: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw ``num_slots`` members of every cluster at random, with replacement.

    This is how the authors' code fills the instance slots of ``CMhybrid_v2`` at the start of an
    epoch, so that the hardest-positive slot differs from the centroid from the first step.

    Args:
        features: ``(N, D)``.
        labels: ``(N,)`` int64, ``-1`` for outliers.
        num_clusters: ``C``.
        num_slots: ``K``.
        generator: CPU generator for the draw (reproducibility).

    Returns:
        ``(K, C, D)`` float32, L2-normalised.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64).cpu()
    order = torch.argsort(labels, stable=True)
    sorted_labels = labels[order]
    counts = torch.bincount(sorted_labels[sorted_labels >= 0], minlength=num_clusters)
    first_member = torch.searchsorted(sorted_labels, torch.arange(num_clusters))
    draws = torch.rand(num_slots, num_clusters, generator=generator)
    offsets = (draws * counts).long().clamp(max=counts - 1)
    members = order[first_member + offsets]
    return F.normalize(features[members.to(features.device)].float(), dim=-1)


def momentum_update(rows: torch.Tensor, targets: torch.Tensor, momentum: float) -> torch.Tensor:
    """``row = m*row + (1-m)*x``, then renormalise. ``(R, D)`` and ``(R, D)`` -> ``(R, D)``."""
    return F.normalize(momentum * rows + (1.0 - momentum) * targets, dim=1)


def batch_cluster_means(features: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each cluster's instances in a batch.

    Args:
        features: ``(B, D)``.
        targets: ``(B,)`` int64 cluster indices.

    Returns:
        ``clusters (P,)`` the distinct clusters of the batch, ascending, and ``means (P, D)``.
    """
    clusters, position = torch.unique(targets, return_inverse=True)
    sums = torch.zeros(len(clusters), features.shape[1], dtype=features.dtype, device=features.device)
    sums.index_add_(0, position, features)
    counts = torch.bincount(position, minlength=len(clusters)).to(features.dtype)
    return clusters, sums / counts.unsqueeze(1)


def batch_hardest_instances(
    features: torch.Tensor, targets: torch.Tensor, memory: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each cluster in the batch, its instance least similar to the cluster's memory row.

    Ties go to the earliest instance in the batch, as ``np.argmin`` does in the authors' code.

    Args:
        features: ``(B, D)``, L2-normalised.
        targets: ``(B,)`` int64 cluster indices.
        memory: ``(C, D)`` the current rows.

    Returns:
        ``clusters (P,)`` the distinct clusters of the batch, ascending, and ``hardest (P, D)``.
    """
    batch_size = features.shape[0]
    clusters, position = torch.unique(targets, return_inverse=True)
    similarity = (features * memory[targets]).sum(dim=1)
    lowest = torch.full((len(clusters),), float("inf"), dtype=similarity.dtype, device=similarity.device)
    lowest = lowest.scatter_reduce(0, position, similarity, reduce="amin")
    index = torch.arange(batch_size, device=features.device)
    candidate = torch.where(similarity == lowest[position], index, batch_size)
    first = torch.full((len(clusters),), batch_size, dtype=torch.int64, device=features.device)
    first = first.scatter_reduce(0, position, candidate, reduce="amin")
    return clusters, features[first]


def camera_proxy_index(labels, cameras, cross_camera_only: bool = False
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The camera proxies of a labelling: one per (pseudo-identity, camera) that holds an image.

    Args:
        labels: ``(N,)`` int64 pseudo-identities, ``-1`` for outliers.
        cameras: ``(N,)`` int64 camera of each image.
        cross_camera_only: proxies only for the identities with images in two cameras or more
            (``memory.camera_proxy_scope: cross_camera``); the others' images get no proxy.

    Returns:
        ``proxy_of_image (N,)`` int64, each image's proxy (``-1`` for an outlier or an image
        left without one), then the ``(P,)`` int64 ``proxy_identities`` and ``proxy_cameras``,
        the proxies ordered by (identity, camera).
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    cameras = torch.as_tensor(cameras, dtype=torch.int64, device=labels.device)
    clustered = labels >= 0
    if cross_camera_only and bool(clustered.any()):
        identity_camera = torch.unique(torch.stack([labels[clustered], cameras[clustered]], dim=1), dim=0)
        cameras_per_identity = torch.bincount(identity_camera[:, 0], minlength=int(labels.max()) + 1)
        clustered &= cameras_per_identity[labels.clamp(min=0)] >= 2
    pairs, proxy = torch.unique(torch.stack([labels[clustered], cameras[clustered]], dim=1), dim=0,
                                return_inverse=True)
    proxy_of_image = torch.full_like(labels, -1)
    proxy_of_image[clustered] = proxy.reshape(-1)
    return proxy_of_image, pairs[:, 0].contiguous(), pairs[:, 1].contiguous()


def batch_instance_slots(targets: torch.Tensor) -> torch.Tensor:
    """The rank of each sample among the samples of its cluster, in batch order.

    ``(B,)`` int64 -> ``(B,)`` int64: the first instance of a cluster gets 0, the next 1, ...
    """
    order = torch.argsort(targets, stable=True)
    _, counts = torch.unique_consecutive(targets[order], return_counts=True)
    group_start = torch.cumsum(counts, 0) - counts
    rank_in_order = torch.arange(len(targets), device=targets.device) - torch.repeat_interleave(group_start, counts)
    rank = torch.empty_like(rank_in_order)
    rank[order] = rank_in_order
    return rank


# ---------------------------------------------------------------------------------------------
# Memories: the state, a loss and an explicit update
# ---------------------------------------------------------------------------------------------


class ClusterMemory(nn.Module):
    """The state shared by every mode. Subclasses define the buffers, ``forward`` and ``update``.

    ``forward(features, targets, image_ids=None)`` takes the model's ``(B, D)`` training output
    (normalised here) and the ``(B,)`` int64 cluster indices, and returns the scalar loss.
    ``update(features, targets, image_ids=None)`` takes the same detached features, gathered from
    every rank under DDP, after the optimizer step. ``image_ids``, the batch's ``(B,)`` rows in the
    training set, are for :class:`EpochMemory`'s per-image terms; a cluster memory ignores them.
    """

    mode = ""

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.1):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.num_features = num_features
        self.num_clusters = num_clusters
        self.temperature = temperature
        self.momentum = momentum

    def _rows(self) -> torch.Tensor:
        return torch.zeros(self.num_clusters, self.num_features)

    def initialize(self, centers: torch.Tensor, features: torch.Tensor | None = None,
                   labels: torch.Tensor | None = None, generator: torch.Generator | None = None) -> None:
        """Set every memory to the ``(C, D)`` cluster centers (normalised here).

        ``features (N, D)`` and ``labels (N,)`` are only used by modes with instance slots.
        """
        raise NotImplementedError

    def forward(self, features: torch.Tensor, targets: torch.Tensor, image_ids: torch.Tensor | None = None
                ) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def update(self, features: torch.Tensor, targets: torch.Tensor, image_ids: torch.Tensor | None = None) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (f"mode={self.mode}, num_clusters={self.num_clusters}, num_features={self.num_features}, "
                f"temperature={self.temperature}, momentum={self.momentum}")


def _normalized(features: torch.Tensor) -> torch.Tensor:
    # Memories are float32 even under AMP: the logits divide by a temperature of 0.05.
    return F.normalize(features.float(), dim=1)


class CentroidMemory(ClusterMemory):
    """``centroid`` (CM): ``centroid_memory (C, D)`` moved towards the batch mean of each cluster."""

    mode = "centroid"

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.1):
        super().__init__(num_features, num_clusters, temperature, momentum)
        self.register_buffer("centroid_memory", self._rows())

    def initialize(self, centers, features=None, labels=None, generator=None):
        self.centroid_memory.copy_(F.normalize(centers.float(), dim=1))

    def forward(self, features, targets, image_ids=None):
        logits = losses.memory_logits(_normalized(features), self.centroid_memory, self.temperature)
        return losses.cluster_contrast_loss(logits, targets)

    @torch.no_grad()
    def update(self, features, targets, image_ids=None):
        clusters, means = batch_cluster_means(_normalized(features), targets)
        self.centroid_memory[clusters] = momentum_update(self.centroid_memory[clusters], means, self.momentum)


class HardMemory(ClusterMemory):
    """``hard`` (CMhard): ``hard_memory (C, D)`` moved towards each cluster's hardest instance."""

    mode = "hard"

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.1):
        super().__init__(num_features, num_clusters, temperature, momentum)
        self.register_buffer("hard_memory", self._rows())

    def initialize(self, centers, features=None, labels=None, generator=None):
        self.hard_memory.copy_(F.normalize(centers.float(), dim=1))

    def forward(self, features, targets, image_ids=None):
        logits = losses.memory_logits(_normalized(features), self.hard_memory, self.temperature)
        return losses.cluster_contrast_loss(logits, targets)

    @torch.no_grad()
    def update(self, features, targets, image_ids=None):
        clusters, hardest = batch_hardest_instances(_normalized(features), targets, self.hard_memory)
        self.hard_memory[clusters] = momentum_update(self.hard_memory[clusters], hardest, self.momentum)


class HybridMemory(ClusterMemory):
    """``hybrid`` (HHCL): a ``hard_memory`` and a ``centroid_memory``, both ``(C, D)``.

    The loss is :func:`hhcl.losses.hybrid_loss` with ``hard_weight`` and ``loss_form``.
    """

    mode = "hybrid"

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.1,
                 hard_weight: float = 0.5, loss_form: str = "paper"):
        super().__init__(num_features, num_clusters, temperature, momentum)
        _check_loss_form(loss_form)
        self.hard_weight = hard_weight
        self.loss_form = loss_form
        self.register_buffer("hard_memory", self._rows())
        self.register_buffer("centroid_memory", self._rows())

    def initialize(self, centers, features=None, labels=None, generator=None):
        rows = F.normalize(centers.float(), dim=1)
        self.hard_memory.copy_(rows)
        self.centroid_memory.copy_(rows)

    def forward(self, features, targets, image_ids=None):
        features = _normalized(features)
        hard_logits = losses.memory_logits(features, self.hard_memory, self.temperature)
        centroid_logits = losses.memory_logits(features, self.centroid_memory, self.temperature)
        return losses.hybrid_loss(hard_logits, centroid_logits, targets, self.hard_weight, self.loss_form)

    @torch.no_grad()
    def update(self, features, targets, image_ids=None):
        features = _normalized(features)
        clusters, hardest = batch_hardest_instances(features, targets, self.hard_memory)
        self.hard_memory[clusters] = momentum_update(self.hard_memory[clusters], hardest, self.momentum)
        clusters, means = batch_cluster_means(features, targets)
        self.centroid_memory[clusters] = momentum_update(self.centroid_memory[clusters], means, self.momentum)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", hard_weight={self.hard_weight}, loss_form={self.loss_form}"


class HybridInstanceMemory(ClusterMemory):
    """``hybrid_instance`` (CMhybrid_v2): ``centroid_memory (C, D)`` and ``instance_memory (K, C, D)``.

    Each step overwrites a cluster's slots with the batch's instances of that cluster, in batch
    order (slot 0 takes the first instance); slots beyond the cluster's count in the batch keep
    their value, and instances beyond K are not stored. The loss is
    :func:`hhcl.losses.hybrid_instance_loss`.
    """

    mode = "hybrid_instance"

    def __init__(self, num_features: int, num_clusters: int, temperature: float = 0.05, momentum: float = 0.1,
                 hard_weight: float = 0.5, loss_form: str = "paper", num_instances: int = 16):
        super().__init__(num_features, num_clusters, temperature, momentum)
        _check_loss_form(loss_form)
        if num_instances < 1:
            raise ValueError(f"num_instances must be at least 1, got {num_instances}")
        self.hard_weight = hard_weight
        self.loss_form = loss_form
        self.num_instances = num_instances
        self.register_buffer("centroid_memory", self._rows())
        self.register_buffer("instance_memory", torch.zeros(num_instances, num_clusters, num_features))

    def initialize(self, centers, features=None, labels=None, generator=None):
        rows = F.normalize(centers.float(), dim=1)
        self.centroid_memory.copy_(rows)
        if features is None or labels is None:
            self.instance_memory.copy_(rows.unsqueeze(0).expand_as(self.instance_memory))
        else:
            members = sample_cluster_members(features, labels, self.num_clusters, self.num_instances, generator)
            self.instance_memory.copy_(members.to(self.instance_memory.device))

    def forward(self, features, targets, image_ids=None):
        features = _normalized(features)
        instance_logits = losses.memory_logits(features, self.instance_memory, self.temperature)
        centroid_logits = losses.memory_logits(features, self.centroid_memory, self.temperature)
        return losses.hybrid_instance_loss(instance_logits, centroid_logits, targets, self.hard_weight,
                                           self.loss_form)

    @torch.no_grad()
    def update(self, features, targets, image_ids=None):
        features = _normalized(features)
        slots = batch_instance_slots(targets)
        stored = slots < self.num_instances
        self.instance_memory[slots[stored], targets[stored]] = features[stored]
        clusters, means = batch_cluster_means(features, targets)
        self.centroid_memory[clusters] = momentum_update(self.centroid_memory[clusters], means, self.momentum)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", hard_weight={self.hard_weight}, loss_form={self.loss_form}, "
                f"num_instances={self.num_instances}")


INTER_CAMERA_WEIGHT = 0.5  # CAP's lambda: L = L_intra + 0.5 * L_inter


class CameraProxyMemory(CentroidMemory):
    """``memory.camera_proxies`` (CAP): a centroid per (pseudo-identity, camera) instead of per identity.

    ``centroid_memory (P, D)`` holds one row per proxy of :func:`camera_proxy_index`, with
    ``proxy_identities (P,)`` and ``proxy_cameras (P,)``; the targets are proxy indices. Rows start
    at the mean of the identity's images in that camera and move towards the batch mean of those
    images, exactly as the centroid memory's rows do (the update is inherited). The loss is
    :func:`hhcl.losses.intra_camera_loss` plus ``INTER_CAMERA_WEIGHT`` times
    :func:`hhcl.losses.inter_camera_loss`: one identity's images from two cameras are pulled
    together through its proxies, where a single centroid would let the camera dominate.
    """

    mode = "camera_proxies"

    def __init__(self, num_features: int, proxy_identities: torch.Tensor, proxy_cameras: torch.Tensor,
                 temperature: float = 0.05, momentum: float = 0.1):
        super().__init__(num_features, len(proxy_identities), temperature, momentum)
        self.register_buffer("proxy_identities", torch.as_tensor(proxy_identities, dtype=torch.int64).clone())
        self.register_buffer("proxy_cameras", torch.as_tensor(proxy_cameras, dtype=torch.int64).clone())

    def forward(self, features, targets, image_ids=None):
        logits = losses.memory_logits(_normalized(features), self.centroid_memory, self.temperature)
        intra = losses.intra_camera_loss(logits, targets, self.proxy_cameras)
        inter = losses.inter_camera_loss(logits, targets, self.proxy_identities, self.proxy_cameras)
        return intra + INTER_CAMERA_WEIGHT * inter


class EpochMemory(nn.Module):
    """The epoch's memory with the terms whose targets are looked up per image.

    Args:
        main: the memory of the pseudo-labels (the mode's), called with the batch's targets.
        granularities: the clustering ensemble's memories, one per granularity, with
            ``granularity_targets (G, N)`` int64: each training image's row in each (-1: it takes
            no part in that term: an outlier there, or an image whose labels do not nest).
        camera_proxies: a :class:`CameraProxyMemory`, with ``proxy_targets (N,)`` each image's proxy
            (-1: no proxy, the image takes no part in that term).

    The loss is the mean of the main term and of each granularity's term over the batch's images
    that have a row there (a granularity with none in the batch is left out of the mean): the
    mean keeps the scale of one memory's loss, so the learning rate needs no change. The camera
    proxies' loss is added to it, at full weight: CAP trains on its proxy terms alone, here they
    join the cluster memory's.
    """

    def __init__(self, main: ClusterMemory, granularities=(), granularity_targets: torch.Tensor | None = None,
                 camera_proxies: CameraProxyMemory | None = None, proxy_targets: torch.Tensor | None = None):
        super().__init__()
        self.main = main
        self.granularities = nn.ModuleList(granularities)
        self.camera_proxies = camera_proxies
        if granularity_targets is None:
            granularity_targets = torch.zeros(0, 0, dtype=torch.int64)
        if len(granularity_targets) != len(self.granularities):
            raise ValueError(f"{len(self.granularities)} granularities but targets for {len(granularity_targets)}")
        if (camera_proxies is None) != (proxy_targets is None):
            raise ValueError("camera_proxies and proxy_targets go together")
        # the lookup tables are this epoch's labels, not state: checkpoints keep the rows only
        self.register_buffer("granularity_targets", torch.as_tensor(granularity_targets, dtype=torch.int64),
                             persistent=False)
        self.register_buffer("proxy_targets", torch.as_tensor(
            proxy_targets if proxy_targets is not None else torch.zeros(0), dtype=torch.int64), persistent=False)

    @property
    def mode(self) -> str:
        return self.main.mode

    @property
    def num_clusters(self) -> int:
        return self.main.num_clusters

    def _granularity_batches(self, image_ids: torch.Tensor):
        """Each granularity's memory with the batch positions that have a row in it, and those rows."""
        if not len(self.granularities):
            return
        for memory, rows in zip(self.granularities, self.granularity_targets[:, image_ids]):
            kept = torch.nonzero(rows >= 0).squeeze(1)
            if kept.numel():
                yield memory, kept, rows[kept]

    def _proxy_batch(self, image_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch positions whose image has a camera proxy, and those proxies."""
        rows = self.proxy_targets[image_ids]
        kept = torch.nonzero(rows >= 0).squeeze(1)
        return kept, rows[kept]

    def _global_piece(self, features: torch.Tensor) -> torch.Tensor:
        """The per-image terms' input: the whole feature, or its global piece under a :class:`PartMemory`."""
        if isinstance(self.main, PartMemory):
            return self.main.pieces(features)[:, 0]
        return features

    def forward(self, features, targets, image_ids):
        loss = self.main(features, targets)
        piece = self._global_piece(features)
        terms = [memory(piece[kept], rows) for memory, kept, rows in self._granularity_batches(image_ids)]
        if terms:
            loss = torch.stack([loss, *terms]).mean()
        if self.camera_proxies is not None:
            kept, rows = self._proxy_batch(image_ids)
            if kept.numel():
                loss = loss + self.camera_proxies(piece[kept], rows)
        return loss

    @torch.no_grad()
    def update(self, features, targets, image_ids):
        self.main.update(features, targets)
        piece = self._global_piece(features)
        for memory, kept, rows in self._granularity_batches(image_ids):
            memory.update(piece[kept], rows)
        if self.camera_proxies is not None:
            kept, rows = self._proxy_batch(image_ids)
            if kept.numel():
                self.camera_proxies.update(piece[kept], rows)

    def extra_repr(self) -> str:
        return f"granularities={len(self.granularities)}, camera_proxies={self.camera_proxies is not None}"


class PartMemory(ClusterMemory):
    """Global and part features with selective contrast (``model.parts`` P > 0).

    The features are ``(B, (1+P)*D)``: the global feature, then P stripe features from top to
    bottom, as :class:`hhcl.models.ReIDModel` returns them. ``global_memory`` is the memory of any
    mode, for the global piece; ``part_memories`` holds one :class:`CentroidMemory` ``(C, D)`` per
    stripe, on the same pseudo-identities (clustered on the global feature), with the global
    memory's temperature and momentum.

    The loss is the global memory's plus ``part_weight`` times
    :func:`hhcl.losses.selective_part_loss`: a stripe counts only where its nearest part row is
    its own identity's. Every stripe still moves its identity's part row (the centroid rule on all
    the batch's instances): the row stays the cluster's mean stripe, as it was initialised, and the
    selection applies to the loss only.
    """

    def __init__(self, global_memory: ClusterMemory, parts: int, part_weight: float = 1.0):
        super().__init__((1 + parts) * global_memory.num_features, global_memory.num_clusters,
                         global_memory.temperature, global_memory.momentum)
        if parts < 1:
            raise ValueError(f"parts must be at least 1, got {parts}")
        self.mode = global_memory.mode
        self.parts = parts
        self.part_weight = part_weight
        self.global_memory = global_memory
        self.part_memories = nn.ModuleList(
            CentroidMemory(global_memory.num_features, self.num_clusters, self.temperature, self.momentum)
            for _ in range(parts))

    def pieces(self, features: torch.Tensor) -> torch.Tensor:
        """``(N, (1+P)*D) -> (N, 1+P, D)``: piece 0 is the global feature, piece ``1+p`` stripe ``p``."""
        return features.unflatten(1, (1 + self.parts, -1))

    def initialize(self, centers, features=None, labels=None, generator=None):
        # A cluster mean of the concatenation, cut into pieces and each normalised, is the normalised
        # cluster mean of each piece: the means of the whole serve every memory.
        centers = self.pieces(centers)
        pieces = None if features is None else self.pieces(features)
        self.global_memory.initialize(centers[:, 0], None if pieces is None else pieces[:, 0], labels, generator)
        for index, part_memory in enumerate(self.part_memories):
            part_memory.initialize(centers[:, 1 + index])

    def forward(self, features, targets, image_ids=None):
        pieces = self.pieces(features)
        part_logits = torch.stack([
            losses.memory_logits(_normalized(pieces[:, 1 + index]), part_memory.centroid_memory, self.temperature)
            for index, part_memory in enumerate(self.part_memories)])
        return self.global_memory(pieces[:, 0], targets) + self.part_weight * losses.selective_part_loss(
            part_logits, targets)

    @torch.no_grad()
    def update(self, features, targets, image_ids=None):
        pieces = self.pieces(features)
        self.global_memory.update(pieces[:, 0], targets)
        for index, part_memory in enumerate(self.part_memories):
            part_memory.update(pieces[:, 1 + index], targets)

    def extra_repr(self) -> str:
        return f"parts={self.parts}, part_weight={self.part_weight}"


def _check_loss_form(loss_form: str) -> None:
    if loss_form not in losses.LOSS_FORMS:
        raise ValueError(f"unknown loss form {loss_form!r}; expected one of {losses.LOSS_FORMS}")


def build_memory(
    mode: str,
    num_features: int,
    num_clusters: int,
    temperature: float = 0.05,
    momentum: float = 0.1,
    hard_weight: float = 0.5,
    loss_form: str = "paper",
    num_instances: int = 16,
) -> ClusterMemory:
    """Create the memory of a mode (see :data:`MEMORY_MODES`), with zero rows until ``initialize``."""
    if mode == "centroid":
        return CentroidMemory(num_features, num_clusters, temperature, momentum)
    if mode == "hard":
        return HardMemory(num_features, num_clusters, temperature, momentum)
    if mode == "hybrid":
        return HybridMemory(num_features, num_clusters, temperature, momentum, hard_weight, loss_form)
    if mode == "hybrid_instance":
        return HybridInstanceMemory(num_features, num_clusters, temperature, momentum, hard_weight, loss_form,
                                    num_instances)
    raise ValueError(f"unknown memory mode {mode!r}; expected one of {MEMORY_MODES}")
