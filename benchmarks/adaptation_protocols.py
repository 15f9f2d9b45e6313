"""The adaptation benchmark's protocols: which real images train (unlabeled) and which test.

    protocol = load_protocol(PROTOCOLS["cuhk01"], data_root)

Each protocol pools the train halves of some real folders of ``../shared/data`` into one unlabeled
training set (each folder a source of its own, its cameras distinct from every other folder's) and
keeps their test halves as separate test sets:

- ``folders``: the five PETA folders, mostly one camera each and many images a person (the shape
  the ``adapt`` preset was first measured on). prid2011's identities 1-200 are split in half; its
  camera-``a``-only identities join the train half and its camera-``b``-only ones are gallery
  distractors (prid2011 numbers its two cameras' unshared people independently). Every other
  folder: one random query per test identity with two or more images, no camera filtering.
- ``cuhk01``: CUHK01's conventional split, identities 1-485 the unlabeled pool (two cameras, two
  images each), 486-971 the test, camera ``a`` queries against camera ``b``.
- ``pairs``: two images a person. One image per camera per identity of the ``cuhk01`` pool, plus
  prid2011's train half; tested on both test halves.
- ``many-cameras``: the ``pairs`` pool, the train halves of caviar4reid, ilids and 3dpes, and one
  towncentre image as a camera of its own (a one-image camera): eight cameras; tested on the five
  test halves.
- ``duke``: DukeMTMC-reID's own train/query/gallery split, when the data is there
  (``--duke-root`` or ``../shared/data/dukemtmcreid``).

Splits are seeded (seed 0) and deterministic; nothing here looks at features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

Item = tuple[str, int, int]


@dataclass(frozen=True)
class FolderSpec:
    """One real folder: its file-name pattern and, for prid2011, its two-camera protocol."""

    name: str
    pattern: str
    shared_identities: int | None = None  # identities 1..n seen by both cameras; None = no camera protocol
    query_camera: str | None = None
    gallery_camera: str | None = None
    train_identities: int | None = None  # cuhk01: identities 1..n are the pool, the others the test


FOLDERS = (
    FolderSpec("prid2011", r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$", shared_identities=200, query_camera="a",
               gallery_camera="b"),
    FolderSpec("caviar4reid", r"^(?P<pid>\d+)_\d+\.jpg$"),
    FolderSpec("ilids", r"^(?P<pid>\d+)_\d+\.jpg$"),
    # six 3dpes files carry a "_B" (166_B_1280_FRAME_105_RGB.bmp), which the README's pattern lacks
    FolderSpec("3dpes", r"^(?P<pid>\d+)_(?:B_)?\d+_FRAME_\d+_RGB\.bmp$"),
    FolderSpec("towncentre", r"^(?P<pid>\d+)_\d+\.jpg$"),
)
CUHK01 = FolderSpec("cuhk01", r"^(?P<pid>\d+)_(?P<cam>[ab])_\d\.png$", query_camera="a", gallery_camera="b",
                    train_identities=485)
SPECS = {spec.name: spec for spec in (*FOLDERS, CUHK01)}
POOL_SHAPES = ("all", "one_per_camera", "one_image")


@dataclass(frozen=True)
class Part:
    """One folder's share of a protocol: how much of its train half pools, and whether its test half tests."""

    folder: str
    pool: str = "all"  # "all", "one_per_camera" (one image per identity and camera), "one_image" (the pool's first)
    test: bool = True


PROTOCOLS: dict[str, tuple[Part, ...]] = {
    "folders": tuple(Part(spec.name) for spec in FOLDERS),
    "cuhk01": (Part("cuhk01"),),
    "pairs": (Part("cuhk01", "one_per_camera"), Part("prid2011")),
    "many-cameras": (Part("cuhk01", "one_per_camera"), Part("prid2011"), Part("caviar4reid"), Part("ilids"),
                     Part("3dpes"), Part("towncentre", "one_image", test=False)),
}
DUKE = "duke"
PROTOCOL_NAMES = (*PROTOCOLS, DUKE)


class ProtocolUnavailable(Exception):
    """The data a protocol needs is not on this machine (the benchmark skips it and says why)."""


@dataclass(frozen=True)
class Image:
    """A file with its folder-local identity key (``"17"``; ``"a201"`` for an unshared prid2011 id) and camera."""

    path: str
    identity: str
    camera: str


@dataclass
class TestSet:
    name: str
    query: list[Item]
    gallery: list[Item]
    cross_camera: bool


