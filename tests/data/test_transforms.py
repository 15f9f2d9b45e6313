"""Batched transforms against per-image references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hhcl.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    TrainAugmentation,
    erasing_boxes,
    flip_pad_crop,
    normalize_batch,
)


def random_batch(count=6, height=16, width=8, seed=0):
    return torch.randint(0, 256, (count, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_normalize_batch_matches_formula():
    images = random_batch()
    mean = torch.tensor(IMAGENET_MEAN)[:, None, None]
    std = torch.tensor(IMAGENET_STD)[:, None, None]
    expected = (images.float() / 255.0 - mean) / std
    result = normalize_batch(images)
    assert result.dtype == torch.float32 and result.shape == images.shape
    assert torch.allclose(result, expected, atol=1e-5)


def test_flip_pad_crop_matches_per_image_reference():
    images = random_batch(count=8)
    flip = torch.tensor([0, 1, 0, 1, 0, 1, 1, 0], dtype=torch.bool)
    top = torch.tensor([0, 20, 10, 3, 17, 0, 5, 20])
    left = torch.tensor([0, 20, 10, 19, 2, 7, 0, 13])
    result = flip_pad_crop(images, flip, top, left, padding=10)
    for index in range(len(images)):
        image = images[index].numpy()
        if flip[index]:
            image = image[:, :, ::-1]
        padded = np.pad(image, ((0, 0), (10, 10), (10, 10)))
        expected = padded[:, top[index] : top[index] + 16, left[index] : left[index] + 8]
        assert np.array_equal(result[index].numpy(), expected)


def test_without_randomness_training_equals_test_transform():
    images = random_batch(height=32, width=16)
    augmentation = TrainAugmentation(32, 16, flip_probability=0.0, padding=0, erasing_probability=0.0)
    assert torch.equal(augmentation(images), normalize_batch(images))


def test_random_erasing_boxes_and_mean_fill():
    height, width = 64, 32
    images = torch.full((200, 3, height, width), 255, dtype=torch.uint8)
    augmentation = TrainAugmentation(height, width, flip_probability=0.0, padding=0, erasing_probability=1.0)
    result = augmentation(images, generator=torch.Generator().manual_seed(0))
    erased = (result == 0).all(dim=1)  # the mean colour normalises to 0 in every channel
    untouched = torch.isclose(result, normalize_batch(images)).all(dim=1)
    assert (erased | untouched).all()
    for mask in erased:
        rows = torch.nonzero(mask.any(dim=1)).squeeze(1)
        cols = torch.nonzero(mask.any(dim=0)).squeeze(1)
        box_height, box_width = len(rows), len(cols)
        assert mask.sum() == box_height * box_width  # one solid rectangle
        assert rows[-1] - rows[0] + 1 == box_height and cols[-1] - cols[0] + 1 == box_width
        area = box_height * box_width / (height * width)
        # rounding each side to whole pixels moves area and aspect a little past the bounds
        assert 0.015 <= area <= 0.43
        assert 0.3 * 0.8 <= box_height / box_width <= (1 / 0.3) * 1.2


def test_erasing_probability_and_crop_offsets_are_spread():
    images = torch.full((2000, 3, 32, 16), 200, dtype=torch.uint8)
    augmentation = TrainAugmentation(32, 16, flip_probability=0.0, padding=10, erasing_probability=0.5)
    result = augmentation(images, generator=torch.Generator().manual_seed(1))
    erased = ((result == 0).all(dim=1)).flatten(1).any(dim=1)
    assert 0.45 < erased.float().mean() < 0.55
    # zero padding shows as black rows at the top: the crop's top offset is 10 - black rows
    black = torch.isclose(result, normalize_batch(torch.zeros_like(images[:1]))[0, :, :1, :1]).all(dim=1)
    black_top_rows = black.all(dim=2).int().cumprod(dim=1).sum(dim=1)
    assert set(black_top_rows[~erased].tolist()) == set(range(11))


def test_flip_is_a_mirror_half_the_time():
    images = torch.zeros((1000, 3, 8, 4), dtype=torch.uint8)
    images[:, :, :, 0] = 255  # a bright left column
    augmentation = TrainAugmentation(8, 4, padding=0, erasing_probability=0.0)
    result = augmentation(images, generator=torch.Generator().manual_seed(2))
    bright_right = result[:, 0, 0, 3] > 0
    assert torch.equal(bright_right, ~(result[:, 0, 0, 0] > 0))
    assert 0.45 < bright_right.float().mean() < 0.55


def test_reproducible_by_generator():
    images = random_batch(count=16, height=32, width=16)
    augmentation = TrainAugmentation(32, 16)
    first = augmentation(images, generator=torch.Generator().manual_seed(3))
    again = augmentation(images, generator=torch.Generator().manual_seed(3))
    other = augmentation(images, generator=torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_erasing_attempts_almost_always_fit():
    found, top, left, box_height, box_width = erasing_boxes(
        20000, 256, 128, (0.02, 0.4), 0.3, 10, torch.Generator().manual_seed(0), torch.device("cpu")
    )
    assert found.all()
    assert ((top + box_height) <= 256).all() and ((left + box_width) <= 128).all()
    single, *_ = erasing_boxes(20000, 256, 128, (0.02, 0.4), 0.3, 1, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert 0.02 < 1 - single.float().mean() < 0.1


def test_wrong_input():
    augmentation = TrainAugmentation(32, 16)
    with pytest.raises(ValueError, match="expects 32x16"):
        augmentation(random_batch(height=16, width=8))
    with pytest.raises(ValueError, match="uint8 batch"):
        normalize_batch(torch.zeros((2, 3, 4, 4)))
