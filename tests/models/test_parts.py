"""Part features (``model.parts``): horizontal stripes pooled beside the global feature."""

import math

import pytest
import torch
from torch.nn import functional as F

from hhcl.errors import HHCLError
from hhcl.models import build_model
from hhcl.models.head import global_features, normalize_pieces
from hhcl.models.pooling import GeneralizedMeanPool, GlobalAvgPool, pool_stripes, stripe_bounds

PARTS = 3  # divides neither 4 (the map height at 64x32) nor 16 (at 256x128): the stripes overlap by a row


def test_stripe_bounds_tile_the_map_or_overlap_as_adaptive_pooling_does():
    assert stripe_bounds(6, 3) == [(0, 2), (2, 4), (4, 6)]
    assert stripe_bounds(4, 3) == [(0, 2), (1, 3), (2, 4)]
    assert stripe_bounds(2, 3) == [(0, 1), (0, 2), (1, 2)]  # fewer rows than stripes: each keeps one row at least
    assert stripe_bounds(1, 2) == [(0, 1), (0, 1)]


@pytest.mark.parametrize("height", [2, 4, 16])
def test_average_pooled_stripes_are_adaptive_average_pooling(height):
    feature_map = torch.randn(2, 5, height, 3)
    expected = F.adaptive_avg_pool2d(feature_map, (PARTS, 1)).squeeze(3).transpose(1, 2)
    torch.testing.assert_close(pool_stripes(feature_map, PARTS, GlobalAvgPool()), expected)


def test_gem_pools_each_stripe_with_the_global_exponent():
    feature_map = torch.rand(2, 5, 4, 3)
    gem = GeneralizedMeanPool(p=3.0)
    stripes = pool_stripes(feature_map, 2, gem)
    torch.testing.assert_close(stripes[:, 1], gem(feature_map[:, :, 2:]))


@pytest.mark.parametrize("arch", ["resnet18", "osnet_x0_25"])
@pytest.mark.parametrize("size", [(64, 32), (256, 128)])
def test_part_features_concatenate_global_and_stripes(arch, size):
    torch.manual_seed(0)
    model = build_model(arch, parts=PARTS)
    images = torch.randn(2, 3, *size)
    assert model.feature_dim == (1 + PARTS) * 512
    with torch.no_grad():
        assert model.train()(images).shape == (2, (1 + PARTS) * 512)
        features = model.eval()(images)
    assert features.shape == (2, (1 + PARTS) * 512)
    torch.testing.assert_close(features.norm(dim=1), torch.ones(2))
    pieces = features.unflatten(1, (1 + PARTS, 512)) * math.sqrt(1 + PARTS)
    torch.testing.assert_close(pieces.norm(dim=2), torch.ones(2, 1 + PARTS))


def test_the_global_piece_is_the_model_without_parts():
    torch.manual_seed(0)
    with_parts = build_model("osnet_x0_25", parts=2).eval()
    without = build_model("osnet_x0_25").eval()
    assert without.load_state_dict(with_parts.state_dict(), strict=False).unexpected_keys == [
        "part_neck.weight", "part_neck.bias", "part_neck.running_mean", "part_neck.running_var",
        "part_neck.num_batches_tracked"]
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        features = with_parts(images)
        torch.testing.assert_close(global_features(features, 2), without(images))
    # cosine similarity of the concatenation is the mean of the pieces'
    pieces = F.normalize(features.unflatten(1, (3, 512)), dim=2)
    torch.testing.assert_close(features[0] @ features[1], (pieces[0] * pieces[1]).sum(1).mean())


def test_with_parts_zero_the_model_is_unchanged():
    model = build_model("osnet_x0_25")
    assert model.part_neck is None and model.feature_dim == 512 and "parts" not in model.build_options
    assert not any(key.startswith("part_neck") for key in model.state_dict())
    features = torch.randn(3, 8)
    assert global_features(features, 0) is features
    torch.testing.assert_close(normalize_pieces(features, 0), F.normalize(features, dim=1), rtol=0, atol=0)


def test_part_necks_train_with_their_bias_frozen_and_follow_freeze_bn():
    model = build_model("osnet_x0_25", parts=2).train()
    model(torch.randn(4, 3, 64, 32)).pow(2).sum().backward()
    assert model.part_neck.bias.grad is None and not model.part_neck.bias.requires_grad
    assert model.part_neck.weight.grad is not None and model.part_neck.num_features == 2 * 512
    model.freeze_bn = True
    assert not model.part_neck.training


def test_build_options_record_parts_and_rebuild_them():
    with torch.device("meta"):
        model = build_model("resnet18", num_features=32, parts=2)
        rebuilt = build_model(**model.build_options)
    assert model.build_options["parts"] == 2 and rebuilt.feature_dim == 3 * 32
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("options", "message"), [
    ({"arch": "vit_small", "parts": 2}, "model.parts needs a CNN backbone"),
    ({"arch": "resnet18", "parts": -1}, "parts must be 0"),
    ({"arch": "resnet18", "parts": True}, "parts must be 0"),
])
def test_bad_parts_are_one_line_errors(options, message):
    with torch.device("meta"), pytest.raises(HHCLError, match=message) as error:
        build_model(**options)
    assert "\n" not in str(error.value)