@dataclass
class Protocol:
    """The pooled training set (true ids kept for the oracle and the diagnosis) and the test sets."""

    train: list[Item]  # (path, global identity, global camera)
    train_folders: list[str]
    test_sets: list[TestSet] = field(default_factory=list)
    camera_sources: dict[int, int] = field(default_factory=dict)  # global camera -> its folder's index
    name: str = "folders"

    def unlabeled_train(self) -> list[Item]:
        return [(path, -1, camera) for path, _, camera in self.train]

    def train_identities(self) -> np.ndarray:
        return np.array([pid for _, pid, _ in self.train], dtype=np.int64)


# -- the split protocol (pure) -----------------------------------------------------------------------


def split_identities(identities: Sequence, seed: int = 0) -> tuple[list, list]:
    """``(train, test)``: the distinct identities, sorted then shuffled with ``seed``; test takes the first ``n // 2``."""
    distinct = sorted(set(identities))
    order = np.random.default_rng(seed).permutation(len(distinct))
    shuffled = [distinct[i] for i in order]
    half = len(distinct) // 2
    return sorted(shuffled[half:]), sorted(shuffled[:half])


def camera_protocol_split(images: Sequence[Image], spec: FolderSpec, seed: int = 0
                          ) -> tuple[list[Image], list[Image], list[Image]]:
    """``(train, query, gallery)`` of a two-camera folder (prid2011).

    Identities ``1..shared_identities`` are split; an unshared identity of the query camera
    trains, one of the gallery camera is a distractor. Query: the query camera's images of the
    test identities; gallery: the gallery camera's images of the test identities and distractors.
    """
    shared = {str(number) for number in range(1, spec.shared_identities + 1)}
    train_ids, test_ids = split_identities([image.identity for image in images if image.identity in shared], seed)
    train_ids, test_ids = set(train_ids), set(test_ids)
    train, query, gallery = [], [], []
    for image in images:
        if image.identity in train_ids:
            train.append(image)
        elif image.identity in test_ids:
            (query if image.camera == spec.query_camera else gallery).append(image)
        elif image.camera == spec.query_camera:
            train.append(image)
        else:
            gallery.append(image)
    return train, query, gallery


def single_query_split(images: Sequence[Image], seed: int = 0) -> tuple[list[Image], list[Image], list[Image]]:
    """``(train, query, gallery)`` of a folder without a camera protocol.

    Each test identity with two or more images gives one random query (a second stream of
    ``seed``); all its other images, and single-image test identities, are the gallery.
    """
    train_ids, test_ids = split_identities([image.identity for image in images], seed)
    train_ids = set(train_ids)
    train = [image for image in images if image.identity in train_ids]
    by_identity: dict[str, list[Image]] = {identity: [] for identity in test_ids}
    for image in images:
        if image.identity in by_identity:
            by_identity[image.identity].append(image)
    rng = np.random.default_rng([seed, 1])
    query, gallery = [], []
    for identity in test_ids:
        members = sorted(by_identity[identity], key=lambda image: image.path)
        chosen = int(rng.integers(len(members))) if len(members) >= 2 else -1
        for index, image in enumerate(members):
            (query if index == chosen else gallery).append(image)
    return train, query, gallery


def fixed_camera_split(images: Sequence[Image], spec: FolderSpec) -> tuple[list[Image], list[Image], list[Image]]:
    """``(train, query, gallery)`` of a folder with a conventional split (CUHK01): identities
    ``1..train_identities`` train; the others test, the query camera's images against the gallery camera's."""
    train, query, gallery = [], [], []
    for image in images:
        if int(image.identity) <= spec.train_identities:
            train.append(image)
        elif image.camera == spec.query_camera:
            query.append(image)
        elif image.camera == spec.gallery_camera:
            gallery.append(image)
    return train, query, gallery


def split_folder(images: Sequence[Image], spec: FolderSpec, seed: int = 0
                 ) -> tuple[list[Image], list[Image], list[Image]]:
    if spec.train_identities is not None:
        return fixed_camera_split(images, spec)
    if spec.shared_identities is not None:
        return camera_protocol_split(images, spec, seed)
    return single_query_split(images, seed)


def pool_shape(images: Sequence[Image], shape: str, seed: int = 0) -> list[Image]:
    """The train half reshaped: ``all`` of it, one random image per (identity, camera), or one image."""
    if shape not in POOL_SHAPES:
        raise ValueError(f"pool shape {shape!r} is not one of {', '.join(POOL_SHAPES)}")
    ordered = sorted(images, key=lambda image: image.path)
    if shape == "all" or not ordered:
        return ordered
    if shape == "one_image":
        return ordered[:1]
    groups: dict[tuple[str, str], list[Image]] = {}
    for image in ordered:
        groups.setdefault((image.identity, image.camera), []).append(image)
    rng = np.random.default_rng([seed, 2])
    return sorted((members[int(rng.integers(len(members)))] for members in groups.values()),
                  key=lambda image: image.path)


