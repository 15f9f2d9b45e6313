"""``hhcl evaluate`` on a small query/gallery folder: figures, JSON, and one-line errors."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hhcl.cli import main
from hhcl.data import load_dataset
from hhcl.evaluation import evaluate_features
from hhcl.models import build_model, extract_features

HEIGHT, WIDTH = 64, 32


@pytest.fixture(scope="module")
def folder_dataset(tmp_path_factory):
    """3 identities seen by cameras 1 (query) and 2 (gallery), plus a distractor in the gallery."""
    root = tmp_path_factory.mktemp("dataset")
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(4, 3))
    for split, camera, pids in (("query", 1, (1, 2, 3)), ("gallery", 2, (1, 2, 3, 4))):
        (root / split).mkdir()
        for pid in pids:
            for shot in range(2):
                noise = rng.integers(-40, 40, size=(40, 20, 3))
                pixels = np.clip(colours[pid - 1] + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / f"{pid:04d}_c{camera}_{shot:04d}.png")
    return root


@pytest.fixture(scope="module")
def hhcl_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("osnet_x0_25", num_features=64)
    path = tmp_path_factory.mktemp("run") / "model.pth"
    torch.save({"model": model.state_dict(), "build_options": model.build_options, "epoch": 1}, path)
    return path


def evaluate_args(root, weights, *extra):
    return ["evaluate", "--dataset", "folder", "--root", str(root), "--weights", str(weights),
            "--height", str(HEIGHT), "--width", str(WIDTH), "--no-progress", *extra]


def test_json_figures_are_those_of_the_library_in_percent(folder_dataset, hhcl_checkpoint, capsys):
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--json")) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"mAP", "rank1", "rank5", "rank10", "mINP"}

    dataset = load_dataset("folder", folder_dataset)
    model = build_model("osnet_x0_25", num_features=64, weights=hhcl_checkpoint)
    query = extract_features(model, dataset.query, height=HEIGHT, width=WIDTH, progress=False)
    gallery = extract_features(model, dataset.gallery, height=HEIGHT, width=WIDTH, progress=False)
    expected = evaluate_features(query, gallery, [pid for _, pid, _ in dataset.query],
                                 [pid for _, pid, _ in dataset.gallery], [cam for _, _, cam in dataset.query],
                                 [cam for _, _, cam in dataset.gallery], max_rank=8)
    assert printed["mAP"] == pytest.approx(100 * expected["mAP"], abs=0.01)
    assert printed["rank1"] == pytest.approx(100 * expected["cmc"][0], abs=0.01)
    assert printed["rank10"] == 100.0  # 8 gallery images: every match is within rank 10


def test_text_output_names_the_model_and_every_figure(folder_dataset, hhcl_checkpoint, capsys):
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--arch", "osnet_x0_25", "--precision", "bf16")) == 0
    out = capsys.readouterr().out
    assert "osnet_x0_25 on folder: 6 query, 8 gallery images" in out
    for label in ("mAP", "rank-1", "rank-5", "rank-10", "mINP"):
        assert f"  {label} " in out


def test_arch_that_contradicts_the_checkpoint_is_a_one_line_error(folder_dataset, hhcl_checkpoint, capsys):
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--arch", "resnet50")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "trained as osnet_x0_25, not resnet50" in err


def test_backbone_file_needs_an_arch(folder_dataset, tmp_path, capsys):
    torch.save(build_model("osnet_x0_25").backbone.state_dict(), tmp_path / "osnet.pth")
    assert main(evaluate_args(folder_dataset, tmp_path / "osnet.pth")) == 2
    assert "pass --arch" in capsys.readouterr().err


def test_weights_that_are_not_a_checkpoint_exit_2(folder_dataset, tmp_path, capsys):
    (tmp_path / "notes.pth").write_text("not weights")
    assert main(evaluate_args(folder_dataset, tmp_path / "notes.pth", "--arch", "osnet_x0_25")) == 2
    assert "is not a PyTorch checkpoint" in capsys.readouterr().err


def test_plot_writes_the_cmc_curve(folder_dataset, hhcl_checkpoint, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--json", "--plot", str(out))) == 0
    json.loads(capsys.readouterr().out)
    with Image.open(out / "cmc.png") as picture:
        assert picture.format == "PNG" and picture.size[0] > 100 and picture.size[1] > 100


def test_plot_folder_that_cannot_be_written_fails_before_extraction(folder_dataset, hhcl_checkpoint, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--plot", str(blocker / "plots"))) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--plot" in err and str(blocker) in err


def test_a_torchreid_file_reads_as_loaded_not_as_fresh(folder_dataset, tmp_path, capsys):
    """A torchreid file: backbone with its 512-d fc embedding, plus the training identities' classifier."""
    state = build_model("osnet_x0_25").backbone.state_dict()
    state |= {"classifier.weight": torch.zeros(751, 512), "classifier.bias": torch.zeros(751)}
    torch.save({"state_dict": state, "epoch": 150}, tmp_path / "osnet_x0_25_market.pth.tar")
    assert main(evaluate_args(folder_dataset, tmp_path / "osnet_x0_25_market.pth.tar", "--arch", "osnet_x0_25")) == 0
    err = capsys.readouterr().err
    assert "the backbone and its embedding are loaded" in err
    assert "the identity classifier (2 tensors) is not needed" in err
    assert "fresh" not in err


