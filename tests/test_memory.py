import collections
import math

import pytest
import torch
import torch.nn.functional as F

from hhcl import losses
from hhcl import memory as mem


def unit(*values):
    vector = torch.tensor(values, dtype=torch.float32)
    return vector / vector.norm()


# --- pure functions ----------------------------------------------------------------------------


def test_cluster_centers_are_normalised_means_ignoring_outliers():
    features = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [5.0, 5.0]])
    centers = mem.cluster_centers(features, torch.tensor([0, 0, 1, -1]), num_clusters=2)
    assert torch.allclose(centers, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))


def test_cluster_centers_reject_an_empty_cluster():
    with pytest.raises(ValueError, match="cluster 1"):
        mem.cluster_centers(torch.ones(3, 2), torch.tensor([0, 2, 2]), num_clusters=3)


def test_momentum_update_by_hand():
    row = torch.tensor([[1.0, 0.0]])
    new = torch.tensor([[0.0, 1.0]])
    updated = mem.momentum_update(row, new, momentum=0.1)
    assert torch.allclose(updated, torch.tensor([[0.1, 0.9]]) / math.sqrt(0.82))


def test_batch_cluster_means():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    clusters, means = mem.batch_cluster_means(features, torch.tensor([2, 0, 2]))
    assert clusters.tolist() == [0, 2]
    assert torch.allclose(means, torch.tensor([[0.0, 1.0], [0.5, 1.5]]))


def test_batch_hardest_instances_pick_least_similar_to_the_row():
    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    features = torch.stack([unit(0.6, 0.8), unit(0.0, 1.0), unit(1.0, 0.0), unit(0.8, 0.6)])
    targets = torch.tensor([0, 0, 1, 0])
    clusters, hardest = mem.batch_hardest_instances(features, targets, memory)
    assert clusters.tolist() == [0, 1]
    # similarities to row 0: 0.6, 0.0, 0.8 -> the second instance
    assert torch.allclose(hardest, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_batch_hardest_instances_break_ties_by_batch_order():
    memory = torch.tensor([[1.0, 0.0]])
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])  # the last two tie at 0
    _, hardest = mem.batch_hardest_instances(features, torch.tensor([0, 0, 0]), memory)
    assert torch.equal(hardest, torch.tensor([[0.0, 1.0]]))


def test_batch_instance_slots_count_within_cluster_in_batch_order():
    slots = mem.batch_instance_slots(torch.tensor([3, 1, 3, 3, 1, 0]))
    assert slots.tolist() == [0, 0, 1, 2, 1, 0]


def test_sample_cluster_members_draw_only_from_their_cluster():
    features = torch.eye(6)
    labels = torch.tensor([1, -1, 0, 1, 0, 0])
    slots = mem.sample_cluster_members(features, labels, num_clusters=2, num_slots=5,
                                       generator=torch.Generator().manual_seed(0))
    assert slots.shape == (5, 2, 6)
    member_of = {0: {2, 4, 5}, 1: {0, 3}}
    for cluster, members in member_of.items():
        drawn = slots[:, cluster].argmax(dim=1).tolist()
        assert set(drawn) <= members
    again = mem.sample_cluster_members(features, labels, 2, 5, torch.Generator().manual_seed(0))
    assert torch.equal(slots, again)


# --- reference loops: what the authors' per-sample code does ---------------------------------


def reference_hard_update(rows, features, targets, momentum):
    rows = rows.clone()
    by_cluster = collections.defaultdict(list)
    for feature, target in zip(features, targets.tolist()):
        by_cluster[target].append(feature)
    for target, members in by_cluster.items():
        similarities = [float(member @ rows[target]) for member in members]
        hardest = members[similarities.index(min(similarities))]
        rows[target] = momentum * rows[target] + (1 - momentum) * hardest
        rows[target] /= rows[target].norm()
    return rows


def reference_mean_update(rows, features, targets, momentum):
    rows = rows.clone()
    for target in sorted(set(targets.tolist())):
        mean = features[targets == target].mean(0)
        rows[target] = momentum * rows[target] + (1 - momentum) * mean
        rows[target] /= rows[target].norm()
    return rows


def random_batch(seed, num_clusters=7, batch_size=24, dim=16):
    generator = torch.Generator().manual_seed(seed)
    rows = F.normalize(torch.randn(num_clusters, dim, generator=generator), dim=1)
    features = F.normalize(torch.randn(batch_size, dim, generator=generator), dim=1)
    targets = torch.randint(0, num_clusters - 2, (batch_size,), generator=generator)  # 2 clusters absent
    return rows, features, targets


