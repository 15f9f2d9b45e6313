"""The ``synthetic`` dataset: procedural pedestrians (see :mod:`hhcl.data.pedestrians`), needing no
download, deterministic by seed, written to disk in the ``folder`` layout and read back with the
folder reader.

Training and test identities are disjoint; both are seen by the same cameras. Every identity
visits at least two cameras. For each test identity, one image of every camera that holds two or
more of its images goes to the query (as in Market-1501), the rest to the gallery, so every query
has a match in another camera.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hhcl.data.dataset import ReIDDataset
from hhcl.data.folder import read_folder
from hhcl.data.pedestrians import apply_camera, render_people, sample_cameras, sample_identities, sample_shots
from hhcl.errors import HHCLError
from hhcl.files import describe_bytes, fsync_folder, remove_stray_temporaries, temporary_prefix
from hhcl.seeds import derived_seed

logger = logging.getLogger("hhcl.data")

# Bump when the pictures change for the same parameters, so old caches are not mistaken for new.
GENERATOR_VERSION = 2
MANIFEST = "synthetic.json"
FILE_PATTERN = r"^(?P<pid>\d+)_c(?P<cam>\d+)_\d+\.jpg$"
TRAIN, QUERY, GALLERY = 0, 1, 2
SPLIT_FOLDERS = ("train", "query", "gallery")
RENDER_CHUNK = 256  # images rendered together; fixed, because the noise draws depend on it


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate. ``num_identities`` are training identities; the test split has
    ``num_test_identities`` others (default: as many). ``camera_strength`` in [0, 1] scales every
    camera nuisance (0 makes all cameras alike)."""

    num_identities: int = 100
    num_test_identities: int | None = None
    num_cameras: int = 4
    images_per_identity: int = 12
    height: int = 128
    width: int = 64
    seed: int = 0
    camera_strength: float = 1.0

    def __post_init__(self) -> None:
        checks = [
            (self.num_identities >= 1, "num_identities must be at least 1"),
            (self.num_test_identities is None or self.num_test_identities >= 1, "num_test_identities must be at least 1"),
            (self.num_cameras >= 2, "num_cameras must be at least 2 (matching is across cameras)"),
            (self.images_per_identity >= 2, "images_per_identity must be at least 2"),
            (self.height >= 32 and self.width >= 16, "height must be at least 32 and width at least 16"),
            (0.0 <= self.camera_strength <= 1.0, "camera_strength must lie in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise HHCLError(f"synthetic dataset: {message}; got {self.describe()}")

    @property
    def test_identities(self) -> int:
        return self.num_identities if self.num_test_identities is None else self.num_test_identities

    def describe(self) -> str:
        return ", ".join(f"{key}={value}" for key, value in asdict(self).items())

    def manifest(self) -> dict:
        return {"generator_version": GENERATOR_VERSION, **asdict(self)}


@dataclass(frozen=True)
class SyntheticImages:
    """A rendered set: ``images`` uint8 ``(N, 3, H, W)``; ``pids``, ``cams``, ``splits`` int64 ``(N,)``.

    Pids are global (training identities first), cameras 0-based, splits 0 train / 1 query /
    2 gallery.
    """

    images: torch.Tensor
    pids: torch.Tensor
    cams: torch.Tensor
    splits: torch.Tensor


def random_stream(seed: int, purpose: str) -> torch.Generator:
    """A generator for one purpose, seeded from ``(seed, purpose)``."""
    return torch.Generator().manual_seed(derived_seed(seed, *purpose.encode(), bits=64))


def assign_images(config: SyntheticConfig, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which identity, camera and split each image has: three int64 ``(N,)`` tensors,
    ``N = (train + test identities) * images_per_identity``, grouped by identity."""
    num_ids = config.num_identities + config.test_identities
    per_id, num_cameras = config.images_per_identity, config.num_cameras
    # Each identity walks past 2..C cameras (no more cameras than it has images).
    visited = torch.randint(2, min(num_cameras, per_id) + 1, (num_ids, 1), generator=generator)
    camera_order = torch.argsort(torch.rand((num_ids, num_cameras), generator=generator), dim=1)
    slot = torch.arange(per_id)[None, :].expand(num_ids, per_id)
    # The first `visited` images cover every visited camera once; the rest fall at random among them.
    random_slot = (torch.rand((num_ids, per_id), generator=generator) * visited).long()
    slot = torch.where(slot < visited, slot, random_slot)
    cams = torch.gather(camera_order, 1, slot).reshape(-1)
    pids = torch.arange(num_ids).repeat_interleave(per_id)

    splits = torch.full_like(pids, GALLERY)
    splits[pids < config.num_identities] = TRAIN
    query_rows = _pick_queries(pids.numpy(), cams.numpy(), splits.numpy(), generator)
    splits[torch.from_numpy(query_rows)] = QUERY
    return pids, cams, splits


def _pick_queries(pids: np.ndarray, cams: np.ndarray, splits: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Rows that become queries: one random image of each (test identity, camera) holding two or
    more images; an identity whose cameras each hold one image gives its first image."""
    test = np.flatnonzero(splits == GALLERY)
    keys = torch.rand(len(test), generator=generator).numpy()
    num_cameras = int(cams.max()) + 1
    group = pids[test] * num_cameras + cams[test]
    order = np.lexsort((keys, group))
    sorted_groups = group[order]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    chosen = test[order[starts[sizes >= 2]]]
    identities_with_query = np.unique(pids[chosen])
    first_rows = test[np.r_[True, pids[test][1:] != pids[test][:-1]]]
    fallback = first_rows[~np.isin(pids[first_rows], identities_with_query)]
    return np.sort(np.concatenate([chosen, fallback]))


def render_chunks(config: SyntheticConfig) -> tuple[SyntheticImages, Iterator[tuple[slice, torch.Tensor]]]:
    """The set's labels (``images`` left empty) and an iterator of ``(rows, images uint8 (b, 3, H, W))``
    rendering it ``RENDER_CHUNK`` images at a time, so a large set never sits in memory whole."""
    num_ids = config.num_identities + config.test_identities
    # Separate random streams: the cameras of a seed stay the same whatever the set's size.
    cameras = sample_cameras(config.num_cameras, config.camera_strength, random_stream(config.seed, "cameras"))
    identities = sample_identities(num_ids, random_stream(config.seed, "identities"))
    pids, cams, splits = assign_images(config, random_stream(config.seed, "assignment"))
    shots = sample_shots(cameras, cams, random_stream(config.seed, "shots"))
    generator = random_stream(config.seed, "pixels")
    labels = SyntheticImages(images=torch.empty((0, 3, config.height, config.width), dtype=torch.uint8),
                             pids=pids, cams=cams, splits=splits)

    def chunks() -> Iterator[tuple[slice, torch.Tensor]]:
        for start in range(0, len(pids), RENDER_CHUNK):
            rows = slice(start, min(start + RENDER_CHUNK, len(pids)))
            chunk_cameras = cameras.select(cams[rows])
            people = render_people(identities.select(pids[rows]), chunk_cameras, shots.select(torch.arange(len(pids))[rows]),
                                   config.height, config.width, generator)
            yield rows, apply_camera(people, chunk_cameras, generator)

    return labels, chunks()


def render_synthetic(config: SyntheticConfig) -> SyntheticImages:
    """Render the whole set in memory (see :class:`SyntheticImages`)."""
    labels, chunks = render_chunks(config)
    images = torch.empty((len(labels.pids), 3, config.height, config.width), dtype=torch.uint8)
    for rows, chunk in chunks:
        images[rows] = chunk
    return SyntheticImages(images=images, pids=labels.pids, cams=labels.cams, splits=labels.splits)


def file_names(labels: SyntheticImages) -> list[str]:
    """``<split>/<pid:04d>_c<cam>_<n:04d>.jpg`` per image, 1-based pid and camera as in Market-1501."""
    names = []
    count_per_pid: dict[int, int] = {}
    for pid, cam, split in zip(labels.pids.tolist(), labels.cams.tolist(), labels.splits.tolist()):
        number = count_per_pid.get(pid, 0) + 1
        count_per_pid[pid] = number
        names.append(f"{SPLIT_FOLDERS[split]}/{pid + 1:04d}_c{cam + 1}_{number:04d}.jpg")
    return names


def write_synthetic(root: str | os.PathLike, config: SyntheticConfig, quality: int = 92) -> Path:
    """Render the set and write it under ``root`` in the folder layout (``train/``, ``query/``,
    ``gallery/`` and ``synthetic.json``). Writes into a temporary sibling folder and renames it
    at the end, so an interrupted run leaves nothing that looks complete."""
    root = Path(root).expanduser()
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=temporary_prefix(root), dir=root.parent))
    try:
        for folder in SPLIT_FOLDERS:
            (staging / folder).mkdir()
        labels, chunks = render_chunks(config)
        names = file_names(labels)
        for rows, images in chunks:
            for array, name in zip(images.permute(0, 2, 3, 1).numpy(), names[rows]):
                Image.fromarray(array).save(staging / name, quality=quality)
        (staging / MANIFEST).write_text(json.dumps(config.manifest(), indent=2) + "\n")
        if root.is_dir() and not any(root.iterdir()):
            root.rmdir()
        os.replace(staging, root)
        fsync_folder(root.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def default_root(config: SyntheticConfig) -> Path:
    """Where a synthetic set goes when no root is given: a per-parameters folder in the cache."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hhcl"
    key = "-".join(f"{value}" for value in config.manifest().values())
    return cache / f"synthetic-{key}"


def ensure_synthetic(root: str | os.PathLike | None, config: SyntheticConfig) -> Path:
    """Generate the set into ``root`` unless the same set is already there; return the folder.

    A ``root`` holding anything else (another set, other files) is left untouched: that is an
    :class:`HHCLError`.
    """
    root = default_root(config) if root is None else Path(root).expanduser()
    manifest_path = root / MANIFEST
    if manifest_path.is_file():
        try:
            existing = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            existing = None
        if existing == config.manifest():
            return root
        raise HHCLError(
            f"{root} holds a synthetic set made with other parameters ({manifest_path}); "
            f"pass another --root, or delete that folder to regenerate it with {config.describe()}"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise HHCLError(
            f"{root} exists and is not a synthetic set (no {MANIFEST}); pass an empty or new folder as --root"
        )
    count = (config.num_identities + config.test_identities) * config.images_per_identity
    removed, freed = remove_stray_temporaries(root.parent)
    if removed:
        logger.info("removed %d unfinished temporaries of killed runs from %s (%s freed)", removed, root.parent,
                    describe_bytes(freed))
    logger.info("generating the synthetic set (%d images, %s) into %s", count, config.describe(), root)
    return write_synthetic(root, config)


def load_synthetic(
    root: str | os.PathLike | None = None,
    *,
    num_identities: int = 100,
    num_test_identities: int | None = None,
    num_cameras: int = 4,
    images_per_identity: int = 12,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
    camera_strength: float = 1.0,
    check_images: bool = False,
    strict: bool = False,
) -> ReIDDataset:
    """Generate the synthetic set into ``root`` when absent (or a cache folder when ``root`` is
    None), then read it with the folder reader."""
    config = SyntheticConfig(
        num_identities=num_identities,
        num_test_identities=num_test_identities,
        num_cameras=num_cameras,
        images_per_identity=images_per_identity,
        height=height,
        width=width,
        seed=seed,
        camera_strength=camera_strength,
    )
    folder = ensure_synthetic(root, config)
    dataset = read_folder(folder, pattern=FILE_PATTERN, check_images=check_images, strict=strict)
    dataset.name = "synthetic"
    return dataset
