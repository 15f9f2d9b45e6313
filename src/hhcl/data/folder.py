"""The ``folder`` reader: the user's own images, identity and camera parsed from file names.

Three shapes are accepted:

* ``root/train/``, ``root/query/`` and ``root/gallery/`` (``train/`` alone is fine for an unlabeled
  training set; ``query/`` and ``gallery/`` come together);
* a single flat folder of images, taken as an (unlabeled) training set;
* a single flat folder split by camera for evaluation: ``query_camera="a", gallery_camera="b"``
  puts the images of camera ``a`` whose identity camera ``b`` also saw in the query, and every
  image of camera ``b`` in the gallery (the single-shot PRID2011 protocol).

Several roots, ``root=[dir1, dir2]`` with ``pattern=[p1, p2]`` (or one pattern for all), are
pooled into one training set: each root's identities and cameras are offset past the previous
ones, so identity 1 of ``dir1`` and identity 1 of ``dir2`` stay apart.

The pattern is a regular expression searched in each file name, with the named groups ``pid``
and ``cam``; the default is the Market-1501 style ``0002_c1s1_000451_03.jpg``. A training split
may lack ``pid`` (every image gets ``pid = -1``, unknown) or ``cam`` (every image gets
``camid = 0``); query and gallery need both. Numeric groups are read as numbers (``c01`` and
``c1`` are the same camera), others as labels (cameras ``a``, ``b`` become 0, 1).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from hhcl.data.dataset import SPLITS, Item, ReIDDataset
from hhcl.data.scan import ParsedName, compile_pattern, label_index, list_image_files, parse_names, shown_pattern
from hhcl.errors import HHCLError

DEFAULT_PATTERN = r"^(?P<pid>-?\d+)_c(?P<cam>\d+)"
FOLDER_LAYOUT = (
    "a folder of images named like 0002_c1_0001.jpg (or as --pattern says), "
    "or one with train/, query/ and gallery/ sub-folders of such images"
)

PatternArg = str | re.Pattern


def read_folder(
    root: str | os.PathLike | Sequence[str | os.PathLike],
    *,
    pattern: PatternArg | Sequence[PatternArg] = DEFAULT_PATTERN,
    query_camera: str | int | None = None,
    gallery_camera: str | int | None = None,
    check_images: bool = False,
    strict: bool = False,
) -> ReIDDataset:
    """Read the user's folder(s); see the module docstring for the accepted layouts."""
    scan = {"check_images": check_images, "strict": strict}
    if isinstance(root, (list, tuple)):
        if query_camera is not None or gallery_camera is not None:
            raise HHCLError("query_camera/gallery_camera split one folder; pass a single root with them")
        return _read_pooled(list(root), pattern, scan)
    if not isinstance(pattern, (str, re.Pattern)):
        patterns = list(pattern)
        if len(patterns) != 1:
            raise HHCLError(f"{len(patterns)} patterns given for one folder {root}; pass one pattern")
        pattern = patterns[0]
    compiled = compile_pattern(pattern)
    root_path = _require_folder_root(root)
    if (query_camera is None) != (gallery_camera is None):
        raise HHCLError("pass query_camera and gallery_camera together (e.g. query_camera=a gallery_camera=b)")
    if query_camera is not None:
        return _read_camera_split(root_path, compiled, str(query_camera), str(gallery_camera), scan)
    present = [split for split in SPLITS if (root_path / split).is_dir()]
    if not present:
        return _read_flat(root_path, compiled, scan)
    if ("query" in present) != ("gallery" in present):
        missing = "gallery" if "query" in present else "query"
        raise HHCLError(f"split folder {root_path / missing}/ is missing; expected {FOLDER_LAYOUT}")
    return _read_splits(root_path, present, compiled, scan)


def _require_folder_root(root) -> Path:
    if root is None:
        raise HHCLError(f"dataset folder needs a root; pass --root DIR ({FOLDER_LAYOUT})")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "not found"
        raise HHCLError(f"dataset root {path} is {what}; expected {FOLDER_LAYOUT}")
    return path


def _scan(folder: Path, pattern: re.Pattern, scan: dict) -> list[ParsedName]:
    files = list_image_files(folder, **scan)
    if not files:
        nested = any(entry.is_dir() for entry in folder.iterdir())
        hint = " (sub-folders are not searched: point --root at the folder that holds the images)" if nested else ""
        raise HHCLError(
            f"no images in {folder}/; expected .jpg, .jpeg, .png or .bmp files matching {shown_pattern(pattern)}{hint}"
        )
    return parse_names(files, pattern)


def _read_flat(root: Path, pattern: re.Pattern, scan: dict) -> ReIDDataset:
    names = _scan(root, pattern, scan)
    cameras = label_index(name.cam for name in names if name.cam is not None)
    return ReIDDataset("folder", train=_train_items(names, cameras), root=str(root))


def _read_splits(root: Path, present: list[str], pattern: re.Pattern, scan: dict) -> ReIDDataset:
    parsed = {split: _scan(root / split, pattern, scan) for split in present}
    cameras = label_index(name.cam for names in parsed.values() for name in names if name.cam is not None)
    dataset = ReIDDataset("folder", root=str(root))
    if "train" in parsed:
        dataset.train = _train_items(parsed["train"], cameras)
    if "query" in parsed:
        evaluation = parsed["query"] + parsed["gallery"]
        pids = _evaluation_pids(evaluation, pattern)
        dataset.query = _evaluation_items(parsed["query"], pids, cameras)
        dataset.gallery = _evaluation_items(parsed["gallery"], pids, cameras)
        _require_not_empty(dataset.query, root / "query", pattern)
        _require_not_empty(dataset.gallery, root / "gallery", pattern)
    return dataset


