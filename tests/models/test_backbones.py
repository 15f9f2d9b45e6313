"""Architectures: parameter counts, parameter names, feature-map and output shapes."""

import pytest
import torch

from hhcl.errors import HHCLError
from hhcl.models import build_model, list_archs
from hhcl.models.resnet_ibn import InstanceBatchNorm2d

# torchvision's published totals minus the ImageNet fc (in_features * 1000 + 1000).
RESNET_PARAMETERS_WITHOUT_FC = {
    "resnet18": 11_689_512 - 513_000,
    "resnet34": 21_797_672 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "resnet101": 44_549_160 - 2_049_000,
    "resnet152": 60_192_808 - 2_049_000,
    # IBN-a swaps half of some BatchNorms for InstanceNorms with the same affine parameters.
    "resnet50_ibn_a": 25_557_032 - 2_049_000,
}
FEATURE_DIMS = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048, "resnet152": 2048,
                "resnet50_ibn_a": 2048, "osnet_x1_0": 512, "osnet_x0_75": 512, "osnet_x0_5": 512,
                "osnet_x0_25": 512}
MAP_CHANNELS = {"osnet_x1_0": 512, "osnet_x0_75": 384, "osnet_x0_5": 256, "osnet_x0_25": 128}


def build_on_meta(arch: str, **options):
    """Shapes without memory or compute: big ResNets are built and run on the meta device."""
    with torch.device("meta"):
        return build_model(arch, **options)


def test_every_arch_is_listed():
    # The ViT's shapes and names are tested in test_vit.py.
    assert sorted(list_archs()) == sorted([*FEATURE_DIMS, "vit_small"])


@pytest.mark.parametrize("arch", sorted(RESNET_PARAMETERS_WITHOUT_FC))
def test_resnet_parameter_counts_match_torchvision_without_fc(arch):
    backbone = build_on_meta(arch).backbone
    assert sum(p.numel() for p in backbone.parameters()) == RESNET_PARAMETERS_WITHOUT_FC[arch]


def test_resnet50_has_23_5_million_parameters():
    assert round(sum(p.numel() for p in build_on_meta("resnet50").backbone.parameters()) / 1e6, 1) == 23.5


def test_osnet_x0_25_has_the_size_of_the_released_checkpoint():
    # ../shared/models/README.md: 565 tensors and 208,392 values, counting the weights and the
    # BatchNorm running statistics but not the 80 batch counters.
    state = build_on_meta("osnet_x0_25").backbone.state_dict()
    assert len(state) == 565
    assert sum(t.numel() for name, t in state.items() if not name.endswith("num_batches_tracked")) == 208_392


def test_osnet_sizes_grow_with_width():
    counts = [sum(p.numel() for p in build_on_meta(a).backbone.parameters())
              for a in ("osnet_x0_25", "osnet_x0_5", "osnet_x0_75", "osnet_x1_0")]
    assert counts == sorted(counts)
    assert 2.1e6 < counts[-1] < 2.3e6  # the paper's 2.2M for OSNet x1.0


@pytest.mark.parametrize(("arch", "last_stride"), [(arch, 1) for arch in sorted(FEATURE_DIMS)] + [
    (arch, 2) for arch in sorted(RESNET_PARAMETERS_WITHOUT_FC)])
def test_feature_map_and_output_shapes(arch, last_stride):
    model = build_on_meta(arch, last_stride=last_stride).eval()
    images = torch.empty(2, 3, 256, 128, device="meta")
    feature_map = model.backbone.forward_features(images)
    channels = MAP_CHANNELS.get(arch, FEATURE_DIMS[arch])
    assert tuple(feature_map.shape) == (2, channels, 16 // last_stride, 8 // last_stride)
    assert model.feature_dim == FEATURE_DIMS[arch]
    assert tuple(model(images).shape) == (2, FEATURE_DIMS[arch])


@pytest.mark.parametrize("arch", ["resnet18", "osnet_x0_25"])
def test_small_models_run_forward_on_real_tensors(arch):
    torch.manual_seed(0)
    model = build_model(arch).eval()
    with torch.no_grad():
        features = model(torch.randn(3, 3, 128, 64))
    assert features.shape == (3, FEATURE_DIMS[arch])
    assert torch.isfinite(features).all()
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)


