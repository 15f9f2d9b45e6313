import logging
import os

import numpy as np
import pytest

from hhcl.errors import HHCLError
from hhcl.retrieval.search import (
    CacheKey,
    identities_from_names,
    load_cached_features,
    rank_gallery,
    ranked_lists,
    save_cached_features,
)


def normalised(array) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def test_rank_gallery_orders_by_cosine_distance():
    query = normalised([[1, 0], [0, 1]])
    gallery = normalised([[0, 1], [1, 0.1], [1, 1], [-1, 0]])
    indices, distances = rank_gallery(query, gallery, topk=3)
    assert indices.tolist() == [[1, 2, 0], [0, 2, 1]]
    assert distances.shape == (2, 3) and distances.dtype == np.float32
    np.testing.assert_allclose(distances[0], [1 - 1 / np.sqrt(1.01), 1 - 1 / np.sqrt(2), 1.0], atol=1e-6)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_rank_gallery_matches_brute_force_and_keeps_ties_in_gallery_order():
    rng = np.random.default_rng(0)
    query, gallery = normalised(rng.normal(size=(5, 16))), normalised(rng.normal(size=(40, 16)))
    gallery[7] = gallery[3]  # a tie
    indices, distances = rank_gallery(query, gallery, topk=40)
    for row in range(5):
        brute = sorted(range(40), key=lambda index: (1 - float(query[row] @ gallery[index]), index))
        assert indices[row].tolist() == brute
        assert indices[row].tolist().index(3) < indices[row].tolist().index(7)


def test_rank_gallery_returns_at_most_the_gallery():
    indices, distances = rank_gallery(normalised([[1, 0]]), normalised([[0, 1], [1, 0]]), topk=10)
    assert indices.tolist() == [[1, 0]] and distances.shape == (1, 2)


def test_rank_gallery_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="features must be"):
        rank_gallery(np.ones((2, 3)), np.ones((4, 5)), topk=1)
    with pytest.raises(ValueError, match="topk"):
        rank_gallery(np.ones((2, 3)), np.ones((4, 3)), topk=0)


def test_identities_from_names():
    paths = ["/g/0007_c1.jpg", "0007_b.png", "-1_c2.jpg", "photo.jpg", "/x/0012_a.png"]
    assert identities_from_names(paths) == [7, 7, None, None, 12]
    assert identities_from_names(paths, pattern=None) == [None] * 5
    assert identities_from_names(["bob-1.jpg", "alice-2.jpg", "bob-3.jpg"], r"^(?P<pid>[a-z]+)-") == [1, 0, 1]


def test_identity_pattern_must_be_valid_and_name_pid():
    with pytest.raises(HHCLError, match="'pid'"):
        identities_from_names(["a.jpg"], r"^(\d+)_")
    with pytest.raises(HHCLError, match="not a valid regular expression"):
        identities_from_names(["a.jpg"], r"^(?P<pid>\d+")


def test_ranked_lists_carries_paths_identities_and_distances():
    results = ranked_lists(
        ["q/0001_a.png"], ["g/0002_b.png", "g/0001_b.png", "g/x.png"],
        np.array([[1, 2, 0]]), np.array([[0.1, 0.2, 0.3]], dtype=np.float32),
    )
    (result,) = results
    assert result.query_path == "q/0001_a.png" and result.query_pid == 1
    assert result.gallery_paths == ["g/0001_b.png", "g/x.png", "g/0002_b.png"]
    assert result.gallery_pids == [1, None, 2]
    assert result.distances == pytest.approx([0.1, 0.2, 0.3])


@pytest.fixture
def gallery(tmp_path):
    paths = []
    for index in range(3):
        path = tmp_path / "gallery" / f"{index:04d}_c1.jpg"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"image bytes %d" % index)
        paths.append(str(path))
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"weights v1")
    return paths, weights


def test_cache_round_trip(tmp_path, gallery):
    paths, weights = gallery
    key = CacheKey.build({"arch": "osnet_x0_25"}, weights, paths)
    features = normalised(np.random.default_rng(0).normal(size=(3, 8)))
    cache = tmp_path / "cache" / "gallery"  # no .npz suffix: the exact name is kept
    assert save_cached_features(cache, key, paths, features) == cache and cache.is_file()
    np.testing.assert_array_equal(load_cached_features(cache, key, paths), features)
    assert [name for name in os.listdir(cache.parent)] == ["gallery"]


def test_missing_cache_is_a_miss(tmp_path, gallery):
    paths, weights = gallery
    assert load_cached_features(tmp_path / "absent.npz", CacheKey.build({}, weights, paths), paths) is None


@pytest.mark.parametrize("change", ["rewrite_image", "add_image", "weights", "settings"])
def test_cache_is_invalidated_by_a_changed_gallery_or_model(tmp_path, gallery, change, caplog):
    paths, weights = gallery
    cache = tmp_path / "gallery.npz"
    save_cached_features(cache, CacheKey.build({"arch": "a"}, weights, paths), paths, np.eye(3, dtype=np.float32))
    settings = {"arch": "a"}
    if change == "rewrite_image":
        with open(paths[1], "ab") as stream:
            stream.write(b" edited")
    elif change == "add_image":
        extra = os.path.join(os.path.dirname(paths[0]), "0003_c2.jpg")
        with open(extra, "wb") as stream:
            stream.write(b"new")
        paths = paths + [extra]
    elif change == "weights":
        weights.write_bytes(b"weights v2")
    else:
        settings = {"arch": "a", "precision": "bf16"}
    with caplog.at_level(logging.INFO, logger="hhcl.retrieval"):
        assert load_cached_features(cache, CacheKey.build(settings, weights, paths), paths) is None
    expected = "gallery changed" if change in ("rewrite_image", "add_image") else "weights or model settings"
    assert expected in caplog.text and "stale" in caplog.text


def test_corrupt_cache_is_ignored_with_a_warning(tmp_path, gallery, caplog):
    paths, weights = gallery
    cache = tmp_path / "gallery.npz"
    cache.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="hhcl.retrieval"):
        assert load_cached_features(cache, CacheKey.build({}, weights, paths), paths) is None
    assert "unreadable" in caplog.text


def test_cache_in_an_unwritable_place_names_it(tmp_path, gallery):
    paths, weights = gallery
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(HHCLError, match=str(blocker / "sub")):
        save_cached_features(blocker / "sub" / "g.npz", CacheKey.build({}, weights, paths), paths, np.eye(3))
