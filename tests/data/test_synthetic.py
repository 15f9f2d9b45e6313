"""The synthetic set: determinism, split rules, folder layout, difficulty (speed: benchmarks.data_pipeline)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hhcl.data import load_dataset
from hhcl.data.synthetic import (
    GALLERY,
    QUERY,
    TRAIN,
    SyntheticConfig,
    ensure_synthetic,
    file_names,
    render_synthetic,
)
from hhcl.errors import HHCLError

SMALL = dict(num_identities=6, num_test_identities=4, num_cameras=3, images_per_identity=5, height=64, width=32)


def test_deterministic_by_seed():
    first = render_synthetic(SyntheticConfig(**SMALL, seed=3))
    again = render_synthetic(SyntheticConfig(**SMALL, seed=3))
    other = render_synthetic(SyntheticConfig(**SMALL, seed=4))
    assert torch.equal(first.images, again.images) and torch.equal(first.cams, again.cams)
    assert not torch.equal(first.images, other.images)
    assert first.images.shape == (50, 3, 64, 32) and first.images.dtype == torch.uint8


def test_split_rules():
    config = SyntheticConfig(num_identities=20, num_test_identities=30, num_cameras=5, images_per_identity=4, seed=1)
    rendered = render_synthetic(config)
    pids, cams, splits = rendered.pids, rendered.cams, rendered.splits
    assert len(pids) == 50 * 4
    assert set(pids[splits == TRAIN].tolist()) == set(range(20))
    assert set(pids[splits != TRAIN].tolist()) == set(range(20, 50))
    for pid in range(50):
        assert len(set(cams[pids == pid].tolist())) >= 2  # every identity visits two cameras or more
    gallery = list(zip(pids[splits == GALLERY].tolist(), cams[splits == GALLERY].tolist()))
    queries = list(zip(pids[splits == QUERY].tolist(), cams[splits == QUERY].tolist()))
    assert set(pid for pid, _ in queries) == set(range(20, 50))  # every test identity is queried
    assert len(set(queries)) == len(queries)  # at most one query per identity and camera
    for pid, cam in queries:
        assert any(g_pid == pid and g_cam != cam for g_pid, g_cam in gallery)


def test_written_layout_reads_back(tmp_path):
    dataset = load_dataset("synthetic", tmp_path / "synth", seed=2, **SMALL)
    assert dataset.name == "synthetic"
    assert len(dataset.train) == 30 and len(dataset.query) + len(dataset.gallery) == 20
    assert dataset.split_counts("train")["identities"] == 6
    assert {pid for _, pid, _ in dataset.query} <= {pid for _, pid, _ in dataset.gallery}
    assert {camid for _, _, camid in dataset.train + dataset.query + dataset.gallery} <= {0, 1, 2}
    names = sorted(os.listdir(tmp_path / "synth" / "train"))
    assert names[0].startswith("0001_c") and names[0].endswith(".jpg")
    # the files hold the rendered pictures (up to JPEG's loss on small noisy images)
    rendered = render_synthetic(SyntheticConfig(seed=2, **SMALL))
    for index in (0, 17, 48):
        name = file_names(rendered)[index]
        written = torch.from_numpy(np.array(Image.open(tmp_path / "synth" / name))).permute(2, 0, 1).float()
        own = (written - rendered.images[index].float()).abs().mean()
        other = (written - rendered.images[index + 1].float()).abs().mean()
        assert own < 10.0 and own < other / 3
    manifest = json.loads((tmp_path / "synth" / "synthetic.json").read_text())
    assert manifest["seed"] == 2 and manifest["images_per_identity"] == 5
    # the same parameters reuse the folder; others are refused rather than overwritten
    stamp = os.stat(dataset.train[0][0]).st_mtime_ns
    assert load_dataset("synthetic", tmp_path / "synth", seed=2, **SMALL).train == dataset.train
    assert os.stat(dataset.train[0][0]).st_mtime_ns == stamp
    with pytest.raises(HHCLError, match="made with other parameters"):
        load_dataset("synthetic", tmp_path / "synth", seed=3, **SMALL)


def test_refuses_a_folder_with_other_content(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(HHCLError, match="is not a synthetic set"):
        ensure_synthetic(tmp_path, SyntheticConfig(**SMALL))
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_default_root_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    dataset = load_dataset("synthetic", None, **SMALL)
    assert dataset.train[0][0].startswith(str(tmp_path / "hhcl" / "synthetic-"))


def test_invalid_parameters():
    with pytest.raises(HHCLError, match="num_cameras must be at least 2"):
        SyntheticConfig(num_cameras=1)
    with pytest.raises(HHCLError, match=r"camera_strength must lie in \[0, 1\]"):
        SyntheticConfig(camera_strength=1.5)


def cross_camera_rank1(features: torch.Tensor, rendered) -> float:
    """Rank-1 of query against gallery, same identity in the same camera left out."""
    query, gallery = rendered.splits == QUERY, rendered.splits == GALLERY
    similarity = F.normalize(features[query], dim=1) @ F.normalize(features[gallery], dim=1).T
    same_shot = (rendered.pids[query][:, None] == rendered.pids[gallery][None]) & (
        rendered.cams[query][:, None] == rendered.cams[gallery][None]
    )
    best = similarity.masked_fill(same_shot, -2.0).argmax(dim=1)
    return (rendered.pids[gallery][best] == rendered.pids[query]).float().mean().item()


def pixel_features(images: torch.Tensor) -> torch.Tensor:
    pixels = F.interpolate(images.float() / 255.0, size=(16, 8), mode="area").flatten(1)
    return pixels - pixels.mean(dim=1, keepdim=True)


def body_colour_features(images: torch.Tensor) -> torch.Tensor:
    """A crude camera-robust identity cue: colours down the body's centre, grey-world balanced."""
    centre = images[:, :, 20:120, 22:42].float()
    balanced = centre / centre.mean(dim=(2, 3), keepdim=True).clamp(min=1.0)
    stripes = F.interpolate(balanced, size=(10, 1), mode="area").flatten(1)
    return stripes - stripes.mean(dim=1, keepdim=True)


def test_cameras_make_matching_hard_but_identities_stay_learnable():
    common = dict(num_identities=4, num_test_identities=50, num_cameras=4, images_per_identity=6, seed=0)
    hard = render_synthetic(SyntheticConfig(**common))
    easy = render_synthetic(SyntheticConfig(**common, camera_strength=0.0))
    chance = 1 / 50
    # Without camera nuisances, raw pixels often find the person; with them, they find someone
    # else in the query's own camera (an untrained matcher is worse than chance)...
    assert cross_camera_rank1(pixel_features(easy.images), easy) > 10 * chance
    assert cross_camera_rank1(pixel_features(hard.images), hard) < chance
    # ...while an identity cue that discounts the camera still carries across cameras.
    assert cross_camera_rank1(body_colour_features(hard.images), hard) > 5 * chance