# --- memories ----------------------------------------------------------------------------------


def test_centroid_memory_update_by_hand():
    memory = mem.CentroidMemory(num_features=2, num_clusters=3, momentum=0.1)
    memory.initialize(torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    features = torch.stack([unit(0.6, 0.8), unit(0.0, 1.0), unit(0.8, 0.6), unit(1.0, 0.0)])
    memory.update(features, torch.tensor([0, 0, 0, 1]))
    # cluster 0: mean [1.4/3, 2.4/3]; 0.1*[1, 0] + 0.9*mean = [0.52, 0.72]
    assert torch.allclose(memory.centroid_memory[0], unit(0.52, 0.72))
    assert torch.allclose(memory.centroid_memory[1], unit(0.9, 0.1))
    assert torch.allclose(memory.centroid_memory[2], unit(1.0, 1.0))  # absent: untouched


def test_centroid_update_equals_the_per_sample_rule_with_one_instance_per_cluster():
    rows, features, _ = random_batch(0)
    targets = torch.tensor([4, 0, 2, 1])
    memory = mem.CentroidMemory(16, 7, momentum=0.1)
    memory.initialize(rows)
    memory.update(features[:4], targets)
    sequential = rows.clone()
    for feature, target in zip(features[:4], targets.tolist()):
        sequential[target] = F.normalize(0.1 * sequential[target] + 0.9 * feature, dim=0)
    assert torch.allclose(memory.centroid_memory, sequential, atol=1e-6)


def test_centroid_update_equals_the_batch_mean_rule_on_a_random_batch():
    rows, features, targets = random_batch(1)
    memory = mem.CentroidMemory(16, 7, momentum=0.1)
    memory.initialize(rows)
    memory.update(features, targets)
    assert torch.allclose(memory.centroid_memory, reference_mean_update(rows, features, targets, 0.1), atol=1e-6)


def test_hard_memory_update_by_hand():
    memory = mem.HardMemory(num_features=2, num_clusters=3, momentum=0.1)
    memory.initialize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    features = torch.stack([unit(0.6, 0.8), unit(0.0, 1.0), unit(0.8, 0.6), unit(1.0, 0.0)])
    memory.update(features, torch.tensor([0, 0, 0, 1]))
    assert torch.allclose(memory.hard_memory[0], unit(0.1, 0.9))  # the hardest is [0, 1]
    assert torch.allclose(memory.hard_memory[1], unit(0.9, 0.1))
    assert torch.allclose(memory.hard_memory[2], unit(1.0, 1.0))


def test_hard_update_equals_the_authors_loop_on_a_random_batch():
    rows, features, targets = random_batch(2)
    memory = mem.HardMemory(16, 7, momentum=0.1)
    memory.initialize(rows)
    memory.update(features, targets)
    assert torch.allclose(memory.hard_memory, reference_hard_update(rows, features, targets, 0.1), atol=1e-6)


def test_hybrid_memory_updates_both_memories_by_their_own_rule():
    rows, features, targets = random_batch(3)
    memory = mem.HybridMemory(16, 7, momentum=0.1)
    memory.initialize(rows)
    memory.update(features, targets)
    assert torch.allclose(memory.hard_memory, reference_hard_update(rows, features, targets, 0.1), atol=1e-6)
    assert torch.allclose(memory.centroid_memory, reference_mean_update(rows, features, targets, 0.1), atol=1e-6)


def test_update_normalises_the_features():
    rows, features, targets = random_batch(4)
    plain = mem.HybridMemory(16, 7)
    scaled = mem.HybridMemory(16, 7)
    plain.initialize(rows)
    scaled.initialize(rows)
    plain.update(features, targets)
    scaled.update(3.0 * features, targets)
    assert torch.allclose(plain.hard_memory, scaled.hard_memory, atol=1e-6)
    assert torch.allclose(plain.centroid_memory, scaled.centroid_memory, atol=1e-6)


def test_hybrid_instance_memory_overwrites_slots_in_batch_order():
    memory = mem.HybridInstanceMemory(num_features=2, num_clusters=3, momentum=0.1, num_instances=2)
    centers = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    memory.initialize(centers)
    assert torch.equal(memory.instance_memory, centers.expand(2, 3, 2))
    f0, f1, f2, f3 = unit(1.0, 1.0), unit(1.0, 2.0), unit(2.0, 1.0), unit(-1.0, 3.0)
    memory.update(torch.stack([f0, f1, f2, f3]), torch.tensor([1, 0, 1, 1]))
    assert torch.allclose(memory.instance_memory[0, 1], f0)
    assert torch.allclose(memory.instance_memory[1, 1], f2)  # f3 is a third instance: not stored
    assert torch.allclose(memory.instance_memory[0, 0], f1)
    assert torch.equal(memory.instance_memory[1, 0], centers[0])  # no second instance of cluster 0
    assert torch.equal(memory.instance_memory[:, 2], centers[2].expand(2, 2))
    # the centroid half moves towards the batch mean, as in the centroid mode
    expected = reference_mean_update(F.normalize(centers, dim=1), torch.stack([f0, f1, f2, f3]),
                                     torch.tensor([1, 0, 1, 1]), 0.1)
    assert torch.allclose(memory.centroid_memory, expected, atol=1e-6)


def test_hybrid_instance_memory_initialises_slots_from_cluster_members():
    memory = mem.HybridInstanceMemory(num_features=4, num_clusters=2, num_instances=3)
    features = torch.eye(4)
    labels = torch.tensor([0, 1, 0, -1])
    centers = mem.cluster_centers(features, labels, 2)
    memory.initialize(centers, features, labels, torch.Generator().manual_seed(0))
    assert torch.equal(memory.instance_memory[:, 1], features[1].expand(3, 4))  # one member only
    assert set(memory.instance_memory[:, 0].argmax(dim=1).tolist()) <= {0, 2}


def test_centroid_and_hard_losses_by_hand():
    temperature = 1.0
    for memory in (mem.CentroidMemory(2, 2, temperature), mem.HardMemory(2, 2, temperature)):
        memory.initialize(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        loss = memory(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))  # normalised to [1, 0]
        assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))


