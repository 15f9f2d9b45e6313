"""load_weights: checkpoint formats, key prefixes, skipped heads and one-line errors."""

import numpy as np
import pytest
import torch

from hhcl.errors import HHCLError
from hhcl.models import build_model, load_weights


def torchvision_resnet_state_dict(layers=(3, 4, 6, 3), ibn_a=False) -> dict[str, torch.Tensor]:
    """A ResNet-50-style ImageNet state_dict written from the naming scheme of torchvision (or,
    with ``ibn_a``, of the IBN-Net release), with random values and its 1000-class ``fc``."""
    generator = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}

    def batch_norm(name: str, channels: int) -> None:
        state[f"{name}.weight"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{name}.bias"] = torch.randn(channels, generator=generator)
        state[f"{name}.running_mean"] = torch.randn(channels, generator=generator)
        state[f"{name}.running_var"] = torch.rand(channels, generator=generator) + 0.5
        state[f"{name}.num_batches_tracked"] = torch.tensor(100)

    def conv(name: str, out_channels: int, in_channels: int, size: int) -> None:
        state[f"{name}.weight"] = torch.randn(out_channels, in_channels, size, size, generator=generator) * 0.05

    conv("conv1", 64, 3, 7)
    batch_norm("bn1", 64)
    in_channels = 64
    for stage, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        for block in range(num_blocks):
            prefix = f"layer{stage}.{block}"
            conv(f"{prefix}.conv1", planes, in_channels, 1)
            if ibn_a and stage < 4:
                half = planes // 2
                state[f"{prefix}.bn1.IN.weight"] = torch.rand(half, generator=generator)
                state[f"{prefix}.bn1.IN.bias"] = torch.randn(half, generator=generator)
                batch_norm(f"{prefix}.bn1.BN", planes - half)
            else:
                batch_norm(f"{prefix}.bn1", planes)
            conv(f"{prefix}.conv2", planes, planes, 3)
            batch_norm(f"{prefix}.bn2", planes)
            conv(f"{prefix}.conv3", planes * 4, planes, 1)
            batch_norm(f"{prefix}.bn3", planes * 4)
            if block == 0:
                conv(f"{prefix}.downsample.0", planes * 4, in_channels, 1)
                batch_norm(f"{prefix}.downsample.1", planes * 4)
            in_channels = planes * 4
    state["fc.weight"] = torch.randn(1000, 2048, generator=generator)
    state["fc.bias"] = torch.randn(1000, generator=generator)
    return state


@pytest.fixture(scope="module")
def torchvision_resnet50():
    return torchvision_resnet_state_dict()


def test_torchvision_resnet50_loads_with_nothing_missing(tmp_path, torchvision_resnet50, capsys):
    path = tmp_path / "resnet50-0676ba61.pth"
    torch.save(torchvision_resnet50, path)
    model = build_model("resnet50")
    report = load_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"]
    assert len(report.loaded) == len(torchvision_resnet50) - 2
    assert torch.equal(model.backbone.layer3[5].conv2.weight, torchvision_resnet50["layer3.5.conv2.weight"])
    assert torch.equal(model.backbone.layer1[0].downsample[1].running_var,
                       torchvision_resnet50["layer1.0.downsample.1.running_var"])
    # The re-ID head is new: it keeps its initialisation.
    assert torch.equal(model.neck.weight, torch.ones(2048))
    printed = capsys.readouterr().err.strip().splitlines()
    assert len(printed) == 1
    assert "318 loaded, 2 skipped (fc.weight, fc.bias), 0 missing, 0 unexpected" in printed[0]


def test_ibn_net_release_with_module_prefix_and_state_dict_wrapper_loads(tmp_path):
    state = torchvision_resnet_state_dict(ibn_a=True)
    path = tmp_path / "resnet50_ibn_a.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 100,
                "best_prec1": np.float64(77.4)}, path)
    model = build_model("resnet50_ibn_a")
    report = load_weights(model, path, verbose=False)
    assert report.missing == [] and report.unexpected == [] and len(report.skipped) == 2
    assert torch.equal(model.backbone.layer2[3].bn1.IN.weight, state["layer2.3.bn1.IN.weight"])


def test_files_without_batch_counters_are_not_missing_anything(tmp_path, torchvision_resnet50):
    # torchvision's original ResNet files predate num_batches_tracked.
    old = {k: v for k, v in torchvision_resnet50.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "old.pth")
    assert load_weights(build_model("resnet50"), tmp_path / "old.pth", verbose=False).missing == []


