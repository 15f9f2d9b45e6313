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


def test_rank_gallery_can_leave_out_the_querys_own_file():
    query = normalised([[1, 0], [0, 1]])
    gallery = normalised([[1, 0], [1, 0.5], [0, 1]])
    indices, distances = rank_gallery(query, gallery, topk=2, exclude=[0, -1])
    assert indices.tolist() == [[1, 2], [2, 1]]
    assert np.all(np.isfinite(distances))


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
    stored_paths, stored_features = load_cached_features(cache, key)
    assert stored_paths == paths
    np.testing.assert_array_equal(stored_features, features)
    assert [name for name in os.listdir(cache.parent)] == ["gallery"]


def test_missing_cache_is_a_miss(tmp_path, gallery):
    paths, weights = gallery
    assert load_cached_features(tmp_path / "absent.npz", CacheKey.build({}, weights, paths)) is None


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
        assert load_cached_features(cache, CacheKey.build(settings, weights, paths)) is None
    expected = "gallery changed" if change in ("rewrite_image", "add_image") else "weights or model settings"
    assert expected in caplog.text and "stale" in caplog.text


def test_corrupt_cache_is_ignored_with_a_warning(tmp_path, gallery, caplog):
    paths, weights = gallery
    cache = tmp_path / "gallery.npz"
    cache.write_bytes(b"garbage")
    with caplog.at_level(logging.WARNING, logger="hhcl.retrieval"):
        assert load_cached_features(cache, CacheKey.build({}, weights, paths)) is None
    assert "unreadable" in caplog.text


def test_cache_with_mismatched_arrays_is_ignored(tmp_path, gallery, caplog):
    paths, weights = gallery
    key = CacheKey.build({}, weights, paths)
    cache = save_cached_features(tmp_path / "gallery.npz", key, paths[:2], np.eye(3, dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="hhcl.retrieval"):
        assert load_cached_features(cache, key) is None
    assert "2 paths for features of shape (3, 3)" in caplog.text


def test_cache_in_an_unwritable_place_names_it(tmp_path, gallery):
    paths, weights = gallery
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(HHCLError, match=str(blocker / "sub")):
        save_cached_features(blocker / "sub" / "g.npz", CacheKey.build({}, weights, paths), paths, np.eye(3))


class VectorsInFiles:
    """A stand-in extractor: each "image" file holds its own feature vector as text."""

    def __init__(self, weights):
        self.weights = weights
        self.files_embedded = 0

    def settings(self):
        return {"arch": "vectors"}

    def _read(self, path):
        return normalised([[float(value) for value in open(path).read().split()]])[0]

    def __call__(self, paths):
        import torch

        return torch.from_numpy(np.stack([self._read(path) for path in paths]))

    def extract_files(self, paths):
        import torch

        kept = [str(path) for path in paths if open(path).read().strip() != "broken"]
        self.files_embedded += len(kept)
        features = np.array([self._read(path) for path in kept], dtype=np.float32).reshape(len(kept), 2)
        return kept, torch.from_numpy(features)


@pytest.fixture
def vector_gallery(tmp_path):
    folder = tmp_path / "gallery"
    folder.mkdir()
    vectors = {"0001_c2.png": "1 0", "0002_c2.png": "0 1", "0001_c3.png": "1 0.2", "0003_c2.png": "-1 0"}
    for name, vector in vectors.items():
        (folder / name).write_text(vector)
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"v1")
    return sorted(str(path) for path in folder.iterdir()), VectorsInFiles(weights)


def test_search_gallery_ranks_and_reads_identities(tmp_path, vector_gallery):
    from hhcl.retrieval.search import search_gallery

    gallery, extractor = vector_gallery
    query = tmp_path / "0001_c1.png"
    query.write_text("1 0.05")
    (result,) = search_gallery(extractor, [str(query)], gallery, topk=3)
    assert [os.path.basename(path) for path in result.gallery_paths] == ["0001_c2.png", "0001_c3.png", "0002_c2.png"]
    assert result.query_pid == 1 and result.gallery_pids == [1, 1, 2]
    assert result.distances == sorted(result.distances)