@pytest.mark.parametrize("form", ["paper", "official"])
def test_hybrid_loss_by_hand(form):
    memory = mem.HybridMemory(2, 2, temperature=1.0, hard_weight=0.3, loss_form=form)
    memory.hard_memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    memory.centroid_memory.copy_(torch.tensor([[0.6, 0.8], [0.8, 0.6]]))
    loss = memory(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))
    ce_hard = math.log(1 + math.exp(-1.0))  # logits [1, 0]
    ce_centroid = math.log(1 + math.exp(0.2))  # logits [0.6, 0.8]
    expected = 0.3 * ce_hard + 0.7 * ce_centroid if form == "paper" else 0.3 * (ce_hard + 0.7 * ce_centroid)
    assert loss.item() == pytest.approx(expected)


def test_hybrid_instance_loss_by_hand():
    memory = mem.HybridInstanceMemory(2, 2, temperature=1.0, hard_weight=0.5, num_instances=2)
    memory.centroid_memory.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    memory.instance_memory.copy_(torch.tensor([
        [[1.0, 0.0], [0.6, 0.8]],
        [[0.0, 1.0], [-1.0, 0.0]],
    ]))
    loss = memory(torch.tensor([[1.0, 0.0]]), torch.tensor([0]))
    # own slots: similarities 1 and 0 -> positive 0; cluster 1 slots: 0.6 and -1 -> negative 0.6
    ce_instance = math.log(1 + math.exp(0.6))
    ce_centroid = math.log(1 + math.exp(-1.0))
    assert loss.item() == pytest.approx(0.5 * ce_instance + 0.5 * ce_centroid)


def test_loss_backpropagates_to_features_and_update_needs_no_grad():
    rows, features, targets = random_batch(5)
    memory = mem.HybridMemory(16, 7)
    memory.initialize(rows)
    features = features.clone().requires_grad_(True)
    memory(features, targets).backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    memory.update(features, targets)  # gradients on the input must not leak into the memory
    assert not memory.hard_memory.requires_grad and not memory.centroid_memory.requires_grad


def test_memory_rows_stay_unit_length_after_many_updates():
    rows, _, _ = random_batch(6)
    generator = torch.Generator().manual_seed(7)
    memory = mem.HybridInstanceMemory(16, 7, num_instances=4)
    memory.initialize(rows)
    for _ in range(20):
        features = torch.randn(12, 16, generator=generator)
        memory.update(features, torch.randint(0, 7, (12,), generator=generator))
    assert torch.allclose(memory.centroid_memory.norm(dim=1), torch.ones(7), atol=1e-5)
    assert torch.allclose(memory.instance_memory.norm(dim=2), torch.ones(4, 7), atol=1e-5)


