"""Gallery search: rank a gallery for each query, identities from file names, cached gallery features."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hhcl.errors import HHCLError

logger = logging.getLogger("hhcl.retrieval")

# Most re-ID benchmarks (Market-1501, DukeMTMC, MSMT17, PRID, CUHK03 exports) start a file name
# with the identity and an underscore; -1 marks a distractor, which counts as unknown.
IDENTITY_PATTERN = r"^(?P<pid>-?\d+)_"
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


def rank_gallery(query_features, gallery_features, topk: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``topk`` nearest gallery features of each query, by cosine distance.

    Args:
        query_features: ``(Q, D)`` L2-normalised.
        gallery_features: ``(G, D)`` L2-normalised.
        topk: how many to keep; at most G are returned.

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
    indices = np.argsort(distances, axis=1, kind="stable")[:, :num_kept]
    return indices.astype(np.int64), np.take_along_axis(distances, indices, axis=1)


def identities_from_names(paths: Sequence[str | os.PathLike], pattern: str | re.Pattern | None = IDENTITY_PATTERN) -> list[int | None]:
    """The identity of each file from its name, or None where the name does not say.

    ``pattern`` is searched in the base name and must have a named group ``pid``; ``None`` or
    ``""`` reads no identities. Integer identities are read as numbers (``0007`` is ``7``, and a
    negative one is unknown); other text is numbered in sorted order.
    """
    if pattern is None or pattern == "":
        return [None] * len(paths)
    from hhcl.data.scan import compile_pattern

    compiled = compile_pattern(pattern)
    if "pid" not in compiled.groupindex:
        raise HHCLError(f"--pattern {compiled.pattern!r} has no named group 'pid', e.g. '^(?P<pid>\\d+)_'")
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


def ranked_lists(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    indices: np.ndarray,
    distances: np.ndarray,
    pattern: str | re.Pattern | None = IDENTITY_PATTERN,
) -> list[RankedList]:
    """Turn :func:`rank_gallery`'s ``(Q, k)`` indices and distances into one :class:`RankedList` per query."""
    query_pids = identities_from_names(query_paths, pattern)
    gallery_pids = identities_from_names(gallery_paths, pattern)
    results = []
    for row, query_path in enumerate(query_paths):
        order = [int(index) for index in indices[row]]
        results.append(
            RankedList(
                query_path=str(query_path),
                gallery_paths=[str(gallery_paths[index]) for index in order],
                distances=[float(distance) for distance in distances[row]],
                query_pid=query_pids[row],
                gallery_pids=[gallery_pids[index] for index in order],
            )
        )
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


def load_cached_features(cache_path: str | os.PathLike, key: CacheKey, gallery_paths: Sequence[str]) -> np.ndarray | None:
    """The cached ``(G, D)`` gallery features when ``cache_path`` holds them for ``key``, else None.

    A stale or unreadable cache is reported in the log and ignored: it will be rewritten.
    """
    cache_path = Path(cache_path)
    if not cache_path.is_file():
        return None
    try:
        with np.load(cache_path, allow_pickle=False) as stored:
            version = int(stored["version"])
            model_key, gallery_key = str(stored["model_key"]), str(stored["gallery_key"])
            paths = [str(path) for path in stored["paths"]]
            features = stored["features"].astype(np.float32)
    except (OSError, KeyError, ValueError) as error:
        logger.warning("gallery cache %s is unreadable (%s); re-extracting", cache_path, error)
        return None
    if version != CACHE_FORMAT_VERSION:
        reason = "it was written by another hhcl version"
    elif model_key != key.model:
        reason = "the weights or model settings changed"
    elif gallery_key != key.gallery or paths != [str(path) for path in gallery_paths]:
        reason = "the gallery changed"
    else:
        return features
    logger.info("gallery cache %s is stale (%s); re-extracting", cache_path, reason)
    return None


def save_cached_features(cache_path: str | os.PathLike, key: CacheKey, gallery_paths: Sequence[str], features) -> Path:
    """Write ``(G, D)`` gallery features to ``cache_path`` (an ``.npz``, replaced atomically)."""
    from hhcl.retrieval.outputs import ensure_writable_folder

    cache_path = Path(cache_path)
    folder = ensure_writable_folder(cache_path.parent)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{cache_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(
                stream,
                version=np.int64(CACHE_FORMAT_VERSION),
                model_key=np.str_(key.model),
                gallery_key=np.str_(key.gallery),
                paths=np.array([str(path) for path in gallery_paths], dtype=str),
                features=np.asarray(features, dtype=np.float32),
            )
        os.replace(temporary, cache_path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        raise HHCLError(f"cannot write the gallery cache {cache_path}: {error.strerror or error}") from None
    return cache_path
