"""The contrastive losses of HHCL, as pure functions of logits and targets.

Every loss here is a cross-entropy over the similarities between a batch of L2-normalised
features and a cluster memory (one row, or one set of rows, per pseudo-identity), divided by a
temperature. The memories themselves, and their updates, live in :mod:`hhcl.memory`.

Notation: ``B`` is the batch size, ``C`` the number of clusters, ``K`` the number of instance
slots per cluster and ``D`` the feature dimension.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hhcl.config import LOSS_FORMS


def memory_logits(features: torch.Tensor, memory: torch.Tensor, temperature: float) -> torch.Tensor:
    """Scaled cosine similarities between a batch and the rows of a memory.

    Args:
        features: ``(B, D)``, L2-normalised.
        memory: ``(C, D)``, L2-normalised rows, or ``(K, C, D)`` for instance slots.
        temperature: the softmax temperature (0.05 in the paper).

    Returns:
        ``(B, C)`` logits, or ``(B, C, K)`` when ``memory`` holds instance slots.
    """
    if memory.dim() == 3:
        return torch.einsum("bd,kcd->bck", features, memory) / temperature
    return features @ memory.t() / temperature


def cluster_contrast_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``(B, C)`` logits against the ``(B,)`` cluster indices, batch mean."""
    return F.cross_entropy(logits, targets)


