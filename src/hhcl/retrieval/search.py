"""Gallery search: rank a gallery for each query, identities from file names, cached gallery features."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hhcl.errors import HHCLError
from hhcl.retrieval.outputs import read_npz, write_npz

logger = logging.getLogger("hhcl.retrieval")

# Most re-ID benchmarks (Market-1501, DukeMTMC, MSMT17, PRID, CUHK03 exports) start a file name
# with the identity and an underscore; -1 marks a distractor, which counts as unknown.
IDENTITY_PATTERN = r"^(?P<pid>-?\d+)_"
# ... and then the camera, as "c" and its number (Market-1501, DukeMTMC): what --exclude-same-camera reads by default.
CAMERA_PATTERN = r"^(?P<pid>-?\d+)_c(?P<cam>\d+)"
CACHE_FORMAT_VERSION = 1


@dataclass
class RankedList:
    """One query's result: the query and its ranked gallery images, best first.

    ``distances`` are cosine distances ``1 - cos`` in [0, 2]; a pid of None is unknown.
    """

    query_path: str
    gallery_paths: list[str]
    distances: list[float]
    query_pid: int | None = None
    gallery_pids: list[int | None] = field(default_factory=list)


def rank_gallery(query_features, gallery_features, topk: int, exclude=None,
                 exclude_mask=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk`` nearest gallery features of each query, by cosine distance.

    Args:
        query_features: ``(Q, D)`` L2-normalised.
        gallery_features: ``(G, D)`` L2-normalised.
        topk: how many to keep; at most G are returned.
        exclude: ``(Q,)`` the gallery index each query must not be matched with (the query's own
            file, when it lies in the gallery), or -1 for none; it is ranked last.
        exclude_mask: ``(Q, G)`` bool, True where a query must not be matched with a gallery image
            (e.g. one of the query's own camera); ranked last as well.

    Returns:
        ``indices`` int64 ``(Q, k)`` into the gallery, nearest first (ties keep gallery order),
        and ``distances`` float32 ``(Q, k)``, ``1 - cos``, with ``k = min(topk, G)``.
    """
    query_features = np.asarray(query_features, dtype=np.float32)
    gallery_features = np.asarray(gallery_features, dtype=np.float32)
    if query_features.ndim != 2 or gallery_features.ndim != 2 or query_features.shape[1] != gallery_features.shape[1]:
        raise ValueError(f"features must be (Q, D) and (G, D), got {query_features.shape} and {gallery_features.shape}")
    if topk < 1:
        raise ValueError(f"topk must be at least 1, got {topk}")
    num_kept = min(topk, gallery_features.shape[0])
    distances = 1.0 - query_features @ gallery_features.T
    if exclude is not None:
        for row, index in enumerate(exclude):
            if index >= 0:
                distances[row, index] = np.inf
    if exclude_mask is not None:
        distances[np.asarray(exclude_mask, dtype=bool)] = np.inf
    indices = np.argsort(distances, axis=1, kind="stable")[:, :num_kept]
    return indices.astype(np.int64), np.take_along_axis(distances, indices, axis=1)


def identities_from_names(
    paths: Sequence[str | os.PathLike], pattern: str | re.Pattern | None = IDENTITY_PATTERN
) -> list[int | None]:
    """The identity of each file from its name, or None where the name does not say.

    ``pattern`` is searched in the base name and must have a named group ``pid``; ``None`` or
    ``""`` reads no identities. Integer identities are read as numbers (``0007`` is ``7``, and a
    negative one is unknown); other text is numbered in sorted order.
    """
    compiled = compile_identity_pattern(pattern)
    if compiled is None:
        return [None] * len(paths)
    texts = []
    for path in paths:
        match = compiled.search(os.path.basename(os.fspath(path)))
        texts.append(None if match is None or match.group("pid") is None else match.group("pid"))
    non_numeric = sorted({text for text in texts if text is not None and re.fullmatch(r"[-+]?\d+", text) is None})
    text_numbers = {text: number for number, text in enumerate(non_numeric)}
    identities: list[int | None] = []
    for text in texts:
        if text is None:
            identities.append(None)
        elif text in text_numbers:
            identities.append(text_numbers[text])
        else:
            identities.append(int(text) if int(text) >= 0 else None)
    return identities


def compile_identity_pattern(pattern: str | re.Pattern | None) -> re.Pattern | None:
    """Compile a file-name pattern with a named group ``pid``; None or ``""`` gives None (no identities)."""
    if pattern is None or pattern == "":
        return None
    from hhcl.data.scan import compile_pattern, shown_pattern

    compiled = compile_pattern(pattern)
    if "pid" not in compiled.groupindex:
        raise HHCLError(f"--pattern {shown_pattern(compiled)} has no named group 'pid', e.g. '^(?P<pid>\\d+)_'")
    return compiled


