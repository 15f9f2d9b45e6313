"""The re-ID head: pooling, embedding, BatchNorm neck, train/eval outputs and frozen BatchNorm."""

import pytest
import torch
from torch import nn

from hhcl.models import build_model
from hhcl.models.pooling import GeneralizedMeanPool, GlobalAvgPool

# The smallest backbone and small inputs keep these fast; the head does not depend on either.
ARCH = "osnet_x0_25"
IMAGES = (4, 3, 64, 32)


@pytest.fixture(scope="module")
def images():
    return torch.randn(*IMAGES, generator=torch.Generator().manual_seed(0))


def test_eval_output_is_l2_normalised_and_train_output_is_not(images):
    model = build_model(ARCH)
    train_features = model.train()(images)
    eval_features = model.eval()(images)
    assert train_features.shape == eval_features.shape == (4, 512)
    assert torch.allclose(eval_features.norm(dim=1), torch.ones(4), atol=1e-5)
    assert not torch.allclose(train_features.norm(dim=1), torch.ones(4), atol=1e-2)


def test_norm_false_returns_the_raw_neck_features_in_eval_mode(images):
    model = build_model(ARCH, norm=False).eval()
    with torch.no_grad():
        features = model(images)
        pooled = model.backbone.forward_features(images).mean(dim=(2, 3))
        expected = model.neck(model.backbone.forward_pooled(pooled))
    assert torch.allclose(features, expected, atol=1e-5)


def test_embedding_sets_the_feature_size(images):
    model = build_model(ARCH, num_features=64).eval()
    assert model.feature_dim == 64 and model.embedding.in_features == 512
    assert model(images).shape == (4, 64)


def test_neck_bias_is_frozen_at_zero(images):
    model = build_model(ARCH).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(images).pow(2).sum().backward()
    optimizer.step()
    assert model.neck.bias.grad is None and torch.equal(model.neck.bias, torch.zeros(512))
    assert model.neck.weight.grad is not None


def test_gem_with_p_one_is_average_pooling_and_larger_p_weights_peaks_more():
    feature_map = torch.rand(2, 5, 4, 3)
    gem = GeneralizedMeanPool(p=1.0)
    assert torch.allclose(gem(feature_map), GlobalAvgPool()(feature_map), atol=1e-6)
    gem3 = GeneralizedMeanPool(p=3.0)
    assert (gem3(feature_map) >= GlobalAvgPool()(feature_map) - 1e-6).all()
    assert (gem3(feature_map) <= feature_map.amax(dim=(2, 3)) + 1e-6).all()


def test_gem_exponent_is_learned(images):
    model = build_model(ARCH, pooling="gem").train()
    model(images).pow(2).sum().backward()
    assert model.pooling.p.grad is not None and model.pooling.p.grad.abs().item() > 0


def batch_norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_freeze_bn_keeps_statistics_through_train_calls(images):
    model = build_model(ARCH, freeze_bn=True)
    model.train()
    assert model.training and not any(bn.training for bn in batch_norms(model))
    statistics_before = [bn.running_mean.clone() for bn in batch_norms(model)]
    features = model(images)
    assert all(torch.equal(bn.running_mean, before) for bn, before in zip(batch_norms(model), statistics_before))
    # The affine parameters still learn, and train mode still returns un-normalised features.
    features.sum().backward()
    assert model.neck.weight.grad is not None
    assert not torch.allclose(features.norm(dim=1), torch.ones(4), atol=1e-2)


def test_freeze_bn_can_be_switched_on_a_training_model(images):
    model = build_model(ARCH).train()
    assert all(bn.training for bn in batch_norms(model))
    model.freeze_bn = True
    assert not any(bn.training for bn in batch_norms(model))
    model.freeze_bn = False
    assert all(bn.training for bn in batch_norms(model))
    before = model.backbone.conv1.bn.running_mean.clone()
    model(images)
    assert not torch.equal(model.backbone.conv1.bn.running_mean, before)


def test_build_options_rebuild_the_same_architecture():
    with torch.device("meta"):
        model = build_model("resnet18", pooling="gem", num_features=32, last_stride=2)
        rebuilt = build_model(**model.build_options)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.backbone.layer4[0].conv1.stride == (2, 2)