@pytest.mark.parametrize("mode", mem.MEMORY_MODES)
def test_build_memory_gives_each_mode_and_its_state(mode):
    memory = mem.build_memory(mode, num_features=8, num_clusters=5, num_instances=3)
    assert memory.mode == mode
    state = memory.state_dict()
    expected = {
        "centroid": {"centroid_memory"},
        "hard": {"hard_memory"},
        "hybrid": {"hard_memory", "centroid_memory"},
        "hybrid_instance": {"centroid_memory", "instance_memory"},
    }[mode]
    assert set(state) == expected


def test_build_memory_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="hybrid_instance"):
        mem.build_memory("CMhybrid", 8, 5)


# --- camera-aware proxies and the epoch memory --------------------------------------------------

# identity 0 in cameras 0 (two images) and 1; identity 1 in camera 0 and in camera 2, which holds
# one image; identity 2 in camera 1 only; image 6 an outlier
PROXY_LABELS = torch.tensor([0, 0, 0, 1, 1, 2, -1])
PROXY_IMAGE_CAMERAS = torch.tensor([0, 0, 1, 0, 2, 1, 0])


def test_camera_proxy_index_has_one_proxy_per_identity_and_camera_present():
    proxy_of_image, identities, cameras = mem.camera_proxy_index(PROXY_LABELS, PROXY_IMAGE_CAMERAS)
    assert proxy_of_image.tolist() == [0, 0, 1, 2, 3, 4, -1]
    assert identities.tolist() == [0, 0, 1, 1, 2]
    assert cameras.tolist() == [0, 1, 0, 2, 1]


def test_camera_proxy_index_cross_camera_only_leaves_the_one_camera_identities_without_proxies():
    proxy_of_image, identities, cameras = mem.camera_proxy_index(PROXY_LABELS, PROXY_IMAGE_CAMERAS,
                                                                 cross_camera_only=True)
    # identity 2 holds images in camera 1 only: its image gets no proxy, like the outlier
    assert proxy_of_image.tolist() == [0, 0, 1, 2, 3, -1, -1]
    assert identities.tolist() == [0, 0, 1, 1]
    assert cameras.tolist() == [0, 1, 0, 2]
    none, no_identities, _ = mem.camera_proxy_index([0, 0, 1, -1], [3, 3, 4, 4], cross_camera_only=True)
    assert none.tolist() == [-1, -1, -1, -1] and len(no_identities) == 0


def test_camera_proxy_memory_starts_at_the_camera_means_and_moves_like_a_centroid():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0], [0.0, 3.0], [1.0, -1.0], [5.0, 5.0]])
    proxy_of_image, identities, cameras = mem.camera_proxy_index(PROXY_LABELS, PROXY_IMAGE_CAMERAS)
    memory = mem.CameraProxyMemory(2, identities, cameras, momentum=0.1)
    memory.initialize(mem.cluster_centers(features, proxy_of_image, len(identities)))
    assert memory.num_clusters == 5 and memory.centroid_memory.shape == (5, 2)
    assert torch.allclose(memory.centroid_memory[0], unit(0.5, 0.5))  # identity 0's two images in camera 0
    assert torch.allclose(memory.centroid_memory[3], unit(0.0, 1.0))  # camera 2's one image
    centroid = mem.CentroidMemory(2, 5, momentum=0.1)
    centroid.initialize(memory.centroid_memory.clone())
    batch = torch.tensor([0, 1, 4])
    memory.update(features[batch], proxy_of_image[batch])
    centroid.update(features[batch], proxy_of_image[batch])
    assert torch.equal(memory.centroid_memory, centroid.centroid_memory)


