import math

import pytest
import torch

from hhcl import losses


def test_memory_logits_are_cosine_over_temperature():
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    memory = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    logits = losses.memory_logits(features, memory, temperature=0.5)
    assert torch.allclose(logits, torch.tensor([[2.0, 1.2], [0.0, 1.6]]))


def test_memory_logits_of_instance_slots_are_batch_cluster_slot():
    features = torch.tensor([[1.0, 0.0]])
    slots = torch.tensor([  # (K=2, C=2, D=2)
        [[1.0, 0.0], [0.0, 1.0]],
        [[0.6, 0.8], [-1.0, 0.0]],
    ])
    logits = losses.memory_logits(features, slots, temperature=0.1)
    assert logits.shape == (1, 2, 2)
    assert torch.allclose(logits, torch.tensor([[[10.0, 6.0], [0.0, -10.0]]]))


def test_cluster_contrast_loss_is_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    # softmax = [1/4, 3/4]; target 1 costs log(4/3), target 0 costs log(4); mean over the batch
    loss = losses.cluster_contrast_loss(logits, torch.tensor([1, 0]))
    assert loss.item() == pytest.approx((math.log(4 / 3) + math.log(4)) / 2)


def test_hard_instance_logits_take_least_similar_own_slot_and_most_similar_other_slot():
    instance_logits = torch.tensor([  # (B=2, C=3, K=2)
        [[1.0, 3.0], [2.0, 5.0], [-1.0, -4.0]],
        [[1.0, 3.0], [2.0, 5.0], [-1.0, -4.0]],
    ])
    logits = losses.hard_instance_logits(instance_logits, torch.tensor([0, 1]))
    assert torch.equal(logits, torch.tensor([[1.0, 5.0, -1.0], [3.0, 2.0, -1.0]]))


def _two_cross_entropies():
    # hard logits: CE = log(4/3) for target 1; centroid logits: CE = log(2)
    hard_logits = torch.tensor([[0.0, math.log(3.0)]])
    centroid_logits = torch.tensor([[0.0, 0.0]])
    return hard_logits, centroid_logits, torch.tensor([1]), math.log(4 / 3), math.log(2)


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.9])
def test_hybrid_loss_paper_form(weight):
    hard_logits, centroid_logits, targets, ce_hard, ce_centroid = _two_cross_entropies()
    loss = losses.hybrid_loss(hard_logits, centroid_logits, targets, weight, form="paper")
    assert loss.item() == pytest.approx(weight * ce_hard + (1 - weight) * ce_centroid)


@pytest.mark.parametrize("weight", [0.25, 0.5, 0.9])
def test_hybrid_loss_official_form(weight):
    hard_logits, centroid_logits, targets, ce_hard, ce_centroid = _two_cross_entropies()
    loss = losses.hybrid_loss(hard_logits, centroid_logits, targets, weight, form="official")
    assert loss.item() == pytest.approx(weight * (ce_hard + (1 - weight) * ce_centroid))


def test_hybrid_loss_forms_differ_at_the_default_weight():
    hard_logits, centroid_logits, targets, _, _ = _two_cross_entropies()
    paper = losses.hybrid_loss(hard_logits, centroid_logits, targets, 0.5, "paper")
    official = losses.hybrid_loss(hard_logits, centroid_logits, targets, 0.5, "official")
    assert official.item() < paper.item()


def test_hybrid_instance_loss_by_hand():
    # one sample of cluster 0; slots of cluster 0 give 0 and 1 -> positive 0; cluster 1 -> max = log 3
    instance_logits = torch.tensor([[[0.0, 1.0], [math.log(3.0), -2.0]]])
    centroid_logits = torch.tensor([[0.0, 0.0]])
    targets = torch.tensor([0])
    ce_instance = math.log(4.0)  # softmax([0, log 3])[0] = 1/4
    ce_centroid = math.log(2.0)
    paper = losses.hybrid_instance_loss(instance_logits, centroid_logits, targets, 0.25, "paper")
    official = losses.hybrid_instance_loss(instance_logits, centroid_logits, targets, 0.25, "official")
    assert paper.item() == pytest.approx(0.25 * ce_instance + 0.75 * ce_centroid)
    assert official.item() == pytest.approx(0.25 * ce_centroid + 0.75 * ce_instance)


def test_unknown_loss_form_is_rejected():
    hard_logits, centroid_logits, targets, _, _ = _two_cross_entropies()
    with pytest.raises(ValueError, match="official"):
        losses.hybrid_loss(hard_logits, centroid_logits, targets, 0.5, form="mean")