def cameras_from_names(paths: Sequence[str | os.PathLike], pattern: str | re.Pattern) -> list[str | None]:
    """The camera of each file as the ``cam`` group of ``pattern`` reads it from its name, or None where it does not.

    A pattern without a ``cam`` group is an :class:`HHCLError`.
    """
    from hhcl.data.scan import compile_pattern, shown_pattern

    compiled = compile_pattern(pattern)
    if "cam" not in compiled.groupindex:
        raise HHCLError(f"--exclude-same-camera reads cameras from file names, but --pattern {shown_pattern(compiled)} "
                        f"has no (?P<cam>...) group; add one, e.g. {shown_pattern(CAMERA_PATTERN)}")
    cameras = []
    for path in paths:
        match = compiled.search(os.path.basename(os.fspath(path)))
        cameras.append(None if match is None else match.group("cam"))
    return cameras


def ranked_lists(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    indices: np.ndarray,
    distances: np.ndarray,
    pattern: str | re.Pattern | None = IDENTITY_PATTERN,
) -> list[RankedList]:
    """Turn :func:`rank_gallery`'s ``(Q, k)`` indices and distances into one :class:`RankedList` per query.

    Excluded gallery images (infinite distance) are left out, so lists may be shorter than k.
    """
    query_pids = identities_from_names(query_paths, pattern)
    gallery_pids = identities_from_names(gallery_paths, pattern)
    results = []
    for row, query_path in enumerate(query_paths):
        finite = np.isfinite(distances[row])
        order = [int(index) for index in indices[row][finite]]
        results.append(
            RankedList(
                query_path=str(query_path),
                gallery_paths=[str(gallery_paths[index]) for index in order],
                distances=[float(distance) for distance in distances[row][finite]],
                query_pid=query_pids[row],
                gallery_pids=[gallery_pids[index] for index in order],
            )
        )
    return results


def split_ranked_lists(
    query_features, gallery_features, query: Sequence[tuple], gallery: Sequence[tuple], num_queries: int,
    topk: int = 10,
) -> list[RankedList]:
    """Ranked lists of ``num_queries`` queries of a labelled split, spread evenly over it, as evaluation ranks them.

    ``query``/``gallery`` are ``(path, pid, camid)`` items with ``(Q, D)``/``(G, D)`` L2-normalised
    features in the same order. Gallery images of the query's identity seen by the query's camera
    are left out, as the evaluation protocol does.
    """
    query_features = np.asarray(query_features, dtype=np.float32)
    gallery_features = np.asarray(gallery_features, dtype=np.float32)
    chosen = np.linspace(0, len(query) - 1, num=min(num_queries, len(query))).round().astype(int)
    gallery_pids = np.array([pid for _, pid, _ in gallery])
    gallery_cams = np.array([cam for _, _, cam in gallery])
    results = []
    for index in dict.fromkeys(chosen.tolist()):
        path, pid, cam = query[index]
        distance = 1.0 - gallery_features @ query_features[index]
        distance[(gallery_pids == pid) & (gallery_cams == cam)] = np.inf
        order = [g for g in np.argsort(distance, kind="stable")[:topk] if np.isfinite(distance[g])]
        results.append(RankedList(query_path=str(path), gallery_paths=[str(gallery[g][0]) for g in order],
                                  distances=[float(distance[g]) for g in order], query_pid=int(pid),
                                  gallery_pids=[int(gallery_pids[g]) for g in order]))
    return results


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def gallery_digest(paths: Sequence[str | os.PathLike]) -> str:
    """A digest of the gallery's file list, sizes and modification times (sha256 hex).

    Adding, removing, renaming or rewriting an image changes it; reading every image is not
    needed for that.
    """
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    """What gallery features depend on: the model (file digest and settings) and the gallery files."""

    model: str
    gallery: str

    @classmethod
    def build(cls, model_settings: dict, weights: str | os.PathLike, gallery_paths: Sequence[str]) -> CacheKey:
        model = json.dumps({**model_settings, "weights_sha256": file_digest(weights)}, sort_keys=True)
        return cls(model=hashlib.sha256(model.encode()).hexdigest(), gallery=gallery_digest(gallery_paths))