def test_camera_proxy_loss_is_intra_plus_half_inter_and_its_gradient_flows():
    from hhcl import losses

    generator = torch.Generator().manual_seed(8)
    proxy_of_image, identities, cameras = mem.camera_proxy_index(PROXY_LABELS, PROXY_IMAGE_CAMERAS)
    memory = mem.CameraProxyMemory(16, identities, cameras, temperature=0.05)
    memory.initialize(torch.randn(5, 16, generator=generator))
    features = torch.randn(6, 16, generator=generator).requires_grad_(True)
    targets = proxy_of_image[:6]  # the one-image camera and the one-camera identity among them
    loss = memory(features, targets)
    logits = losses.memory_logits(F.normalize(features, dim=1), memory.centroid_memory, 0.05)
    expected = (losses.intra_camera_loss(logits, targets, cameras)
                + 0.5 * losses.inter_camera_loss(logits, targets, identities, cameras))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item())
    loss.backward()
    assert torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def _epoch_memory(seed=9):
    """A centroid memory of 3 clusters over 6 images, one granularity of 2 clusters, camera proxies."""
    generator = torch.Generator().manual_seed(seed)
    main = mem.CentroidMemory(8, 3)
    main.initialize(torch.randn(3, 8, generator=generator))
    coarse = mem.CentroidMemory(8, 2)
    coarse.initialize(torch.randn(2, 8, generator=generator))
    granularity_targets = torch.tensor([[0, 0, 1, 1, -1, 1]])  # image 4 does not nest
    labels, cameras = torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([0, 1, 0, 1, 0, 0])
    proxy_targets, identities, proxy_cameras = mem.camera_proxy_index(labels, cameras)
    proxies = mem.CameraProxyMemory(8, identities, proxy_cameras)
    proxies.initialize(torch.randn(len(identities), 8, generator=generator))
    memory = mem.EpochMemory(main, [coarse], granularity_targets, proxies, proxy_targets)
    features = torch.randn(4, 8, generator=generator)
    return memory, features, labels, granularity_targets[0], proxy_targets


def test_epoch_memory_averages_the_granularities_with_the_main_term_and_adds_the_proxies():
    memory, features, labels, coarse_targets, proxy_targets = _epoch_memory()
    image_ids = torch.tensor([5, 4, 0, 2])  # image 4 takes no part in the coarse term
    loss = memory(features, labels[image_ids], image_ids)
    kept = torch.tensor([0, 2, 3])
    expected = ((memory.main(features, labels[image_ids]) + memory.granularities[0](features[kept],
                                                                                  coarse_targets[image_ids][kept])) / 2
                + memory.camera_proxies(features, proxy_targets[image_ids]))
    assert loss.item() == pytest.approx(expected.item())
    assert (memory.mode, memory.num_clusters) == ("centroid", 3)
    # the lookup tables are this epoch's labels, not state
    assert set(memory.state_dict()) == {"main.centroid_memory", "granularities.0.centroid_memory",
                                        "camera_proxies.centroid_memory", "camera_proxies.proxy_identities",
                                        "camera_proxies.proxy_cameras"}


def test_epoch_memory_leaves_out_a_granularity_without_a_row_in_the_batch():
    memory, features, labels, _, _ = _epoch_memory()
    memory.camera_proxies = None
    image_ids = torch.tensor([4, 4, 4, 4])
    assert memory(features, labels[image_ids], image_ids).item() == pytest.approx(
        memory.main(features, labels[image_ids]).item())


def test_epoch_memory_leaves_the_images_without_a_proxy_out_of_the_proxy_term():
    memory, features, labels, _, proxy_targets = _epoch_memory()
    memory.granularities = torch.nn.ModuleList()
    memory.granularity_targets = torch.zeros(0, 6, dtype=torch.int64)
    memory.proxy_targets = torch.tensor([0, 1, 2, 3, -1, -1])  # images 4 and 5: no proxy
    image_ids = torch.tensor([5, 4, 0, 2])
    expected = (memory.main(features, labels[image_ids])
                + memory.camera_proxies(features[2:], memory.proxy_targets[image_ids][2:]))
    assert memory(features, labels[image_ids], image_ids).item() == pytest.approx(expected.item())
    only_without = torch.tensor([4, 5, 4, 5])
    assert memory(features, labels[only_without], only_without).item() == pytest.approx(
        memory.main(features, labels[only_without]).item())
    before = memory.camera_proxies.centroid_memory.clone()
    memory.update(features, labels[only_without], only_without)
    assert torch.equal(memory.camera_proxies.centroid_memory, before)