def identity_key(pid: str, camera: str, spec: FolderSpec) -> str:
    """Folder-local identity: prid2011's unshared ids are per camera (``a201`` is not ``b201``)."""
    number = int(pid)
    if spec.shared_identities is not None and number > spec.shared_identities:
        return f"{camera}{number}"
    return str(number)


def read_folder_images(folder: Path, spec: FolderSpec) -> list[Image]:
    from hhcl.data.scan import compile_pattern, list_image_files, parse_names

    parsed = parse_names(list_image_files(folder), compile_pattern(spec.pattern))
    return [Image(name.path, identity_key(name.pid, name.cam or "0", spec), name.cam or "0") for name in parsed]


def build_protocol(images_by_folder: dict[str, list[Image]], specs: Sequence[FolderSpec] = FOLDERS,
                   seed: int = 0, parts: Sequence[Part] | None = None, name: str = "folders") -> Protocol:
    """Split every folder, pool the train halves (global ids and cameras) and build the test sets.

    ``parts`` (default: every spec, whole pools, all tested) says how each folder takes part; a
    folder's images are those of ``images_by_folder`` under its name.
    """
    by_name = {spec.name: spec for spec in specs}
    parts = list(parts) if parts is not None else [Part(spec.name) for spec in specs]
    train: list[Item] = []
    train_folders: list[str] = []
    test_sets = []
    identities: dict[tuple[str, str], int] = {}
    cameras: dict[tuple[str, str], int] = {}
    camera_sources: dict[int, int] = {}
    for source, part in enumerate(parts):
        spec = by_name[part.folder]
        train_half, query, gallery = split_folder(images_by_folder[spec.name], spec, seed)
        for image in pool_shape(train_half, part.pool, seed):
            pid = identities.setdefault((spec.name, image.identity), len(identities))
            camera = cameras.setdefault((f"{source}:{spec.name}", image.camera), len(cameras))
            camera_sources[camera] = source
            train.append((image.path, pid, camera))
            train_folders.append(spec.name)
        if not part.test:
            continue
        local_ids = {identity: index for index, identity in
                     enumerate(sorted({image.identity for image in query + gallery}))}
        local_cams = {camera: index for index, camera in enumerate(sorted({image.camera for image in query + gallery}))}

        def items(images: list[Image]) -> list[Item]:
            return [(image.path, local_ids[image.identity], local_cams[image.camera]) for image in images]

        test_sets.append(TestSet(spec.name, items(query), items(gallery),
                                 cross_camera=spec.shared_identities is not None or spec.train_identities is not None))
    return Protocol(train, train_folders, test_sets, camera_sources, name=name)


def load_protocol(data_root: Path, seed: int = 0, name: str = "folders", duke_root: Path | None = None) -> Protocol:
    """The named protocol (:data:`PROTOCOL_NAMES`) on the folders under ``data_root``.

    Raises :class:`ProtocolUnavailable` when ``duke`` has no data here, and an ``HHCLError`` when a
    folder of ``../shared/data`` is missing.
    """
    from hhcl.errors import HHCLError

    if name == DUKE:
        return load_duke_protocol(duke_root or data_root / "dukemtmcreid")
    if name not in PROTOCOLS:
        raise HHCLError(f"unknown protocol {name!r}: choose one of {', '.join(PROTOCOL_NAMES)}")
    parts = PROTOCOLS[name]
    folders = sorted({part.folder for part in parts})
    missing = [folder for folder in folders if not (data_root / folder).is_dir()]
    if missing:
        raise HHCLError(f"{data_root} lacks the folders {', '.join(missing)}; pass --data-root DIR "
                        "(the shared real re-ID folders)")
    images = {folder: read_folder_images(data_root / folder, SPECS[folder]) for folder in folders}
    return build_protocol(images, [SPECS[folder] for folder in folders], seed=seed, parts=parts, name=name)


def load_duke_protocol(root: Path) -> Protocol:
    """DukeMTMC-reID's train split as the unlabeled pool (one source, 8 cameras), its query/gallery as the test."""
    from hhcl.data import load_dataset
    from hhcl.errors import HHCLError

    if not Path(root).is_dir():
        raise ProtocolUnavailable(f"no DukeMTMC-reID at {root}: pass --duke-root DIR (see the Duke issue for where "
                                  "the data comes from)")
    try:
        dataset = load_dataset("dukemtmcreid", str(root))
    except HHCLError as error:
        raise ProtocolUnavailable(str(error)) from None
    train = list(dataset.train)
    return Protocol(train, ["dukemtmcreid"] * len(train),
                    [TestSet("dukemtmcreid", list(dataset.query), list(dataset.gallery), cross_camera=True)],
                    {camera: 0 for camera in {camera for _, _, camera in train}}, name=DUKE)