def test_gradient_reaches_the_features_only():
    features = torch.nn.functional.normalize(torch.randn(4, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    features.requires_grad_(True)
    memory = torch.nn.functional.normalize(torch.randn(3, 8, generator=torch.Generator().manual_seed(1)), dim=1)
    loss = losses.cluster_contrast_loss(losses.memory_logits(features, memory, 0.05), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    assert features.grad is not None and torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0
    assert memory.grad is None


# --- camera-aware proxies ----------------------------------------------------------------------

# five proxies: identity 0 in cameras 0 and 1, identity 1 in cameras 0 and 2, identity 2 in camera 1 only
PROXY_IDENTITIES = torch.tensor([0, 0, 1, 1, 2])
PROXY_CAMERAS = torch.tensor([0, 1, 0, 2, 1])


def _camera_loss_oracles(logits, targets):
    """CAP's two terms, one sample and one positive at a time, from their definitions."""
    intra, inter = [], []
    for row, target in zip(logits.tolist(), targets.tolist()):
        identity, camera = PROXY_IDENTITIES[target].item(), PROXY_CAMERAS[target].item()
        same_camera = [p for p in range(5) if PROXY_CAMERAS[p] == camera]
        intra.append(-row[target] + math.log(sum(math.exp(row[p]) for p in same_camera)))
        positives = [p for p in range(5) if PROXY_IDENTITIES[p] == identity and PROXY_CAMERAS[p] != camera]
        negatives = [p for p in range(5) if PROXY_IDENTITIES[p] != identity]
        if positives:
            inter.append(sum(-row[p] + math.log(math.exp(row[p]) + sum(math.exp(row[n]) for n in negatives))
                             for p in positives) / len(positives))
    return sum(intra) / len(intra), (sum(inter) / len(inter) if inter else 0.0)


def test_camera_losses_equal_their_definitions():
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 4
    targets = torch.tensor([0, 1, 2, 3, 4, 0])  # proxy 3 is alone in camera 2; proxy 4's identity has one camera
    intra, inter = _camera_loss_oracles(logits, targets)
    assert losses.intra_camera_loss(logits, targets, PROXY_CAMERAS).item() == pytest.approx(intra)
    assert losses.inter_camera_loss(logits, targets, PROXY_IDENTITIES, PROXY_CAMERAS).item() == pytest.approx(inter)


def test_camera_losses_by_hand():
    logits = torch.tensor([[2.0, 1.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([0])
    # intra: camera 0 holds proxies 0 and 2; inter: positive 1 against negatives 2, 3, 4
    intra = losses.intra_camera_loss(logits, targets, PROXY_CAMERAS)
    assert intra.item() == pytest.approx(math.log(1 + math.exp(-2.0)))
    inter = losses.inter_camera_loss(logits, targets, PROXY_IDENTITIES, PROXY_CAMERAS)
    assert inter.item() == pytest.approx(-1.0 + math.log(math.exp(1.0) + 3.0))


def test_a_sample_without_a_positive_adds_no_inter_camera_term_and_gradients_stay_finite():
    logits = torch.randn(2, 5, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    targets = torch.tensor([4, 3])  # identity 2 is seen by one camera; proxy 3 is alone in its camera
    inter = losses.inter_camera_loss(logits[:1], targets[:1], PROXY_IDENTITIES, PROXY_CAMERAS)
    assert inter.item() == 0.0
    intra = losses.intra_camera_loss(logits[1:], targets[1:], PROXY_CAMERAS)
    assert intra.item() == pytest.approx(0.0, abs=1e-6)
    total = losses.intra_camera_loss(logits, targets, PROXY_CAMERAS) + losses.inter_camera_loss(
        logits, targets, PROXY_IDENTITIES, PROXY_CAMERAS)
    total.backward()
    assert torch.isfinite(logits.grad).all()
    # one identity only: no negative at all, still finite
    lone = torch.zeros(1, 2, requires_grad=True)
    loss = losses.inter_camera_loss(lone, torch.tensor([0]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(lone.grad).all()


def _part_logits():
    # (P=2, B=3, C=3); targets [0, 1, 2]
    return torch.tensor([
        [[2.0, 1.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]],  # part 0: every sample's nearest row is its own
        [[1.0, 0.0, 0.0], [1.5, 1.0, 0.0], [0.5, 0.0, 0.5]],  # part 1: sample 1 nearer identity 0; sample 2 ties
    ]), torch.tensor([0, 1, 2])


def test_selective_mask_leaves_out_a_part_that_disagrees_with_the_global_label():
    part_logits, targets = _part_logits()
    mask = losses.selective_mask(part_logits, targets)
    assert mask.tolist() == [[True, True, True], [True, False, True]]


def test_selective_part_loss_averages_the_agreeing_parts_by_hand():
    part_logits, targets = _part_logits()
    part_logits.requires_grad_(True)
    loss = losses.selective_part_loss(part_logits, targets)
    counted = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2)]
    expected = sum(-torch.log_softmax(part_logits[p, b].detach(), 0)[targets[b]].item() for p, b in counted) / 5
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert torch.equal(part_logits.grad[1, 1], torch.zeros(3))  # the disagreeing part gets no gradient
    assert part_logits.grad[1, 0].abs().sum() > 0


def test_selective_part_loss_is_zero_when_no_part_agrees():
    part_logits = torch.tensor([[[0.0, 1.0]], [[0.0, 2.0]]], requires_grad=True)
    loss = losses.selective_part_loss(part_logits, torch.tensor([0]))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(part_logits.grad, torch.zeros(2, 1, 2))