def test_epoch_memory_updates_each_memory_with_its_own_rows():
    memory, features, labels, coarse_targets, proxy_targets = _epoch_memory()
    before = {name: value.clone() for name, value in memory.state_dict().items()}
    image_ids = torch.tensor([4, 4, 0, 1])  # the coarse rows touched come from images 0 and 1 only: row 0
    memory.update(features, labels[image_ids], image_ids)
    coarse = mem.CentroidMemory(8, 2)
    coarse.initialize(before["granularities.0.centroid_memory"])
    coarse.update(features[2:], coarse_targets[image_ids][2:])
    assert torch.allclose(memory.granularities[0].centroid_memory, coarse.centroid_memory, atol=1e-6)
    assert torch.equal(memory.granularities[0].centroid_memory[1], before["granularities.0.centroid_memory"][1])
    moved = ~torch.isclose(memory.camera_proxies.centroid_memory, before["camera_proxies.centroid_memory"]).all(1)
    assert moved.tolist() == [i in proxy_targets[image_ids].tolist() for i in range(len(moved))]

# --- part memory (model.parts) -----------------------------------------------------------------


def _part_memory(parts=2, dim=16, num_clusters=7, part_weight=0.5, mode="hybrid"):
    return mem.PartMemory(mem.build_memory(mode, dim, num_clusters, temperature=0.1), parts, part_weight)


def test_part_memory_initialises_each_memory_from_its_own_piece():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(30, 3 * 16, generator=generator)
    labels = torch.arange(30) % 7
    memory = _part_memory(mode="hybrid_instance")
    memory.initialize(mem.cluster_centers(features, labels, 7), features, labels, generator)
    assert (memory.mode, memory.num_clusters, memory.num_features) == ("hybrid_instance", 7, 48)
    pieces = features.unflatten(1, (3, 16))
    torch.testing.assert_close(memory.global_memory.centroid_memory, mem.cluster_centers(pieces[:, 0], labels, 7))
    for index, part_memory in enumerate(memory.part_memories):
        torch.testing.assert_close(part_memory.centroid_memory, mem.cluster_centers(pieces[:, 1 + index], labels, 7))
    # the instance slots hold global pieces of members
    slot = memory.global_memory.instance_memory[0, 0]
    members = F.normalize(pieces[labels == 0, 0], dim=1)
    assert torch.isclose(members @ slot, torch.tensor(1.0)).any()


def test_part_memory_loss_is_the_global_loss_plus_the_weighted_selective_part_loss():
    rows, features, targets = random_batch(8, dim=16)
    memory = _part_memory()
    memory.initialize(torch.cat([rows, rows.roll(1, 0), rows.roll(2, 0)], dim=1))
    batch = torch.cat([features, features, features.flip(1)], dim=1)
    expected_global = memory.global_memory(features, targets)
    part_logits = torch.stack([losses.memory_logits(F.normalize(piece, dim=1), part.centroid_memory, 0.1)
                               for piece, part in zip((features, features.flip(1)), memory.part_memories)])
    expected = expected_global + 0.5 * losses.selective_part_loss(part_logits, targets)
    torch.testing.assert_close(memory(batch, targets), expected)


def test_part_memory_updates_the_global_memory_and_every_part_by_the_centroid_rule():
    rows, features, targets = random_batch(9, dim=16)
    memory = _part_memory()
    memory.initialize(torch.cat([rows, rows, rows], dim=1))
    other = F.normalize(features.roll(1, 0), dim=1)
    memory.update(torch.cat([features, other, 2.0 * features], dim=1), targets)
    torch.testing.assert_close(memory.global_memory.hard_memory, reference_hard_update(rows, features, targets, 0.1))
    torch.testing.assert_close(memory.part_memories[0].centroid_memory,
                               reference_mean_update(rows, other, targets, 0.1))
    torch.testing.assert_close(memory.part_memories[1].centroid_memory,
                               reference_mean_update(rows, features, targets, 0.1))


def test_a_disagreeing_part_gets_no_gradient_from_the_part_loss():
    memory = _part_memory(parts=1, dim=2, num_clusters=2, part_weight=1.0, mode="centroid")
    memory.initialize(torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0]]))
    # sample 0 (identity 0): global and stripe near row 0; sample 1 (identity 1): its stripe is nearer row 0
    features = torch.tensor([[1.0, 0.1, 1.0, 0.2], [0.1, 1.0, 1.0, 0.1]], requires_grad=True)
    memory(features, torch.tensor([0, 1])).backward()
    assert torch.equal(features.grad[1, 2:], torch.zeros(2))
    assert features.grad[0, 2:].abs().sum() > 0 and features.grad[1, :2].abs().sum() > 0