def _read_camera_split(
    root: Path, pattern: re.Pattern, query_camera: str, gallery_camera: str, scan: dict
) -> ReIDDataset:
    names = _scan(root, pattern, scan)
    pids = _evaluation_pids(names, pattern)
    cameras = label_index(name.cam for name in names)
    query_index = _camera_index(query_camera, cameras, root)
    gallery_index = _camera_index(gallery_camera, cameras, root)
    query_names = [name for name in names if cameras[name.cam] == query_index]
    gallery_names = [name for name in names if cameras[name.cam] == gallery_index]
    gallery_pids = {pids[name.pid] for name in gallery_names}
    query_names = [name for name in query_names if pids[name.pid] in gallery_pids]
    dataset = ReIDDataset(
        "folder",
        query=_evaluation_items(query_names, pids, cameras),
        gallery=_evaluation_items(gallery_names, pids, cameras),
        root=str(root),
    )
    if not dataset.query:
        raise HHCLError(
            f"no identity of camera {query_camera} in {root} is also seen by camera {gallery_camera}; "
            "check query_camera/gallery_camera and the pattern"
        )
    return dataset


def _camera_index(label: str, cameras: dict[str, int], root: Path) -> int:
    """The 0-based index of camera ``label`` (``1`` finds ``01`` when cameras are numbers)."""
    if label in cameras:
        return cameras[label]
    for text, index in cameras.items():
        if label.lstrip("-+").isdigit() and text.lstrip("-+").isdigit() and int(text) == int(label):
            return index
    raise HHCLError(
        f"camera {label!r} does not occur in {root} (its cameras are {sorted(cameras)}); "
        "pass one of those as query_camera/gallery_camera"
    )


def _train_items(names: list[ParsedName], cameras: dict[str, int]) -> list[Item]:
    """Training items: identities numbered 0..N-1 in pid order (-1 when the pattern gives none)."""
    labels = label_index(name.pid for name in names if name.pid is not None and not _is_unknown(name.pid))
    return [
        (
            name.path,
            -1 if name.pid is None or _is_unknown(name.pid) else labels[name.pid],
            0 if name.cam is None else cameras[name.cam],
        )
        for name in names
    ]


def _is_unknown(pid: str) -> bool:
    return pid.strip() == "-1"


def _evaluation_pids(names: list[ParsedName], pattern: re.Pattern) -> dict[str, int]:
    """Query/gallery pids: the number itself when numeric (so users recognise it), else a label."""
    for group in ("pid", "cam"):
        if group not in pattern.groupindex:
            raise HHCLError(
                f"query and gallery images need an identity and a camera, but the pattern "
                f"{shown_pattern(pattern)} has no (?P<{group}>...) group; add it"
            )
    for name in names:
        if name.pid is None or name.cam is None:
            raise HHCLError(
                f"file name {name.path} gives no pid or cam with the pattern {shown_pattern(pattern)}; "
                "query and gallery images need both"
            )
    texts = {name.pid for name in names}
    if all(re.fullmatch(r"[-+]?\d+", text) for text in texts):
        return {text: int(text) for text in texts}
    return label_index(texts)


def _evaluation_items(names: list[ParsedName], pids: dict[str, int], cameras: dict[str, int]) -> list[Item]:
    # pid -1 marks junk images, as in Market-1501: they are not evaluated.
    return [(name.path, pids[name.pid], cameras[name.cam]) for name in names if pids[name.pid] != -1]


def _require_not_empty(items: list[Item], folder: Path, pattern: re.Pattern) -> None:
    if not items:
        raise HHCLError(f"every image in {folder}/ has pid -1 (junk) by the pattern {shown_pattern(pattern)}; "
                        "nothing to evaluate")


def _read_pooled(roots: list, pattern, scan: dict) -> ReIDDataset:
    if not roots:
        raise HHCLError(f"no folder given to pool; pass one or more roots ({FOLDER_LAYOUT})")
    if isinstance(pattern, (str, re.Pattern)):
        patterns = [pattern] * len(roots)
    else:
        patterns = list(pattern)
        if len(patterns) != len(roots):
            raise HHCLError(
                f"{len(patterns)} patterns for {len(roots)} pooled folders; pass one pattern, or one per folder"
            )
    train: list[Item] = []
    camera_sources: dict[int, int] = {}
    identity_offset = camera_offset = 0
    for source, (root, folder_pattern) in enumerate(zip(roots, patterns)):
        root_path = _require_folder_root(root)
        compiled = compile_pattern(folder_pattern)
        folder = root_path / "train" if (root_path / "train").is_dir() else root_path
        names = _scan(folder, compiled, scan)
        cameras = label_index(name.cam for name in names if name.cam is not None)
        items = _train_items(names, cameras)
        num_identities = len({pid for _, pid, _ in items if pid >= 0})
        train.extend(
            (path, pid + identity_offset if pid >= 0 else -1, camid + camera_offset) for path, pid, camid in items
        )
        identity_offset += num_identities
        num_cameras = max(len(cameras), 1)
        camera_sources.update({camera: source for camera in range(camera_offset, camera_offset + num_cameras)})
        camera_offset += num_cameras
    return ReIDDataset("folder", train=train, root=", ".join(str(Path(root)) for root in roots),
                       camera_sources=camera_sources)