def hard_instance_logits(instance_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Collapse per-slot logits to one hard logit per cluster.

    For its own cluster a sample takes the *least* similar slot (the hardest positive); for every
    other cluster it takes the *most* similar slot (the hardest negative).

    Args:
        instance_logits: ``(B, C, K)`` logits against K instance slots per cluster.
        targets: ``(B,)`` int64 cluster index of each sample.

    Returns:
        ``(B, C)`` logits.
    """
    hardest_positive = instance_logits.amin(dim=2)
    hardest_negative = instance_logits.amax(dim=2)
    own_cluster = F.one_hot(targets, num_classes=instance_logits.shape[1]).bool()
    return torch.where(own_cluster, hardest_positive, hardest_negative)


def hybrid_loss(
    hard_logits: torch.Tensor,
    centroid_logits: torch.Tensor,
    targets: torch.Tensor,
    hard_weight: float = 0.5,
    form: str = "paper",
) -> torch.Tensor:
    """HHCL's hybrid loss: a hard-sample term and a cluster-centroid term.

    Args:
        hard_logits: ``(B, C)`` logits against the hard memory.
        centroid_logits: ``(B, C)`` logits against the centroid memory.
        targets: ``(B,)`` int64 cluster indices.
        hard_weight: ``w``, the weight of the hard term.
        form: ``"paper"`` gives ``w*CE_hard + (1-w)*CE_centroid`` (the paper's equation);
            ``"official"`` gives ``w*(CE_hard + (1-w)*CE_centroid)``, which is what the authors'
            released code computes (at w = 0.5 it halves the total and weights the terms 2:1).

    Returns:
        The scalar loss.
    """
    hard = cluster_contrast_loss(hard_logits, targets)
    centroid = cluster_contrast_loss(centroid_logits, targets)
    if form == "paper":
        return hard_weight * hard + (1.0 - hard_weight) * centroid
    if form == "official":
        return hard_weight * (hard + (1.0 - hard_weight) * centroid)
    raise ValueError(f"unknown loss form {form!r}; expected one of {LOSS_FORMS}")


def hybrid_instance_loss(
    instance_logits: torch.Tensor,
    centroid_logits: torch.Tensor,
    targets: torch.Tensor,
    hard_weight: float = 0.5,
    form: str = "paper",
) -> torch.Tensor:
    """The instance-slot variant of the hybrid loss (``CMhybrid_v2`` in the authors' code).

    Args:
        instance_logits: ``(B, C, K)`` logits against K instance slots per cluster.
        centroid_logits: ``(B, C)`` logits against the centroid memory.
        targets: ``(B,)`` int64 cluster indices.
        hard_weight: ``w``.
        form: ``"paper"`` gives ``w*CE_instance + (1-w)*CE_centroid``, with ``w`` weighting the
            hard term as in :func:`hybrid_loss`. ``"official"`` gives what the authors' code
            computes for this mode, ``w*CE_centroid + (1-w)*CE_instance``: the weights are
            swapped there (the two agree at the default w = 0.5).

    Returns:
        The scalar loss.
    """
    instance = cluster_contrast_loss(hard_instance_logits(instance_logits, targets), targets)
    centroid = cluster_contrast_loss(centroid_logits, targets)
    if form == "paper":
        return hard_weight * instance + (1.0 - hard_weight) * centroid
    if form == "official":
        return hard_weight * centroid + (1.0 - hard_weight) * instance
    raise ValueError(f"unknown loss form {form!r}; expected one of {LOSS_FORMS}")


# ---------------------------------------------------------------------------------------------
# Camera-aware proxies (CAP: Wang, Lai, Huang et al., AAAI 2021): one memory row per
# (pseudo-identity, camera), ``P`` rows in all. A masked-out logit is set to the dtype's lowest
# finite value rather than -inf, so that a row with nothing left still has a finite gradient.
# ---------------------------------------------------------------------------------------------


def intra_camera_loss(logits: torch.Tensor, targets: torch.Tensor, proxy_cameras: torch.Tensor) -> torch.Tensor:
    """CAP's intra-camera term: each sample against the proxies of its own camera only.

    The positive is the sample's own proxy (its identity in its camera), the negatives are the
    other identities' proxies in that camera: what tells people apart under one camera's look.
    A camera holding a single proxy gives its samples a loss of 0.

    Args:
        logits: ``(B, P)`` logits against the proxies.
        targets: ``(B,)`` int64 the proxy of each sample.
        proxy_cameras: ``(P,)`` int64 the camera of each proxy.

    Returns:
        The scalar batch mean.
    """
    own_camera = proxy_cameras.unsqueeze(0) == proxy_cameras[targets].unsqueeze(1)
    return F.cross_entropy(logits.masked_fill(~own_camera, torch.finfo(logits.dtype).min), targets)


def inter_camera_loss(logits: torch.Tensor, targets: torch.Tensor, proxy_identities: torch.Tensor,
                      proxy_cameras: torch.Tensor) -> torch.Tensor:
    """CAP's inter-camera term: a sample pulled towards its identity's proxies in the other cameras.

    For each positive proxy ``k`` (the sample's identity, another camera) the term is
    ``-log(exp(s_k) / (exp(s_k) + sum_j exp(s_j)))`` over the negatives ``j``, every proxy of
    another identity in any camera; it is averaged over the sample's positives, then over the
    samples that have one. A sample whose identity holds images in one camera only has no
    positive and adds nothing. CAP sums over its 50 hardest negatives only; here the negatives
    are all of them, the same denominator as the cluster memories' softmax over every row.

    Args:
        logits: ``(B, P)`` logits against the proxies.
        targets: ``(B,)`` int64 the proxy of each sample.
        proxy_identities: ``(P,)`` int64 the pseudo-identity of each proxy.
        proxy_cameras: ``(P,)`` int64 the camera of each proxy.

    Returns:
        The scalar mean over the samples with a positive; 0 (still part of the graph) when none has one.
    """
    same_identity = proxy_identities.unsqueeze(0) == proxy_identities[targets].unsqueeze(1)
    positive = same_identity & (proxy_cameras.unsqueeze(0) != proxy_cameras[targets].unsqueeze(1))
    lowest = torch.finfo(logits.dtype).min
    negatives = torch.logsumexp(logits.masked_fill(same_identity, lowest), dim=1, keepdim=True)
    per_positive = torch.logaddexp(logits, negatives) - logits
    positives = positive.sum(dim=1)
    per_sample = torch.where(positive, per_positive, 0.0).sum(dim=1) / positives.clamp(min=1)
    has_positive = positives > 0
    return torch.where(has_positive, per_sample, 0.0).sum() / has_positive.sum().clamp(min=1)


def selective_mask(part_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Which parts agree with their sample's global pseudo-label.

    Part ``p`` of sample ``b`` agrees when its nearest row in part ``p``'s memory is its own
    identity's (a tie with another row counts as agreeing): classified by its stripe alone, the
    sample would get the label the global feature gave it. A stripe that shows an occluder, the
    background or another person falls nearer another identity's stripe and is left out.

    Args:
        part_logits: ``(P, B, C)`` logits of the P part features against their centroid memories.
        targets: ``(B,)`` int64 global pseudo-labels.

    Returns:
        ``(P, B)`` bool.
    """
    own = part_logits.gather(2, targets.expand(part_logits.shape[0], -1).unsqueeze(2)).squeeze(2)
    return own >= part_logits.amax(dim=2)


def selective_part_loss(part_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Selective contrast of the parts: the cross-entropy of each agreeing part (:func:`selective_mask`,
    taken without gradient) against the global pseudo-label, averaged over the agreeing
    (part, sample) pairs; 0 when none agrees.

    Args:
        part_logits: ``(P, B, C)`` logits against the P part centroid memories.
        targets: ``(B,)`` int64 global pseudo-labels.

    Returns:
        The scalar loss.
    """
    parts = part_logits.shape[0]
    counted = selective_mask(part_logits.detach(), targets)
    per_part = F.cross_entropy(part_logits.flatten(0, 1), targets.repeat(parts), reduction="none")
    per_part = torch.where(counted.flatten(), per_part, torch.zeros_like(per_part))
    return per_part.sum() / counted.sum().clamp(min=1)