def test_partial_file_reports_the_missing_tensors(tmp_path, torchvision_resnet50):
    partial = {k: v for k, v in torchvision_resnet50.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    report = load_weights(build_model("resnet50"), tmp_path / "partial.pth", verbose=False)
    assert report.missing and all(name.startswith("backbone.layer4.") for name in report.missing)
    assert f"{len(report.missing)} missing (backbone.layer4.0.conv1.weight" in str(report)


def test_torchreid_classifier_is_skipped(tmp_path):
    source = build_model("osnet_x0_25").backbone.state_dict()
    torchreid_file = {**source, "classifier.weight": torch.randn(4101, 512), "classifier.bias": torch.zeros(4101)}
    torch.save(torchreid_file, tmp_path / "osnet.pth")
    model = build_model("osnet_x0_25")
    report = load_weights(model, tmp_path / "osnet.pth", verbose=False)
    assert report.skipped == ["classifier.weight", "classifier.bias"]
    assert report.missing == [] and report.unexpected == [] and len(report.loaded) == 565
    assert torch.equal(model.backbone.fc[0].weight, source["fc.0.weight"])


def test_hhcl_checkpoint_round_trip_restores_identical_outputs(tmp_path):
    torch.manual_seed(0)
    trained = build_model("osnet_x0_25", pooling="gem", num_features=64).train()
    with torch.no_grad():
        trained.pooling.p.fill_(4.5)
        trained(torch.randn(8, 3, 64, 32))  # moves the BatchNorm statistics off their initial values
    torch.save({"model": trained.state_dict(), "build_options": trained.build_options, "epoch": 7,
                "metrics": {"mAP": np.float64(0.5)}}, tmp_path / "model.pth")
    restored = build_model("osnet_x0_25", pooling="gem", num_features=64)
    report = load_weights(restored, tmp_path / "model.pth", verbose=False)
    assert report.kind == "hhcl model" and not (report.missing or report.unexpected or report.fresh_head)
    images = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        assert torch.equal(restored.eval()(images), trained.eval()(images))


def test_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    torch.save(build_model("osnet_x0_25", num_features=64).state_dict(), tmp_path / "model.pth")
    with pytest.raises(HHCLError) as error:
        load_weights(build_model("osnet_x0_25", num_features=128), tmp_path / "model.pth")
    message = str(error.value)
    assert "\n" not in message
    assert "'embedding.weight'" in message and "(64, 512)" in message and "(128, 512)" in message


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(build_model("osnet_x0_25").backbone.state_dict(), tmp_path / "osnet.pth")
    with pytest.raises(HHCLError, match="none of its 565 tensors .* belongs to a resnet18 model"):
        load_weights(build_model("resnet18"), tmp_path / "osnet.pth")


@pytest.mark.parametrize(("content", "message"), [
    (b"", "is not a PyTorch checkpoint"),
    (b"name,accuracy\nresnet50,0.76\n", "is not a PyTorch checkpoint"),
    (b"PK\x03\x04 truncated zip", "is not a PyTorch checkpoint"),
])
def test_files_that_are_not_checkpoints_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(HHCLError, match=message) as error:
        load_weights(build_model("osnet_x0_25"), path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)


def test_checkpoint_without_tensors_and_missing_file_are_one_line_errors(tmp_path):
    torch.save({"epoch": 3, "config": {"lr": 0.1}}, tmp_path / "meta.pth")
    with pytest.raises(HHCLError, match="holds no state_dict .*epoch, config"):
        load_weights(build_model("osnet_x0_25"), tmp_path / "meta.pth")
    with pytest.raises(HHCLError, match="not found"):
        load_weights(build_model("osnet_x0_25"), tmp_path / "absent.pth")


def test_pickled_objects_are_refused_with_advice(tmp_path):
    torch.save({"state_dict": build_model("osnet_x0_25").state_dict(), "args": ValueError("not a tensor")},
               tmp_path / "unsafe.pth")
    with pytest.raises(HHCLError, match="refuses .*ValueError.*torch.save\\(model.state_dict\\(\\)") as error:
        load_weights(build_model("osnet_x0_25"), tmp_path / "unsafe.pth")
    assert "\n" not in str(error.value)


def test_build_model_loads_weights_and_prefixes_of_wrappers_are_removed(tmp_path):
    source = build_model("osnet_x0_25", num_features=32)
    compiled_then_distributed = {f"module._orig_mod.{k}": v for k, v in source.state_dict().items()}
    torch.save({"model": compiled_then_distributed}, tmp_path / "wrapped.pth")
    model = build_model("osnet_x0_25", num_features=32, weights=tmp_path / "wrapped.pth")
    assert torch.equal(model.embedding.weight, source.embedding.weight)


def test_interpolate_weights_mixes_float_tensors_and_keeps_counters():
    from hhcl.models.weights import interpolate_weights

    trained = {"w": torch.tensor([2.0, 4.0]), "steps": torch.tensor(7), "new": torch.ones(1)}
    initial = {"w": torch.tensor([0.0, 8.0]), "steps": torch.tensor(0)}
    mixed = interpolate_weights(trained, initial, 0.25)
    torch.testing.assert_close(mixed["w"], torch.tensor([1.5, 5.0]))
    assert mixed["steps"].item() == 7 and mixed["new"].item() == 1.0
    torch.testing.assert_close(interpolate_weights(trained, initial, 0.0)["w"], trained["w"])
    torch.testing.assert_close(interpolate_weights(trained, initial, 1.0)["w"], initial["w"])
    with pytest.raises(ValueError, match="initial_share"):
        interpolate_weights(trained, initial, 1.5)
    with pytest.raises(ValueError, match="shape"):
        interpolate_weights(trained, {"w": torch.zeros(3)}, 0.5)
