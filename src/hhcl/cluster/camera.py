"""Camera-centred features for clustering: each camera's mean feature removed, then L2-normalised.

    clustered_on, shrinkage = camera_centered_features(features, cameras)   # (N, D) unit rows, (C,) weights

A pretrained model places every camera's images around a camera-specific offset (lighting,
background, viewpoint): two people seen by one camera can be closer than one person seen by two.
Subtracting the per-camera mean removes that shared offset, as camera-based batch normalisation
(Zhuang et al., ECCV 2020) and intra-inter camera similarity (Xuan and Zhang, CVPR 2021) do, so
cross-camera neighbours become findable. The centred features only decide the pseudo-labels; the
memory and the loss keep the model's own features. What it is worth: docs/benchmarks.md.

A camera of one or a few images has no mean worth the name: the mean of one image is the image,
and removing it leaves nothing. Each camera's mean is therefore shrunk towards the pool's global
mean with a prior of ``prior_images`` images (the James-Stein / Bayesian-average form):
``(n_c * mean_c + prior * mean_all) / (n_c + prior)``. A camera of many images keeps its own mean,
one of a single image is centred on (almost) the global mean. A row that still ends near zero
(an image equal to the mean it is centred on) keeps its own, uncentred direction.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

DEFAULT_PRIOR_IMAGES = 4
_ZERO_NORM = 1e-6


def camera_centered_features(features: torch.Tensor, cameras, prior_images: float = DEFAULT_PRIOR_IMAGES
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, D)`` features minus their camera's shrunk mean, L2-normalised; ``cameras`` is ``(N,)`` integers.

    Any integer marks a camera (``-1`` too: images of unknown camera are centred together). With
    one camera this centres the whole set on its mean. Returns ``(centred, own_weight)``: a new
    float32 tensor with unit rows, and per distinct camera (in ``torch.unique`` order) the weight
    ``n_c / (n_c + prior_images)`` its own mean got (1 with ``prior_images=0``).
    """
    features = torch.as_tensor(features).float()
    cameras = torch.as_tensor(cameras, dtype=torch.int64, device=features.device)
    if features.ndim != 2 or cameras.shape != (features.shape[0],):
        raise ValueError(f"features must be (N, D) and cameras (N,), got {tuple(features.shape)} "
                         f"and {tuple(cameras.shape)}")
    if prior_images < 0:
        raise ValueError(f"prior_images must be >= 0, got {prior_images}")
    if features.shape[0] == 0:
        return features.clone(), features.new_zeros(0)
    _, camera_index = torch.unique(cameras, return_inverse=True)
    num_cameras = int(camera_index.max()) + 1
    sums = features.new_zeros(num_cameras, features.shape[1]).index_add_(0, camera_index, features)
    counts = torch.bincount(camera_index, minlength=num_cameras).to(features.dtype)
    global_mean = features.mean(dim=0, keepdim=True)
    means = (sums + prior_images * global_mean) / (counts + prior_images)[:, None]
    centred = features - means[camera_index]
    degenerate = centred.norm(dim=1) < _ZERO_NORM
    centred[degenerate] = features[degenerate]
    return F.normalize(centred, dim=1), counts / (counts + prior_images)


__all__ = ["DEFAULT_PRIOR_IMAGES", "camera_centered_features"]
