"""extract_features: dataset order, normalisation, precision, and the model left as it was."""

import numpy as np
import pytest
import torch
from PIL import Image

from hhcl.data.images import load_resized
from hhcl.data.transforms import normalize_batch
from hhcl.errors import HHCLError
from hhcl.models import build_model, extract_features

HEIGHT, WIDTH = 64, 32


@pytest.fixture(scope="module")
def image_paths(tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for index in range(7):
        # Different sizes: the loader resizes them all.
        pixels = rng.integers(0, 256, size=(40 + 10 * index, 20 + 3 * index, 3), dtype=np.uint8)
        path = folder / f"{index:04d}_c1.png"
        Image.fromarray(pixels).save(path)
        paths.append(str(path))
    return paths


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = build_model("osnet_x0_25")
    with torch.no_grad():  # random but not degenerate BatchNorm statistics
        model.train()(normalize_batch(torch.randint(0, 256, (8, 3, HEIGHT, WIDTH), dtype=torch.uint8)))
    return model


def reference_features(model, paths):
    images = torch.stack([load_resized(path, HEIGHT, WIDTH) for path in paths])
    with torch.no_grad():
        return model.eval()(normalize_batch(images))


def test_rows_follow_the_items_and_are_unit_length(model, image_paths):
    items = [(path, pid, 0) for pid, path in enumerate(image_paths)]
    features = extract_features(model, items, batch_size=3, height=HEIGHT, width=WIDTH, progress=False)
    assert features.shape == (7, 512) and features.dtype == torch.float32
    assert torch.allclose(features.norm(dim=1), torch.ones(7), atol=1e-5)
    assert torch.allclose(features, reference_features(model, image_paths), atol=1e-4)


def test_plain_paths_and_reversed_order(model, image_paths):
    forward = extract_features(model, image_paths, batch_size=4, height=HEIGHT, width=WIDTH, progress=False)
    backward = extract_features(model, image_paths[::-1], batch_size=4, height=HEIGHT, width=WIDTH, progress=False)
    assert torch.allclose(forward, backward.flip(0), atol=1e-5)


def test_bf16_matches_fp32_closely(model, image_paths):
    fp32 = extract_features(model, image_paths, batch_size=8, height=HEIGHT, width=WIDTH, progress=False)
    bf16 = extract_features(model, image_paths, batch_size=8, height=HEIGHT, width=WIDTH, precision="bf16",
                            progress=False)
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16.norm(dim=1), torch.ones(7), atol=1e-5)
    assert (fp32 * bf16).sum(dim=1).min() > 0.99


def test_model_mode_and_memory_format_are_restored(model, image_paths):
    model.train()
    extract_features(model, image_paths[:2], height=HEIGHT, width=WIDTH, precision="bf16", progress=False)
    assert model.training
    assert model.backbone.conv1.conv.weight.is_contiguous()
    model.eval()
    extract_features(model, image_paths[:2], height=HEIGHT, width=WIDTH, progress=False)
    assert not model.training


def test_progress_bar_counts_images(model, image_paths, capsys):
    extract_features(model, image_paths, batch_size=4, height=HEIGHT, width=WIDTH, description="gallery")
    assert "gallery" in capsys.readouterr().err


def test_no_items_give_an_empty_matrix(model):
    assert extract_features(model, [], progress=False).shape == (0, 512)


def test_fp16_on_cpu_and_unknown_precision_are_refused(model, image_paths):
    with pytest.raises(HHCLError, match="fp16 needs a CUDA device"):
        extract_features(model, image_paths, precision="fp16", progress=False)
    with pytest.raises(HHCLError, match="choose one of fp32, bf16, fp16"):
        extract_features(model, image_paths, precision="int8", progress=False)


def has_cxx_compiler() -> bool:
    import shutil

    return any(shutil.which(name) for name in ("c++", "g++", "clang++"))


@pytest.mark.skipif(not has_cxx_compiler(), reason="torch.compile on CPU needs a C++ compiler, and none is installed")
def test_compiled_extraction_gives_the_eager_features_and_sees_weight_updates(model, image_paths, caplog):
    import logging

    # batch 3 over 7 images: a short last batch, padded so that one compiled graph serves all
    eager = extract_features(model, image_paths, batch_size=3, height=HEIGHT, width=WIDTH, progress=False)
    with caplog.at_level(logging.WARNING, logger="hhcl"):
        compiled = extract_features(model, image_paths, batch_size=3, height=HEIGHT, width=WIDTH, progress=False,
                                    compile=True)
    if "torch.compile failed" in caplog.text:  # e.g. a compiler without Python's headers: the fallback's own test
        pytest.skip(f"torch.compile does not work on this machine: {caplog.text.strip().splitlines()[-1]}")
    assert compiled.shape == eager.shape
    torch.testing.assert_close(compiled, eager, atol=1e-5, rtol=0)
    with torch.no_grad():
        model.neck.weight.mul_(torch.linspace(0.5, 1.5, model.neck.weight.numel()))
    try:
        moved = extract_features(model, image_paths, batch_size=3, height=HEIGHT, width=WIDTH, progress=False,
                                 compile=True)
        moved_eager = extract_features(model, image_paths, batch_size=3, height=HEIGHT, width=WIDTH, progress=False)
    finally:
        with torch.no_grad():
            model.neck.weight.div_(torch.linspace(0.5, 1.5, model.neck.weight.numel()))
    assert (moved - compiled).abs().max() > 1e-3
    torch.testing.assert_close(moved, moved_eager, atol=1e-5, rtol=0)


def test_a_failing_compile_falls_back_to_the_eager_model_and_says_why(model, image_paths, monkeypatch, caplog):
    import logging

    def broken_compile(module, **options):
        def run(images):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")

        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    eager = extract_features(model, image_paths, batch_size=4, height=HEIGHT, width=WIDTH, progress=False)
    with caplog.at_level(logging.WARNING, logger="hhcl"):
        fallback = extract_features(model, image_paths, batch_size=4, height=HEIGHT, width=WIDTH, progress=False,
                                    compile=True)
    torch.testing.assert_close(fallback, eager, atol=1e-5, rtol=0)  # the padded last batch may round apart
    assert caplog.text.count("torch.compile failed") == 1 and "No working C++ compiler" in caplog.text
