"""``hhcl train --inspect``, then ``hhcl inspect RUN``: a tiny synthetic run's page, read as HTML and in Chromium."""

import json
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error, run_cli
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks.chromium import find_chromium, open_page  # noqa: E402

TINY_SET = {"num_identities": 12, "images_per_identity": 6, "num_cameras": 3, "height": 32, "width": 16, "seed": 0,
            "camera_strength": 0.0}


@pytest.fixture(scope="module")
def inspected_run(tmp_path_factory):
    """A two-epoch tiny synthetic run trained with --inspect, and its page for the last epoch."""
    from hhcl.cli import main
    from hhcl.data import load_dataset

    folder = tmp_path_factory.mktemp("inspect")
    root = folder / "synthetic"
    load_dataset("synthetic", root, **TINY_SET)
    settings = [f"dataset.options.{key}={value}" for key, value in TINY_SET.items()]
    settings += ["cluster.k1=10", "cluster.k2=3", "train.num_threads=1", "model.arch=osnet_x0_25"]
    run = folder / "run"
    status = main(["train", "--config", "demo", "--root", str(root), "--output", str(run), "--height", "32",
                   "--width", "16", "--num-workers", "0", "--batch-size", "16", "--num-instances", "4", "--eps", "0.6",
                   "--epochs", "2", "--iters", "2", "--eval-every", "0", "--no-progress", "--inspect",
                   *[item for setting in settings for item in ("--set", setting)]])
    assert status == 0
    assert main(["inspect", str(run)]) == 0
    return run


class Figures(HTMLParser):
    """The page's thumbnails (``<figure class=BORDER><img data-index=I src=...>``) and its sections' data."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[tuple[str, int, str, str]] = []  # border, image index, src, loading
        self.sections: dict[str, dict[str, str]] = {}
        self.border = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "figure":
            self.border = attrs["class"]
        elif tag == "img" and "data-index" in attrs:
            self.figures.append((self.border, int(attrs["data-index"]), attrs["src"], attrs.get("loading")))
        elif tag == "section":
            self.sections[attrs["id"]] = attrs


def parse_page(path: Path) -> Figures:
    figures = Figures()
    figures.feed(path.read_text())
    return figures


def test_the_run_keeps_small_label_files_and_never_the_images(inspected_run):
    folder = inspected_run / "inspect"
    kept = sorted(path.name for path in folder.glob("*.npz"))
    assert kept == ["epoch_001.npz", "epoch_002.npz", "images.npz"]
    images = np.load(folder / "images.npz")
    assert len(images["paths"]) == 12 * 6 and all(Path(path).is_file() for path in images["paths"])
    assert set(images["cameras"].tolist()) == {0, 1, 2} and (images["identities"] >= 0).all()
    epoch = np.load(folder / "epoch_002.npz")
    assert epoch["labels"].shape == (72,) and epoch["labels"].dtype == np.int64
    assert isinstance(json.loads(str(epoch["stats"])), dict) and str(epoch["decision"]) == "train"
    assert sum(path.stat().st_size for path in folder.glob("*.npz")) < 20_000


def test_the_page_shows_the_runs_clusters_with_existing_lazy_thumbnails(inspected_run):
    page = inspected_run / "inspect" / "epoch_002.html"
    figures = parse_page(page)
    history = json.loads((inspected_run / "metrics.json").read_text())["history"]
    summary = figures.sections["summary"]
    assert int(summary["data-clusters"]) == history[-1]["num_clusters"]
    assert int(summary["data-outliers"]) == history[-1]["num_outliers"]
    assert {"largest", "random", "camera-diverse", "outliers", "changes"} <= set(figures.sections)
    assert figures.figures
    for _, _, source, loading in figures.figures:
        assert loading == "lazy"
        assert (page.parent / source).is_file(), source
        with Image.open(page.parent / source) as thumbnail:
            assert thumbnail.format == "JPEG" and thumbnail.size == (48, 96)


def test_borders_are_green_for_the_clusters_majority_identity_and_red_otherwise(inspected_run):
    folder = inspected_run / "inspect"
    labels = np.load(folder / "epoch_002.npz")["labels"]
    identities = np.load(folder / "images.npz")["identities"]
    majority = {}
    for cluster in set(labels[labels >= 0].tolist()):
        counts = Counter(identities[labels == cluster].tolist())
        majority[cluster] = min(counts, key=lambda identity: (-counts[identity], identity))
    figures = parse_page(folder / "epoch_002.html").figures
    for border, index, _, _ in figures:
        if labels[index] < 0:
            assert border == "unknown"
        else:
            assert border == ("majority" if identities[index] == majority[labels[index]] else "other"), index
    outliers = {index for border, index, _, _ in figures if labels[index] < 0}
    assert outliers == set(np.flatnonzero(labels < 0).tolist())  # fewer than the sample size: all shown


def test_thumbnails_are_made_once(inspected_run, capsys):
    thumbnails = inspected_run / "inspect" / "thumbnails"
    before = {path.name: path.stat().st_mtime_ns for path in thumbnails.iterdir()}
    status, out, _ = run_cli(capsys, "inspect", inspected_run, "--epoch", "1")
    assert status == 0 and "epoch_001.html" in out
    after = {path.name: path.stat().st_mtime_ns for path in thumbnails.iterdir()}
    assert {name: after[name] for name in before} == before


def test_bad_runs_are_one_line_errors_naming_the_folder_and_the_fix(inspected_run, tmp_path, capsys):
    status, _, err = run_cli(capsys, "inspect", tmp_path / "missing")
    one_line_error(status, err, tmp_path / "missing", "--output folder")
    status, _, err = run_cli(capsys, "inspect", tmp_path)
    one_line_error(status, err, tmp_path, "not a run folder")
    plain_run = tmp_path / "plain"
    plain_run.mkdir()
    (plain_run / "config.yaml").write_text("{}\n")
    status, _, err = run_cli(capsys, "inspect", plain_run)
    one_line_error(status, err, plain_run, "--inspect")
    status, _, err = run_cli(capsys, "inspect", inspected_run, "--epoch", "7")
    one_line_error(status, err, "epoch_007.npz", "1, 2")


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (apt-get install -y chromium)")
def test_the_page_renders_in_chromium_without_errors(inspected_run, tmp_path):
    page = inspected_run / "inspect" / "epoch_002.html"
    report = open_page(page, screenshot=tmp_path / "page.png", width=1000, height=1000)
    assert report.errors == []
    assert report.images == len(parse_page(page).figures) == report.lazy
    assert 0 < report.loaded_in_view == report.in_view < report.images  # the first screen loads, lazily
    assert report.broken == []
    with Image.open(report.screenshot) as screenshot:
        assert screenshot.size == (1000, 1000)
        assert len(screenshot.convert("RGB").getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50  # not blank


@pytest.mark.skipif(find_chromium() is None, reason="no Chromium installed (apt-get install -y chromium)")
def test_chromium_reports_a_broken_image_and_a_console_error(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.jpg"><script>console.error("boom")</script>'
                    "</body></html>")
    report = open_page(page)
    assert any("boom" in error for error in report.errors)
    assert any("missing.jpg" in error for error in report.errors)
    assert report.broken == [(tmp_path / "missing.jpg").as_uri()]
