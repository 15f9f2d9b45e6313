"""Datasets, sampling and transforms.

``load_dataset(name, root, **options)`` reads any supported dataset into a :class:`ReIDDataset`
(``.train``, ``.query``, ``.gallery``: lists of ``(path, pid, camid)``). ``list_datasets()``
names them. Every reader takes ``check_images`` (decode every file while scanning) and ``strict``
(a broken file is an error instead of a warning).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from hhcl.data.dataset import ReIDDataset
from hhcl.data.folder import read_folder
from hhcl.data.readers import cuhk03np, dukemtmcreid, market1501, msmt17, personx, veri776
from hhcl.data.synthetic import load_synthetic
from hhcl.errors import HHCLError

# name -> (reader, one-line description)
DATASETS: dict[str, tuple[Callable[..., ReIDDataset], str]] = {
    "market1501": (market1501, "Market-1501: 1,501 identities, 6 cameras"),
    "dukemtmcreid": (dukemtmcreid, "DukeMTMC-reID: 1,404 identities (+408 distractors), 8 cameras"),
    "msmt17": (msmt17, "MSMT17 (V1/V2 with list files, or bounding_box_* repackaged): 4,101 identities, 15 cameras"),
    "personx": (personx, "PersonX: 1,266 synthetic identities, 6 cameras"),
    "cuhk03np": (cuhk03np, "CUHK03-NP, subset=detected or labeled: 1,467 identities, 2 cameras"),
    "veri776": (veri776, "VeRi-776 (vehicles): 776 identities, 20 cameras"),
    "folder": (read_folder, "your own images; identity and camera parsed from file names by --pattern"),
    "synthetic": (load_synthetic, "procedural pedestrians, generated on first use (no download)"),
}


def list_datasets() -> list[str]:
    """The dataset names ``load_dataset`` accepts."""
    return list(DATASETS)


def describe_datasets() -> dict[str, str]:
    """``name -> one-line description``."""
    return {name: description for name, (_, description) in DATASETS.items()}


def dataset_options(name: str) -> list[str]:
    """The keyword options the reader of ``name`` accepts."""
    reader = _reader(name)
    return [
        parameter.name
        for parameter in inspect.signature(reader).parameters.values()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]


def _reader(name: str) -> Callable[..., ReIDDataset]:
    if name not in DATASETS:
        raise HHCLError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name][0]


def load_dataset(name: str, root=None, **options) -> ReIDDataset:
    """Read dataset ``name`` from ``root`` (a folder, or a list of folders for ``folder`` pooling).

    Options depend on the dataset (see :func:`dataset_options`); an unknown option is an
    :class:`HHCLError` that lists the accepted ones.
    """
    reader = _reader(name)
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise HHCLError(
            f"dataset {name} has no option {', '.join(unknown)}; it accepts {', '.join(accepted) or 'none'}"
        )
    return reader(root, **options)


__all__ = ["DATASETS", "ReIDDataset", "dataset_options", "describe_datasets", "list_datasets", "load_dataset"]
