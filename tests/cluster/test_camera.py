"""Camera-centred features (hhcl.cluster.camera)."""

import pytest
import torch
from torch.nn import functional as F

from hhcl.cluster import pseudo_labels
from hhcl.cluster.camera import camera_centered_features


def test_each_camera_mean_is_removed_and_rows_are_unit_length():
    generator = torch.Generator().manual_seed(0)
    features = F.normalize(torch.randn(12, 5, generator=generator), dim=1)
    cameras = torch.tensor([0, 0, 0, 3, 3, 3, 3, -1, -1, 7, 7, 7])
    centred, own_weight = camera_centered_features(features, cameras, prior_images=0)
    torch.testing.assert_close(own_weight, torch.ones(4))
    for camera in cameras.unique():
        members = cameras == camera
        expected = F.normalize(features[members] - features[members].mean(0), dim=1)
        torch.testing.assert_close(centred[members], expected)
    torch.testing.assert_close(centred.norm(dim=1), torch.ones(12))


def test_one_camera_centres_the_whole_set_and_accepts_numpy_and_lists():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    centred, _ = camera_centered_features(features.numpy(), [5, 5, 5], prior_images=0)
    torch.testing.assert_close(centred, F.normalize(features - features.mean(0), dim=1))


def test_a_camera_offset_that_hides_identities_is_removed():
    # two people, each seen by two cameras; a strong per-camera offset makes each camera its own cluster
    generator = torch.Generator().manual_seed(1)
    people = F.normalize(torch.randn(2, 16, generator=generator), dim=1)
    offsets = 3.0 * F.normalize(torch.randn(2, 16, generator=generator), dim=1)
    person = torch.arange(2).repeat_interleave(6).repeat(2)
    camera = torch.arange(2).repeat_interleave(12)
    noise = 0.05 * torch.randn(24, 16, generator=generator)
    features = F.normalize(people[person] + offsets[camera] + noise, dim=1)

    raw_labels, _ = pseudo_labels(features, eps=0.5, min_samples=4, k1=10, k2=3)
    centred_labels, _ = pseudo_labels(camera_centered_features(features, camera, prior_images=0)[0], eps=0.5, min_samples=4, k1=10, k2=3)

    def groups(labels):
        return {tuple(sorted(torch.nonzero(torch.as_tensor(labels) == c).flatten().tolist())) for c in set(labels) - {-1}}

    by_person = {tuple(torch.nonzero(person == p).flatten().tolist()) for p in range(2)}
    by_camera = {tuple(torch.nonzero(camera == c).flatten().tolist()) for c in range(2)}
    assert groups(raw_labels) == by_camera
    assert groups(centred_labels) == by_person


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="cameras"):
        camera_centered_features(torch.zeros(3, 2), [0, 1])


def test_a_camera_mean_is_shrunk_towards_the_pool_mean_by_its_size():
    generator = torch.Generator().manual_seed(2)
    features = F.normalize(torch.randn(11, 6, generator=generator), dim=1)
    cameras = torch.tensor([0] * 8 + [1] * 2 + [2])
    centred, own_weight = camera_centered_features(features, cameras, prior_images=4)
    torch.testing.assert_close(own_weight, torch.tensor([8 / 12, 2 / 6, 1 / 5]))
    pool_mean = features.mean(0)
    for camera, weight in zip(range(3), own_weight):
        members = cameras == camera
        mean = weight * features[members].mean(0) + (1 - weight) * pool_mean
        torch.testing.assert_close(centred[members], F.normalize(features[members] - mean, dim=1))


def test_a_one_image_camera_gives_a_unit_row_not_a_zero_vector():
    # without shrinkage a camera of one image is centred on itself: the row keeps its own direction
    features = F.normalize(torch.tensor([[1.0, 0.2], [0.9, 0.1], [0.1, 1.0]]), dim=1)
    for prior in (0, 8):
        centred, _ = camera_centered_features(features, [0, 0, 1], prior_images=prior)
        torch.testing.assert_close(centred.norm(dim=1), torch.ones(3))
    centred, _ = camera_centered_features(features, [0, 0, 1], prior_images=0)
    torch.testing.assert_close(centred[2], features[2])