def test_plot_says_where_it_wrote_and_names_the_model_file_and_dataset(folder_dataset, hhcl_checkpoint, tmp_path,
                                                                       capsys):
    out = tmp_path / "plots"
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--plot", str(out))) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'cmc.png'} (CMC of {hhcl_checkpoint.parent.name}/model.pth on folder: mAP " in printed


def test_several_weights_are_evaluated_in_turn_and_their_curves_overlaid(folder_dataset, hhcl_checkpoint, tmp_path,
                                                                        capsys):
    torch.manual_seed(1)
    other = build_model("osnet_x0_25", num_features=64)
    (tmp_path / "adapted").mkdir()
    torch.save({"model": other.state_dict(), "build_options": other.build_options, "epoch": 3},
               tmp_path / "adapted" / "model.pth")
    out = tmp_path / "plots"
    weights = [str(hhcl_checkpoint), str(tmp_path / "adapted" / "model.pth")]
    both = evaluate_args(folder_dataset, weights[0], "--json", "--plot", str(out))
    both.insert(both.index(weights[0]) + 1, weights[1])  # --weights FIRST SECOND
    assert main(both) == 0
    captured = capsys.readouterr()
    figures = json.loads(captured.out)
    assert list(figures) == weights
    for single in weights:  # the figures each file has alone
        assert main(evaluate_args(folder_dataset, single, "--json")) == 0
        assert json.loads(capsys.readouterr().out) == figures[single]
    assert "adapted/model.pth on folder" in captured.err and "wrote" in captured.err
    with Image.open(out / "cmc.png") as picture:
        colours = {colour for _, colour in picture.convert("RGB").getcolors(1 << 20)}
    from hhcl.retrieval.visualize import CURVE_COLORS

    assert set(CURVE_COLORS[:2]) <= colours  # one curve each


def test_ranked_draws_the_lists_of_n_queries(folder_dataset, hhcl_checkpoint, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--plot", str(out), "--ranked", "2")) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'ranked.png'} and {out / 'index.html'} (2 queries" in printed
    page = (out / "index.html").read_text()
    assert page.count("<h2>Query") == 2 and "model.pth (osnet_x0_25) on folder" in page
    with Image.open(out / "ranked.png") as picture:
        assert picture.format == "PNG"


def test_ranked_without_a_plot_folder_is_a_one_line_error(folder_dataset, hhcl_checkpoint, capsys):
    assert main(evaluate_args(folder_dataset, hhcl_checkpoint, "--ranked", "3")) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--ranked 3" in err and "--plot OUT" in err
