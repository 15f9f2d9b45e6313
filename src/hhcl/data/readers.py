"""Readers for the public re-ID benchmarks, as released (or as commonly repackaged).

Every benchmark but MSMT17's official release keeps its splits in three flat folders and names
files ``<pid>_c<cam>...``; :class:`SplitLayout` describes where those folders are, and
:func:`read_split_layout` reads any of them. The standard protocol applies throughout: pid ``-1``
(junk) is dropped, pid ``0`` (Market-1501's distractors) is kept, cameras are 0-based and
training pids are relabelled ``0..N-1``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from hhcl.data.dataset import Item, ReIDDataset, relabel_train
from hhcl.data.scan import (
    ParsedName,
    compile_pattern,
    drop_broken_images,
    label_index,
    list_image_files,
    parse_names,
    shown_pattern,
)
from hhcl.errors import HHCLError

logger = logging.getLogger("hhcl.data")

BOUNDING_BOX_PATTERN = r"^(?P<pid>-?\d+)_c(?P<cam>\d+)"


@dataclass(frozen=True)
class SplitLayout:
    """Where a benchmark keeps its three split folders and how it names its files.

    ``containers`` are the sub-folders of ``root`` that may hold the splits, in the order they are
    tried; ``""`` is ``root`` itself. ``camera_numbering`` is ``"one_based"`` (``c1`` is camera 0)
    or ``"sorted"`` (the distinct camera numbers in increasing order become 0, 1, ...).
    """

    dataset: str
    containers: tuple[str, ...]
    train: str = "bounding_box_train"
    query: str = "query"
    gallery: str = "bounding_box_test"
    pattern: str = BOUNDING_BOX_PATTERN
    example: str = "0002_c1s1_000451_03.jpg"
    camera_numbering: str = "one_based"

    def split_folders(self) -> dict[str, str]:
        return {"train": self.train, "query": self.query, "gallery": self.gallery}

    def describe(self, root: Path) -> str:
        """The expected layout under ``root``, on one line."""
        folders = ", ".join(f"{name}/" for name in (self.train, self.gallery, self.query))
        where = [f"{root}/" if not c else f"{root / c}/" for c in self.containers]
        return f"{folders} with files like {self.example}, under {' or '.join(where)}"


def _require_root(root: str | os.PathLike, dataset: str, layout_text: str) -> Path:
    if root is None:
        raise HHCLError(f"dataset {dataset} needs a root folder; pass --root DIR ({layout_text})")
    path = Path(root).expanduser()
    if not path.is_dir():
        raise HHCLError(f"dataset root {path} not found; expected {layout_text}")
    return path


def find_split_container(root: Path, layout: SplitLayout) -> Path | None:
    """The first candidate folder under ``root`` that holds at least one of the split folders."""
    for container in layout.containers:
        base = root / container if container else root
        if any((base / folder).is_dir() for folder in layout.split_folders().values()):
            return base
    return None


def read_split_layout(
    root: str | os.PathLike,
    layout: SplitLayout,
    *,
    check_images: bool = False,
    strict: bool = False,
) -> ReIDDataset:
    """Read a benchmark stored as three flat split folders (see :class:`SplitLayout`)."""
    root_path = _require_root(root, layout.dataset, layout.describe(Path(str(root or "DIR"))))
    base = find_split_container(root_path, layout)
    if base is None:
        raise HHCLError(
            f"no {layout.dataset} split folders found in {root_path}; expected {layout.describe(root_path)}"
        )
    return _read_splits(base, layout, root_path, layout.describe(root_path), check_images, strict)


def _read_splits(
    base: Path, layout: SplitLayout, root_path: Path, expected: str, check_images: bool, strict: bool
) -> ReIDDataset:
    """The three split folders of ``layout`` under ``base``; ``expected`` says what a complete root holds."""
    pattern = compile_pattern(layout.pattern)
    parsed: dict[str, list[ParsedName]] = {}
    for split, folder_name in layout.split_folders().items():
        folder = base / folder_name
        if not folder.is_dir():
            raise HHCLError(
                f"{layout.dataset} split folder {folder}/ is missing; expected {expected}"
            )
        files = list_image_files(folder, check_images=check_images, strict=strict)
        if not files:
            raise HHCLError(
                f"no images in {folder}/; expected {layout.dataset} files named like {layout.example}"
            )
        parsed[split] = parse_names(files, pattern)

    camera_of = _camera_numbering(parsed, layout)
    splits: dict[str, list[Item]] = {}
    for split, names in parsed.items():
        items = []
        for name in names:
            pid = int(name.pid)
            if pid == -1:
                continue
            items.append((name.path, pid, camera_of(name)))
        splits[split] = relabel_train(items) if split == "train" else items
    return ReIDDataset(layout.dataset, splits["train"], splits["query"], splits["gallery"], str(base))


def _camera_numbering(parsed: dict[str, list[ParsedName]], layout: SplitLayout):
    if layout.camera_numbering == "sorted":
        index = label_index(name.cam for names in parsed.values() for name in names)
        return lambda name: index[name.cam]

    def one_based(name: ParsedName) -> int:
        camera = int(name.cam)
        if camera < 1:
            raise HHCLError(
                f"file {name.path} has camera {name.cam}, but {layout.dataset} numbers cameras from 1; "
                "restore the original file name"
            )
        return camera - 1

    return one_based


MARKET1501 = SplitLayout(
    "market1501",
    containers=("", "Market-1501-v15.09.15", "market1501", "market1501/Market-1501-v15.09.15", "Market-1501"),
)
DUKEMTMCREID = SplitLayout(
    "dukemtmcreid",
    containers=("", "DukeMTMC-reID", "dukemtmcreid", "dukemtmcreid/DukeMTMC-reID"),
    example="0001_c2_f0046182.jpg",
)
# The repackaging of FlyingRoastDuck/Pytorch-DukeMTMC-Baseline (its dataReader/ folder): the same
# train/query/gallery split, with the training identities already relabelled 0-701 (files named
# like 0_c2_f0046182.jpg, resized to 227x227) and the gallery in test/.
DUKEMTMCREID_RELABELLED = SplitLayout(
    "dukemtmcreid",
    containers=("", "dataReader", "DukeMTMC-reID", "dukemtmcreid", "dukemtmcreid/dataReader"),
    train="readyTrain",
    gallery="test",
    example="0_c2_f0046182.jpg",
)
# name -> layout, in the order they are looked for
DUKEMTMCREID_LAYOUTS = {"official": DUKEMTMCREID, "readyTrain": DUKEMTMCREID_RELABELLED}
PERSONX = SplitLayout(
    "personx",
    containers=("", "PersonX", "personx"),
    example="0001_c3_0001.jpg",
    # PersonX numbers its cameras 3, 4, 8, 10, 11, 12.
    camera_numbering="sorted",
)
VERI776 = SplitLayout(
    "veri776",
    containers=("", "VeRi", "veri776", "VeRi-776"),
    train="image_train",
    query="image_query",
    gallery="image_test",
    pattern=r"^(?P<pid>-?\d+)_c(?P<cam>\d+)",
    example="0001_c001_00016450_0.jpg",
)
CUHK03NP_SUBSETS = ("detected", "labeled")
MSMT17_BOUNDING_BOX = SplitLayout(
    "msmt17",
    containers=("", "MSMT17_V1", "MSMT17_V2", "MSMT17", "msmt17"),
    example="0000_c1_0000.jpg",
)


def market1501(root, *, check_images: bool = False, strict: bool = False) -> ReIDDataset:
    """Market-1501: ``bounding_box_train/``, ``bounding_box_test/``, ``query/`` under ``root`` or
    ``root/Market-1501-v15.09.15/``. 751 training identities, 6 cameras."""
    return read_split_layout(root, MARKET1501, check_images=check_images, strict=strict)


def detect_layout(root: Path, layouts: dict[str, SplitLayout]) -> tuple[str, SplitLayout, Path] | None:
    """``(name, layout, folder)`` of the first layout with a candidate folder under ``root`` that holds
    its train or gallery folder (``query/`` alone tells no layout apart), or None."""
    for name, layout in layouts.items():
        for container in layout.containers:
            base = root / container if container else root
            if (base / layout.train).is_dir() or (base / layout.gallery).is_dir():
                return name, layout, base
    return None


def _duke_layouts_text(root: Path) -> str:
    return "; or ".join(f"{layout.describe(root)} (the {name} layout)" for name, layout in DUKEMTMCREID_LAYOUTS.items())


def dukemtmcreid(root, *, check_images: bool = False, strict: bool = False) -> ReIDDataset:
    """DukeMTMC-reID, 8 cameras, in either layout (the dataset's ``layout`` says which was read):

    - ``official``: the Market layout (``bounding_box_train/``, ``bounding_box_test/``, ``query/``)
      under ``root`` or ``root/DukeMTMC-reID/``;
    - ``readyTrain``: ``readyTrain/`` (training identities relabelled 0-701), ``test/`` (the
      gallery), ``query/``, under ``root`` or ``root/dataReader/``.
    """
    root_path = _require_root(root, "dukemtmcreid", _duke_layouts_text(Path(str(root or "DIR"))))
    expected = _duke_layouts_text(root_path)
    found = detect_layout(root_path, DUKEMTMCREID_LAYOUTS)
    if found is None:
        raise HHCLError(f"no dukemtmcreid split folders found in {root_path}; expected {expected}")
    name, layout, base = found
    expected = f"{layout.describe(root_path)} ({name} layout)"
    dataset = _read_splits(base, layout, root_path, expected, check_images, strict)
    dataset.layout = f"{name} ({layout.train}/, {layout.gallery}/, {layout.query}/)"
    logger.info("dukemtmcreid: %s layout in %s", dataset.layout, base)
    return dataset


def personx(root, *, check_images: bool = False, strict: bool = False) -> ReIDDataset:
    """PersonX: the Market layout under ``root`` or ``root/PersonX/``; its non-contiguous camera
    numbers become 0..5."""
    return read_split_layout(root, PERSONX, check_images=check_images, strict=strict)


def veri776(root, *, check_images: bool = False, strict: bool = False) -> ReIDDataset:
    """VeRi-776 (vehicles): ``image_train/``, ``image_query/``, ``image_test/`` under ``root`` or
    ``root/VeRi/``. 20 cameras."""
    return read_split_layout(root, VERI776, check_images=check_images, strict=strict)


def cuhk03np(root, *, subset: str = "detected", check_images: bool = False, strict: bool = False) -> ReIDDataset:
    """CUHK03-NP (the new protocol): ``root/cuhk03-np/<subset>/`` with the Market layout, where
    ``subset`` is ``detected`` or ``labeled``. 767 training identities, 2 cameras."""
    if subset not in CUHK03NP_SUBSETS:
        raise HHCLError(f"cuhk03np subset {subset!r} is unknown; pass subset=detected or subset=labeled")
    layout = SplitLayout(
        "cuhk03np",
        containers=(f"cuhk03-np/{subset}", f"CUHK03-NP/{subset}", subset, ""),
        example="0001_c1_1.png",
    )
    dataset = read_split_layout(root, layout, check_images=check_images, strict=strict)
    dataset.name = f"cuhk03np ({subset})"
    return dataset


# MSMT17 as released: image folders with one sub-folder per identity, and list files that give
# each image's path and label. Cameras are the third field of the name: 0000_000_01_0303morning_...
MSMT17_RELEASES = {"V1": ("train", "test"), "V2": ("mask_train_v2", "mask_test_v2")}
MSMT17_LISTS = {"train": ("list_train.txt", "list_val.txt"), "query": ("list_query.txt",), "gallery": ("list_gallery.txt",)}
MSMT17_LIST_LAYOUT = (
    "MSMT17_V1/ with train/, test/, list_train.txt, list_val.txt, list_query.txt, list_gallery.txt "
    "(or MSMT17_V2/ with mask_train_v2/ and mask_test_v2/)"
)


def msmt17(
    root, *, version: str = "auto", check_images: bool = False, strict: bool = False
) -> ReIDDataset:
    """MSMT17: the official ``MSMT17_V1``/``MSMT17_V2`` release read through its ``list_*.txt``
    files (train = list_train + list_val), or the repackaged ``bounding_box_*`` layout.

    ``version`` is ``auto`` (V1 first), ``V1`` or ``V2``. 1041 training identities, 15 cameras.
    """
    version = version.upper()
    if version not in ("AUTO", "V1", "V2"):
        raise HHCLError(f"msmt17 version {version!r} is unknown; pass version=V1, version=V2 or leave it auto")
    layout_text = f"{MSMT17_LIST_LAYOUT}, or {MSMT17_BOUNDING_BOX.describe(Path(str(root)))}"
    root_path = _require_root(root, "msmt17", layout_text)
    releases = ("V1", "V2") if version == "AUTO" else (version,)
    for release in releases:
        for container in (f"MSMT17_{release}", "MSMT17", ""):
            base = root_path / container if container else root_path
            train_folder, test_folder = MSMT17_RELEASES[release]
            if (base / "list_train.txt").is_file() and (base / train_folder).is_dir():
                return _read_msmt17_lists(base, train_folder, test_folder, check_images, strict)
    if find_split_container(root_path, MSMT17_BOUNDING_BOX) is not None:
        return read_split_layout(root_path, MSMT17_BOUNDING_BOX, check_images=check_images, strict=strict)
    raise HHCLError(f"no msmt17 release found in {root_path}; expected {layout_text}")


def _read_msmt17_lists(
    base: Path, train_folder: str, test_folder: str, check_images: bool, strict: bool
) -> ReIDDataset:
    splits: dict[str, list[Item]] = {}
    for split, list_names in MSMT17_LISTS.items():
        image_folder = base / (train_folder if split == "train" else test_folder)
        if not image_folder.is_dir():
            raise HHCLError(f"msmt17 image folder {image_folder}/ is missing; expected {MSMT17_LIST_LAYOUT}")
        items: list[Item] = []
        for list_name in list_names:
            list_file = base / list_name
            if not list_file.is_file():
                if list_name == "list_val.txt":
                    continue
                raise HHCLError(f"msmt17 list file {list_file} is missing; expected {MSMT17_LIST_LAYOUT}")
            items.extend(_read_msmt17_list(list_file, image_folder))
        if not items:
            raise HHCLError(f"msmt17 list for {split} ({', '.join(list_names)}) in {base} lists no images")
        kept = set(drop_broken_images([path for path, _, _ in items], check_images=check_images, strict=strict))
        items = [item for item in items if item[0] in kept]
        splits[split] = relabel_train(items) if split == "train" else items
    return ReIDDataset("msmt17", splits["train"], splits["query"], splits["gallery"], str(base))


_MSMT17_NAME = re.compile(r"^\d+_\d+_(?P<cam>\d+)_")


def _read_msmt17_list(list_file: Path, image_folder: Path) -> list[Item]:
    items = []
    with open(list_file, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields:
                continue
            where = f"{list_file}:{line_number}"
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise HHCLError(f"{where} should read '<relative path> <label>', not {line.strip()!r}; fix that line")
            relative, label = fields
            match = _MSMT17_NAME.match(os.path.basename(relative))
            if match is None:
                raise HHCLError(
                    f"{where}: file name {relative} does not match the MSMT17 pattern {shown_pattern(_MSMT17_NAME)} "
                    "(pid_index_camera_...); restore the original name"
                )
            path = image_folder / relative
            if not path.is_file():
                raise HHCLError(f"{path} is listed in {where} but missing; restore it or remove the line")
            items.append((str(path), int(label), int(match.group("cam")) - 1))
    return items