def load_cached_features(cache_path: str | os.PathLike, key: CacheKey) -> tuple[list[str], np.ndarray] | None:
    """The cached gallery ``(paths, features (G, D) float32)`` when ``cache_path`` holds them for ``key``.

    Returns None for a missing, stale or unreadable cache; the last two are reported in the log.
    The stored paths are those that were embedded (broken gallery files are left out).
    """
    cache_path = Path(cache_path)
    if not cache_path.is_file():
        return None
    try:
        stored = read_npz(cache_path)
        version = int(stored["version"])
        model_key, gallery_key = str(stored["model_key"]), str(stored["gallery_key"])
        paths = [str(path) for path in stored["paths"]]
        features = stored["features"].astype(np.float32)
    except (HHCLError, KeyError, ValueError) as error:
        logger.warning("gallery cache %s is unreadable (%s); re-extracting", cache_path, error)
        return None
    if features.ndim != 2 or len(features) != len(paths):
        logger.warning("gallery cache %s is unreadable (%d paths for features of shape %s); re-extracting",
                       cache_path, len(paths), features.shape)
        return None
    if version != CACHE_FORMAT_VERSION:
        reason = "it was written by another hhcl version"
    elif model_key != key.model:
        reason = "the weights or model settings changed"
    elif gallery_key != key.gallery:
        reason = "the gallery changed"
    else:
        return paths, features
    logger.info("gallery cache %s is stale (%s); re-extracting", cache_path, reason)
    return None


def save_cached_features(cache_path: str | os.PathLike, key: CacheKey, paths: Sequence[str], features) -> Path:
    """Store gallery ``paths`` (G,) and ``features`` (G, D) in ``cache_path`` under ``key`` (``.npz``)."""
    arrays = {
        "version": np.int64(CACHE_FORMAT_VERSION),
        "model_key": np.str_(key.model),
        "gallery_key": np.str_(key.gallery),
        "paths": np.array([str(path) for path in paths], dtype=str),
        "features": np.asarray(features, dtype=np.float32),
    }
    return write_npz(cache_path, arrays, option="--cache")


def gallery_features(
    extractor, gallery_paths: Sequence[str], cache_path: str | os.PathLike | None = None
) -> tuple[list[str], np.ndarray]:
    """Embed the gallery, or read it from ``cache_path`` when the cache is current.

    Args:
        extractor: a :class:`hhcl.retrieval.FeatureExtractor`.
        gallery_paths: the gallery's image files.
        cache_path: an ``.npz`` cache, keyed by the weights file, the extractor's settings and the
            gallery's files (names, sizes, modification times); rewritten when stale.

    Returns:
        The paths embedded (broken files are skipped with a warning) and their ``(G, D)`` float32
        L2-normalised features.
    """
    key = None
    if cache_path is not None:
        key = CacheKey.build(extractor.settings(), extractor.weights, gallery_paths)
        cached = load_cached_features(cache_path, key)
        if cached is not None:
            logger.info("gallery features of %d images read from the cache %s", len(cached[0]), cache_path)
            return cached
    paths, features = extractor.extract_files(gallery_paths)
    features = features.numpy()
    if cache_path is not None:
        save_cached_features(cache_path, key, paths, features)
        logger.info("gallery features of %d images cached in %s", len(paths), cache_path)
    return paths, features


def search_gallery(
    extractor,
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    topk: int = 10,
    cache_path: str | os.PathLike | None = None,
    pattern: str | re.Pattern | None = IDENTITY_PATTERN,
    exclude_same_camera: bool = False,
) -> list[RankedList]:
    """Rank the gallery for each query image: one :class:`RankedList` per query, nearest first.

    A query that is itself a gallery file is not matched with itself. An unreadable query, or a
    gallery with no readable image, is an :class:`HHCLError` naming it. Identities, for colouring
    the matches, come from the file names through ``pattern`` (see :func:`identities_from_names`).
    ``exclude_same_camera`` leaves out the gallery images of the query's camera, which ``pattern``'s
    ``cam`` group reads from the names (a gallery image whose name gives none is kept).
    """
    if not gallery_paths:
        raise HHCLError("the gallery has no images")
    if exclude_same_camera:
        from hhcl.data.scan import shown_pattern

        query_cameras = cameras_from_names(query_paths, pattern)  # a pattern without cam fails before extraction
        for path, camera in zip(query_paths, query_cameras):
            if camera is None:
                raise HHCLError(f"--exclude-same-camera: the query {path} gives no camera by the pattern "
                                f"{shown_pattern(pattern)}; rename it or pass a --pattern that reads its camera")
    query_features = extractor(list(query_paths)).numpy()
    kept_paths, features = gallery_features(extractor, gallery_paths, cache_path)
    if not kept_paths:
        raise HHCLError(f"none of the {len(gallery_paths)} gallery images can be read; see the warnings above")
    position = {os.path.realpath(path): index for index, path in enumerate(kept_paths)}
    own_file = [position.get(os.path.realpath(path), -1) for path in query_paths]
    exclude_mask = None
    if exclude_same_camera:
        gallery_cameras = np.array(cameras_from_names(kept_paths, pattern), dtype=object)
        exclude_mask = np.stack([gallery_cameras == camera for camera in query_cameras])
    indices, distances = rank_gallery(query_features, features, topk, exclude=own_file, exclude_mask=exclude_mask)
    return ranked_lists(query_paths, kept_paths, indices, distances, pattern)
