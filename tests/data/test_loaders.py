"""Test and train loaders: order, shapes, P x K batches, determinism, workers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hhcl.data.loaders import build_test_loader, build_train_loader
from hhcl.errors import HHCLError


@pytest.fixture
def items(tmp_path):
    """12 images of 4 identities x 3 cameras; pixel value encodes the index."""
    result = []
    for index in range(12):
        pid, cam = index // 3, index % 3
        path = tmp_path / f"{pid:04d}_c{cam + 1}_{index:02d}.png"
        Image.fromarray(np.full((20, 10, 3), index * 10, dtype=np.uint8)).save(path)
        result.append((str(path), pid, cam))
    return result


def test_test_loader_keeps_order_and_resizes(items):
    batches = list(build_test_loader(items, batch_size=5, height=16, width=8))
    assert [len(indices) for _, indices in batches] == [5, 5, 2]
    images = torch.cat([images for images, _ in batches])
    indices = torch.cat([indices for _, indices in batches])
    assert images.dtype == torch.uint8 and images.shape == (12, 3, 16, 8)
    assert indices.dtype == torch.int64 and indices.tolist() == list(range(12))
    assert images[:, 0, 8, 4].tolist() == [index * 10 for index in range(12)]
    # Plain paths work as well as (path, pid, camid) tuples.
    paths_only = list(build_test_loader([path for path, _, _ in items], batch_size=12, height=16, width=8))
    assert torch.equal(paths_only[0][0], images)


def test_train_loader_batches_are_p_by_k(items):
    labels = [item[1] for item in items]
    loader = build_train_loader(items, labels, batch_size=6, num_instances=3, height=16, width=8, seed=0, iters=5)
    assert len(loader) == 5
    batches = list(loader)
    assert len(batches) == 5
    for images, batch_labels, indices in batches:
        assert images.shape == (6, 3, 16, 8) and images.dtype == torch.uint8
        assert batch_labels.dtype == torch.int64 and indices.dtype == torch.int64
        assert batch_labels.tolist() == [labels[i] for i in indices.tolist()]
        # pixels belong to the indexed image
        assert images[:, 0, 8, 4].tolist() == [i * 10 for i in indices.tolist()]
        groups = batch_labels.view(2, 3)
        assert (groups == groups[:, :1]).all()
        # each anchor is followed by images from its identity's other cameras
        for group in indices.view(2, 3).tolist():
            cams = [items[i][2] for i in group]
            assert cams[0] not in cams[1:]


def test_train_loader_yields_the_image_ids_given_in_place_of_positions(items):
    labels = [item[1] for item in items]
    image_ids = np.arange(12) * 7 + 100  # e.g. each item's row in a larger training set
    plain = build_train_loader(items, labels, batch_size=6, num_instances=3, height=16, width=8, seed=0, iters=3)
    mapped = build_train_loader(items, labels, batch_size=6, num_instances=3, height=16, width=8, seed=0, iters=3,
                                image_ids=image_ids)
    for (images, batch_labels, positions), (same_images, same_labels, ids) in zip(plain, mapped):
        assert torch.equal(images, same_images) and torch.equal(batch_labels, same_labels)
        assert ids.tolist() == image_ids[positions.numpy()].tolist()
    with pytest.raises(ValueError, match="image_ids"):
        build_train_loader(items, labels, batch_size=6, num_instances=3, image_ids=image_ids[:5])


def test_train_loader_deterministic_and_continuing(items):
    labels = np.array([item[1] for item in items])

    def run(seed):
        loader = build_train_loader(items, labels, batch_size=6, num_instances=3, height=16, width=8, seed=seed, iters=3)
        return [indices.tolist() for _, _, indices in loader], [indices.tolist() for _, _, indices in loader]

    first_epoch, second_epoch = run(0)
    assert run(0) == (first_epoch, second_epoch)
    assert second_epoch != first_epoch  # the stream goes on, it does not restart
    assert run(1)[0] != first_epoch


def test_train_loader_ignores_outliers(items):
    labels = torch.tensor([0, 0, 0, -1, -1, -1, 1, 1, -1, -1, -1, -1])
    loader = build_train_loader(items, labels, batch_size=4, num_instances=2, height=16, width=8, iters=6)
    seen = torch.cat([indices for _, _, indices in loader])
    assert set(seen.tolist()) <= {0, 1, 2, 6, 7}


def test_train_loader_with_workers(items):
    labels = [item[1] for item in items]
    serial = build_train_loader(items, labels, batch_size=6, num_instances=3, height=16, width=8, seed=5, iters=4)
    parallel = build_train_loader(items, labels, batch_size=6, num_instances=3, height=16, width=8, seed=5, iters=4,
                                  num_workers=2)
    for (images_a, labels_a, indices_a), (images_b, labels_b, indices_b) in zip(serial, parallel, strict=True):
        assert torch.equal(images_a, images_b) and torch.equal(indices_a, indices_b)


def test_train_loader_errors(items):
    labels = [item[1] for item in items]
    with pytest.raises(HHCLError, match="not a multiple of num_instances"):
        build_train_loader(items, labels, batch_size=10, num_instances=4)
    with pytest.raises(HHCLError, match="nothing to sample"):
        build_train_loader(items, [-1] * 12, batch_size=8, num_instances=4)
    with pytest.raises(ValueError, match="labels has shape"):
        build_train_loader(items, labels[:5], batch_size=8, num_instances=4)