def test_a_query_from_the_gallery_is_not_matched_with_itself(vector_gallery):
    from hhcl.retrieval.search import search_gallery

    gallery, extractor = vector_gallery
    query = [path for path in gallery if path.endswith("0001_c2.png")]
    (result,) = search_gallery(extractor, query, gallery, topk=10)
    assert query[0] not in result.gallery_paths and len(result.gallery_paths) == 3


def test_search_gallery_skips_broken_gallery_files_and_uses_the_cache(tmp_path, vector_gallery):
    from hhcl.retrieval.search import search_gallery

    gallery, extractor = vector_gallery
    broken = os.path.join(os.path.dirname(gallery[0]), "0004_c2.png")
    with open(broken, "w") as stream:
        stream.write("broken")
    gallery = sorted(gallery + [broken])
    query = tmp_path / "0002_c1.png"
    query.write_text("0 1")
    cache = tmp_path / "cache.npz"

    first = search_gallery(extractor, [str(query)], gallery, topk=10, cache_path=cache)
    assert broken not in first[0].gallery_paths and extractor.files_embedded == 4
    second = search_gallery(extractor, [str(query)], gallery, topk=10, cache_path=cache)
    assert extractor.files_embedded == 4, "a current cache must not be re-extracted"
    assert second[0].gallery_paths == first[0].gallery_paths
    extractor.weights.write_bytes(b"v2")
    search_gallery(extractor, [str(query)], gallery, topk=10, cache_path=cache)
    assert extractor.files_embedded == 8, "changed weights must invalidate the cache"


def test_search_gallery_refuses_an_empty_or_unreadable_gallery(tmp_path, vector_gallery):
    from hhcl.retrieval.search import search_gallery

    _, extractor = vector_gallery
    query = tmp_path / "q.png"
    query.write_text("1 0")
    with pytest.raises(HHCLError, match="gallery has no images"):
        search_gallery(extractor, [str(query)], [], topk=3)
    broken = tmp_path / "broken.png"
    broken.write_text("broken")
    with pytest.raises(HHCLError, match="none of the 1 gallery images can be read"):
        search_gallery(extractor, [str(query)], [str(broken)], topk=3)


def test_exclude_mask_ranks_the_masked_images_last_and_lists_leave_them_out():
    from hhcl.retrieval.search import ranked_lists as to_lists

    query = np.array([[1.0, 0.0]], dtype=np.float32)
    gallery = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]], dtype=np.float32)
    indices, distances = rank_gallery(query, gallery, topk=3, exclude_mask=[[True, False, False]])
    assert indices.tolist() == [[1, 2, 0]] and np.isinf(distances[0, 2])
    (ranked,) = to_lists(["9_c1.jpg"], ["1_c1.jpg", "1_c2.jpg", "2_c3.jpg"], indices, distances)
    assert ranked.gallery_paths == ["1_c2.jpg", "2_c3.jpg"]


def test_split_ranked_lists_leave_out_the_same_identity_in_the_same_camera():
    from hhcl.retrieval.search import split_ranked_lists

    query = [("q1.jpg", 1, 0), ("q2.jpg", 2, 0)]
    gallery = [("g1a.jpg", 1, 0), ("g1b.jpg", 1, 1), ("g2.jpg", 2, 1), ("gx.jpg", 3, 0)]
    features = np.eye(4, dtype=np.float32)
    query_features = np.stack([features[0], features[2]])
    results = split_ranked_lists(query_features, features, query, gallery, num_queries=2, topk=4)
    assert [ranked.query_path for ranked in results] == ["q1.jpg", "q2.jpg"]
    assert "g1a.jpg" not in results[0].gallery_paths and len(results[0].gallery_paths) == 3
    assert results[1].gallery_paths[0] == "g2.jpg" and results[1].gallery_pids[0] == 2