def test_resnet_names_follow_torchvision():
    names = set(build_on_meta("resnet50").backbone.state_dict())
    for name in ("conv1.weight", "bn1.running_var", "layer1.0.downsample.0.weight", "layer1.0.downsample.1.bias",
                 "layer3.5.conv3.weight", "layer4.2.bn3.num_batches_tracked"):
        assert name in names
    assert not any(name.startswith("fc.") for name in names)
    basic = set(build_on_meta("resnet18").backbone.state_dict())
    assert "layer2.0.downsample.0.weight" in basic and "layer1.0.downsample.0.weight" not in basic


def test_last_stride_moves_to_conv2_of_bottleneck_and_conv1_of_basic_block():
    bottleneck = build_on_meta("resnet50", last_stride=1).backbone.layer4[0]
    assert bottleneck.conv2.stride == (1, 1) and bottleneck.downsample[0].stride == (1, 1)
    basic = build_on_meta("resnet18", last_stride=2).backbone.layer4[0]
    assert basic.conv1.stride == (2, 2) and basic.downsample[0].stride == (2, 2)


def test_ibn_a_puts_instance_norm_in_bn1_of_the_first_three_stages_only():
    backbone = build_on_meta("resnet50_ibn_a").backbone
    names = set(backbone.state_dict())
    assert {"layer1.0.bn1.IN.weight", "layer1.0.bn1.BN.running_mean", "layer3.5.bn1.IN.bias"} <= names
    assert "layer4.0.bn1.running_mean" in names and "layer4.0.bn1.IN.weight" not in names
    assert "bn1.running_mean" in names  # the stem stays plain
    assert backbone.layer1[0].bn1.IN.num_features == 32 and backbone.layer3[0].bn1.BN.num_features == 128


def test_instance_batch_norm_normalises_each_image_in_its_instance_half():
    layer = InstanceBatchNorm2d(8).train()
    x = torch.randn(4, 8, 6, 5) * torch.arange(1, 5).view(4, 1, 1, 1) + 3
    out = layer(x)
    instance_half = out[:, :4]
    assert torch.allclose(instance_half.mean(dim=(2, 3)), torch.zeros(4, 4), atol=1e-5)
    # The BatchNorm half shares statistics across the batch: images keep their different scales.
    batch_half_std = out[:, 4:].std(dim=(1, 2, 3))
    assert batch_half_std[3] > 2 * batch_half_std[0]


def test_osnet_names_follow_torchreid():
    names = set(build_on_meta("osnet_x1_0").backbone.state_dict())
    for name in ("conv1.conv.weight", "conv2.0.conv2d.3.conv2.weight", "conv2.0.gate.fc1.bias",
                 "conv2.2.0.conv.weight", "conv4.1.conv3.bn.running_var", "conv5.bn.weight", "fc.0.weight",
                 "fc.1.running_mean"):
        assert name in names
    assert "conv4.2.0.conv.weight" not in names  # no transition after the last stage


@pytest.mark.parametrize(("options", "message"), [
    ({"arch": "resnet5O"}, "did you mean 'resnet50'"),
    ({"arch": "osnet_x0_25", "last_stride": 2}, "last_stride=1"),
    ({"arch": "resnet18", "last_stride": 3}, "last_stride must be 1 or 2"),
    ({"arch": "resnet18", "pooling": "max"}, "choose one of avg, gem"),
    ({"arch": "resnet18", "num_features": -1}, "num_features"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(HHCLError, match=message) as error:
        build_on_meta(**options)
    assert "\n" not in str(error.value)
