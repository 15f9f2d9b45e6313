"""ViT-S/16: timm's parameter names, shapes at 256x128 and with overlapping patches, and checkpoints
with timm's names and a 14x14 grid loading through load_weights with pos_embed interpolated."""

import pytest
import torch

from hhcl.errors import HHCLError
from hhcl.models import build_model, load_weights
from hhcl.models.vit import VisionTransformer, checkpoint_grid, resize_pos_embed
from hhcl.retrieval.extractor import load_trained_model

DIM, DEPTH = 384, 12
# timm's vit_small_patch16_224: 22,050,664 parameters with its 1000-class head (384 * 1000 + 1000)
# and a pos_embed for 1 + 14x14 positions; hhcl's holds 1 + 16x8 positions for 256x128 images.
TIMM_PARAMETERS_WITHOUT_HEAD = 22_050_664 - 385_000


def timm_vit_small_state_dict(grid=(14, 14), seed=0) -> dict[str, torch.Tensor]:
    """A state_dict written from timm's ``vit_small_patch16_224`` naming scheme, with random values,
    a ``pos_embed`` for ``grid`` and the ImageNet ``head``."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=0.02):
        return torch.randn(*shape, generator=generator) * scale

    state = {
        "cls_token": randn(1, 1, DIM, scale=1.0),
        "pos_embed": randn(1, 1 + grid[0] * grid[1], DIM, scale=0.5),
        "patch_embed.proj.weight": randn(DIM, 3, 16, 16),
        "patch_embed.proj.bias": randn(DIM),
    }
    for block in range(DEPTH):
        prefix = f"blocks.{block}"
        for norm in ("norm1", "norm2"):
            state[f"{prefix}.{norm}.weight"] = 1 + randn(DIM, scale=0.1)
            state[f"{prefix}.{norm}.bias"] = randn(DIM)
        for name, out_features, in_features in (("attn.qkv", 3 * DIM, DIM), ("attn.proj", DIM, DIM),
                                                ("mlp.fc1", 4 * DIM, DIM), ("mlp.fc2", DIM, 4 * DIM)):
            state[f"{prefix}.{name}.weight"] = randn(out_features, in_features, scale=0.05)
            state[f"{prefix}.{name}.bias"] = randn(out_features)
    state["norm.weight"] = 1 + randn(DIM, scale=0.1)
    state["norm.bias"] = randn(DIM)
    state["head.weight"] = randn(1000, DIM)
    state["head.bias"] = randn(1000)
    return state


@pytest.fixture(scope="module")
def timm_file(tmp_path_factory):
    state = timm_vit_small_state_dict()
    path = tmp_path_factory.mktemp("timm") / "vit_small_patch16_224.pth"
    torch.save(state, path)
    return path, state


def test_parameter_names_and_count_are_timms():
    with torch.device("meta"):
        backbone = build_model("vit_small").backbone
    timm_names = set(timm_vit_small_state_dict()) - {"head.weight", "head.bias"}
    assert set(backbone.state_dict()) == timm_names
    pos_embed_difference = (14 * 14 - 16 * 8) * DIM
    assert sum(p.numel() for p in backbone.parameters()) == TIMM_PARAMETERS_WITHOUT_HEAD - pos_embed_difference


@pytest.mark.parametrize(("patch_stride", "grid"), [(16, (16, 8)), (12, (21, 10))])
def test_shapes_at_256x128(patch_stride, grid):
    with torch.device("meta"):
        model = build_model("vit_small", patch_stride=patch_stride).eval()
    images = torch.empty(2, 3, 256, 128, device="meta")
    assert model.backbone.grid == grid
    assert tuple(model.backbone.pos_embed.shape) == (1, 1 + grid[0] * grid[1], DIM)
    assert tuple(model.backbone.forward_tokens(images).shape) == (2, 1 + grid[0] * grid[1], DIM)
    assert tuple(model.backbone.forward_features(images).shape) == (2, DIM, 1, 1)
    assert model.feature_dim == DIM and tuple(model(images).shape) == (2, DIM)
    assert model.build_options["patch_stride"] == patch_stride


@pytest.mark.parametrize("patch_stride", [16, 12])
def test_small_images_run_forward_on_real_tensors(patch_stride):
    torch.manual_seed(0)
    model = build_model("vit_small", patch_stride=patch_stride).eval()
    with torch.no_grad():
        features = model(torch.randn(3, 3, 40, 28))  # a 2x1 grid at stride 16, 3x2 at stride 12
        tokens = model.backbone.forward_tokens(torch.randn(1, 3, 40, 28))
    assert features.shape == (3, DIM) and torch.isfinite(features).all()
    assert torch.allclose(features.norm(dim=1), torch.ones(3), atol=1e-5)
    assert tokens.shape[1] == 1 + (2 * 1 if patch_stride == 16 else 3 * 2)


def test_the_feature_is_the_class_token_after_the_final_norm():
    torch.manual_seed(0)
    model = build_model("vit_small", norm=False).eval()
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        tokens = model.backbone.forward_tokens(images)
        # The fresh neck is the identity in eval mode (running mean 0, variance 1, weight 1, bias 0).
        assert torch.allclose(model(images), tokens[:, 0] / (1 + model.neck.eps) ** 0.5, atol=1e-6)
    # LayerNorm with unit weight and zero bias: each token has zero mean and unit variance.
    assert torch.allclose(tokens.mean(dim=-1), torch.zeros(2, 3), atol=1e-5)


def test_timm_checkpoint_loads_with_nothing_missing_and_pos_embed_resized(timm_file, capsys):
    path, state = timm_file
    model = build_model("vit_small")
    report = load_weights(model, path)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == ["head.bias", "head.weight"]
    assert len(report.loaded) == len(state) - 2
    assert report.adapted == ["pos_embed 14x14 -> 16x8"]
    assert "pos_embed 14x14 -> 16x8" in capsys.readouterr().err
    backbone = model.backbone
    assert torch.equal(backbone.blocks[11].attn.qkv.weight, state["blocks.11.attn.qkv.weight"])
    assert torch.equal(backbone.cls_token, state["cls_token"])
    # The class token's position embedding is kept, the patches' are interpolated to 16x8.
    assert torch.equal(backbone.pos_embed[:, 0], state["pos_embed"][:, 0])
    assert torch.equal(backbone.pos_embed, resize_pos_embed(state["pos_embed"], (14, 14), (16, 8)))


def test_loading_at_the_checkpoints_grid_equals_a_plain_load_state_dict(timm_file):
    path, state = timm_file
    timm_model = VisionTransformer(image_size=(224, 224))
    timm_model.load_state_dict({k: v for k, v in state.items() if not k.startswith("head.")})
    loaded = VisionTransformer(image_size=(224, 224))
    report = load_weights(loaded, path, verbose=False)
    assert report.adapted == [] and report.missing == [] and report.skipped == ["head.weight", "head.bias"]
    images = torch.randn(2, 3, 48, 32)
    with torch.no_grad():
        assert torch.equal(loaded.forward_tokens(images), timm_model.forward_tokens(images))
        # Interpolated at loading (into a 256x128 model) or at the forward pass (by the 224x224
        # model fed 256x128 images): the same position embeddings, so the same features.
        model = build_model("vit_small").eval()
        load_weights(model, path, verbose=False)
        tall = torch.randn(1, 3, 256, 128)
        assert torch.allclose(model.backbone.forward_features(tall), timm_model.forward_features(tall), atol=1e-5)


def test_overlapping_patches_load_the_same_checkpoint(timm_file):
    path, state = timm_file
    model = build_model("vit_small", patch_stride=12)
    report = load_weights(model, path, verbose=False)
    assert report.missing == [] and report.adapted == ["pos_embed 14x14 -> 21x10"]
    assert torch.equal(model.backbone.patch_embed.proj.weight, state["patch_embed.proj.weight"])
    assert model.backbone.patch_embed.proj.stride == (12, 12)


def test_distilled_deit_file_drops_its_distillation_token(tmp_path):
    # TransReID starts DeiT-S from DeiT's distilled release: a second token after the class token,
    # with its own position embedding and head, inside a {"model": ...} wrapper.
    state = timm_vit_small_state_dict(seed=1)
    distilled_pos_embed = torch.randn(1, 2 + 196, DIM)
    state.update({"pos_embed": distilled_pos_embed, "dist_token": torch.randn(1, 1, DIM),
                  "head_dist.weight": torch.randn(1000, DIM), "head_dist.bias": torch.randn(1000)})
    path = tmp_path / "deit_small_distilled_patch16_224.pth"
    torch.save({"model": state}, path)
    model = build_model("vit_small")
    report = load_weights(model, path, verbose=False)
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.skipped) == ["dist_token", "head.bias", "head.weight", "head_dist.bias", "head_dist.weight"]
    assert report.adapted == ["pos_embed 14x14 -> 16x8, the distillation token's position dropped"]
    without_distillation = torch.cat([distilled_pos_embed[:, :1], distilled_pos_embed[:, 2:]], dim=1)
    assert torch.equal(model.backbone.pos_embed, resize_pos_embed(without_distillation, (14, 14), (16, 8)))


def test_hhcl_model_file_with_another_grid_is_interpolated(tmp_path):
    trained = build_model("vit_small")
    path = tmp_path / "model.pth"
    torch.save({"model": trained.state_dict(), "build_options": trained.build_options}, path)
    overlapping = build_model("vit_small", patch_stride=12)
    report = load_weights(overlapping, path, verbose=False)
    assert report.kind == "hhcl model" and report.missing == [] and report.adapted == ["pos_embed 16x8 -> 21x10"]
    assert torch.equal(overlapping.backbone.pos_embed[:, 0], trained.backbone.pos_embed[:, 0])
    assert torch.equal(overlapping.neck.running_var, trained.neck.running_var)


def test_pos_embed_interpolation_keeps_rows_as_rows_and_the_class_token():
    # Embeddings that change only from row to row of the 14x14 grid still do after resizing: the
    # grid is not transposed, and columns of one row stay equal (bicubic weights sum to one).
    rows = torch.arange(14, dtype=torch.float32).repeat_interleave(14)
    pos_embed = torch.cat([torch.full((1, 1, 4), -7.0), rows.view(1, 196, 1).expand(1, 196, 4)], dim=1)
    resized = resize_pos_embed(pos_embed, (14, 14), (16, 8))
    assert resized.shape == (1, 1 + 128, 4)
    assert torch.equal(resized[:, 0], torch.full((1, 4), -7.0))
    grid = resized[0, 1:, 0].view(16, 8)
    assert torch.allclose(grid, grid[:, :1].expand(16, 8), atol=1e-5)
    assert (grid[1:, 0] > grid[:-1, 0]).all()
    assert torch.equal(resize_pos_embed(pos_embed, (14, 14), (14, 14)), pos_embed)


@pytest.mark.parametrize(("num_patches", "target", "expected"), [
    (196, (16, 8), (14, 14)), (128, (21, 10), (16, 8)), (210, (16, 8), (21, 10)), (128, (16, 8), (16, 8))])
def test_checkpoint_grid_reads_square_and_reid_grids(num_patches, target, expected):
    assert checkpoint_grid(num_patches, target) == expected


def test_hhcl_model_file_rebuilds_overlapping_patches(tmp_path):
    torch.manual_seed(0)
    trained = build_model("vit_small", patch_stride=12).eval()
    path = tmp_path / "model.pth"
    torch.save({"model": trained.state_dict(), "build_options": trained.build_options, "epoch": 1}, path)
    rebuilt = load_trained_model(None, path)
    assert rebuilt.backbone.patch_stride == 12
    images = torch.randn(2, 3, 32, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), trained(images))


def test_onnx_export_keeps_parity(tmp_path):
    pytest.importorskip("onnxruntime")
    from hhcl.export import export_onnx

    torch.manual_seed(0)
    model = build_model("vit_small").eval()
    # 32x16 images use a 2x1 grid, so the exported graph interpolates the 16x8 position embeddings.
    report = export_onnx(model, tmp_path / "vit.onnx", height=32, width=16, metadata={"arch": "vit_small"})
    assert report.feature_dim == DIM and report.max_abs_diff <= 1e-4


@pytest.mark.parametrize(("options", "message"), [
    ({"pooling": "gem"}, "class token"),
    ({"last_stride": 2}, "last_stride=1"),
    ({"patch_stride": 17}, r"1\.\.16"),
    ({"patch_stride": 0}, r"1\.\.16"),
    ({"arch": "resnet18", "patch_stride": 12}, "option of the ViT archs"),
    ({"arch": "vit_smal"}, "did you mean 'vit_small'"),
])
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(HHCLError, match=message) as error, torch.device("meta"):
        build_model(**{"arch": "vit_small", **options})
    assert "\n" not in str(error.value)


def test_a_vit_base_file_is_a_one_line_shape_error(tmp_path):
    path = tmp_path / "jx_vit_base_p16_224.pth"
    torch.save({"cls_token": torch.zeros(1, 1, 768), "pos_embed": torch.zeros(1, 197, 768)}, path)
    with torch.device("meta"):
        model = build_model("vit_small")
    with pytest.raises(HHCLError, match=r"\(1, 1, 768\) in the file but \(1, 1, 384\) in the vit_small model"):
        load_weights(model, path, verbose=False)


def test_training_step_reaches_every_parameter_and_bf16_autocast_runs():
    torch.manual_seed(0)
    model = build_model("vit_small").train()
    images = torch.randn(4, 3, 32, 16)
    model(images).pow(2).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all()
               for p in model.backbone.parameters())
    assert model.backbone.pos_embed.grad.abs().sum() > 0 and model.backbone.cls_token.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        full = model(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(images).float()
    assert torch.nn.functional.cosine_similarity(full, half).min() > 0.99
