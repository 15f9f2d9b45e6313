"""The dataset contract: three lists of ``(path, pid, camid)`` and a printable summary."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

Item = tuple[str, int, int]
"""One image: ``(path, pid, camid)``. ``pid == -1`` means the identity is unknown."""

SPLITS = ("train", "query", "gallery")


@dataclass
class ReIDDataset:
    """A loaded dataset. Each split is a list of ``(path: str, pid: int, camid: int)`` tuples.

    Training pids are relabelled to ``0..num_train_ids-1`` (``-1`` stays "unknown"); query and
    gallery keep the pids of the file names so they can be compared with each other. Cameras are
    0-based.
    """

    name: str
    train: list[Item] = field(default_factory=list)
    query: list[Item] = field(default_factory=list)
    gallery: list[Item] = field(default_factory=list)
    root: str = ""
    # training camera -> the source (pooled root) it was read from: cameras of different sources
    # never see the same person. Empty: one source.
    camera_sources: dict[int, int] = field(default_factory=dict)
    # which of a benchmark's known layouts was read, when it has several (dukemtmcreid); "" otherwise
    layout: str = ""

    def train_sources(self) -> list[int]:
        """The source of each training image (0 for all when the dataset has one source)."""
        return [self.camera_sources.get(camid, 0) for _, _, camid in self.train]

    def split(self, name: str) -> list[Item]:
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)

    def split_counts(self, name: str) -> dict[str, int | None]:
        """Images, identities (None when unknown) and cameras of one split."""
        return split_counts(self.split(name))

    def summary(self) -> str:
        """A small table: one row per split with its images, identities and cameras."""
        header = ("split", "images", "identities", "cameras")
        rows = []
        for name in SPLITS:
            counts = self.split_counts(name)
            identities = counts["identities"]
            if counts["unlabeled"]:
                identities_text = (
                    "unknown" if identities == 0 else f"{identities} (+{counts['unlabeled']} unknown)"
                )
            else:
                identities_text = str(identities)
            rows.append((name, str(counts["images"]), identities_text, str(counts["cameras"])))
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

        def format_row(row: Sequence[str]) -> str:
            cells = [row[0].ljust(widths[0])] + [cell.rjust(width) for cell, width in zip(row[1:], widths[1:])]
            return "  " + "  ".join(cells)

        title = f"{self.name}" + (f" ({self.root})" if self.root else "")
        title += f", {self.layout} layout" if self.layout else ""
        rule = "  " + "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([title, format_row(header), rule, *(format_row(row) for row in rows)])

    def __str__(self) -> str:
        return self.summary()


def split_counts(items: Sequence[Item]) -> dict[str, int]:
    """Count images, labelled identities, images of unknown identity and cameras in ``items``."""
    pids = {pid for _, pid, _ in items if pid >= 0}
    return {
        "images": len(items),
        "identities": len(pids),
        "unlabeled": sum(1 for _, pid, _ in items if pid < 0),
        "cameras": len({camid for _, _, camid in items}),
    }


def relabel_train(items: Sequence[Item], offset: int = 0) -> list[Item]:
    """Map training pids to ``offset..offset+num_ids-1`` in sorted pid order; ``-1`` stays ``-1``."""
    known = sorted({pid for _, pid, _ in items if pid >= 0})
    new_pid = {pid: offset + index for index, pid in enumerate(known)}
    return [(path, new_pid[pid] if pid >= 0 else -1, camid) for path, pid, camid in items]
