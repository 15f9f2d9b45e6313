"""A static HTML page of a run's pseudo-labels: which crops were grouped, which were left out, what changed.

    inspection = load_inspection("runs/mine")               # RUN/inspect/, written by `hhcl train --inspect`
    page = write_inspection_page(inspection, epoch=None)    # the last epoch -> RUN/inspect/epoch_NNN.html

The page works from a file (no server, no script): a summary (clusters, outliers, the cluster-size
histogram, the clusters that span several cameras, the guard's decision), rows of clusters (the
largest, a random sample, the most camera-diverse), a sample of the outliers, and the clusters that
merged or split since an earlier epoch. Where the identities are known, each thumbnail's border is
green when its identity is its cluster's majority, red otherwise, and each cluster shows its purity.

Thumbnails are small JPEGs in ``OUT/thumbnails/``, one per shown image, named after the image's
path and made once; the page loads them lazily, so that it opens fast for a large run.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hhcl.engine.inspection import IMAGES_FILE, INSPECT_FOLDER, epoch_file_name
from hhcl.errors import HHCLError
from hhcl.files import ensure_writable_folder, write_bytes_atomically
from hhcl.retrieval.outputs import read_npz
from hhcl.retrieval.visualize import FALSE_MATCH_COLOR, TRUE_MATCH_COLOR, UNKNOWN_MATCH_COLOR, thumbnail_jpeg

THUMBNAIL_SIZE = (96, 48)  # (height, width) in pixels
THUMBNAIL_FOLDER = "thumbnails"
RUN_CONFIG_FILE = "config.yaml"  # what marks a folder as a run (hhcl.engine.trainer.CONFIG_FILE)
# Upper edges of the cluster-size histogram's bins; the last bin is open.
SIZE_BINS = (1, 2, 3, 4, 5, 10, 20, 50, 100, 200, 500)
# A thumbnail's border: its identity is its cluster's majority, another, or unknown (outliers too).
BORDER_COLORS = {"majority": TRUE_MATCH_COLOR, "other": FALSE_MATCH_COLOR, "unknown": UNKNOWN_MATCH_COLOR}


@dataclass
class EpochLabels:
    """One epoch's file: ``labels`` (N,) int64 (-1 = outlier), the assignment's statistics and decision."""

    epoch: int
    labels: np.ndarray
    stats: dict = field(default_factory=dict)
    decision: str = "train"
    reasons: list[str] = field(default_factory=list)

    @property
    def guard(self) -> dict | None:
        return self.stats.get("guard")


@dataclass
class Inspection:
    """What ``hhcl train --inspect`` kept: the images, once, and the epochs that have a labels file."""

    run: Path
    paths: list[str]
    cameras: np.ndarray  # (N,) int64
    identities: np.ndarray  # (N,) int64, -1 = unknown
    epochs: list[int]

    @property
    def folder(self) -> Path:
        return self.run / INSPECT_FOLDER

    @property
    def identities_known(self) -> bool:
        return bool((self.identities >= 0).any())

    def epoch(self, epoch: int | None = None, option: str = "--epoch") -> EpochLabels:
        """The labels of ``epoch`` (1-based; None: the last one kept)."""
        epoch = self.epochs[-1] if epoch is None else int(epoch)
        if epoch not in self.epochs:
            raise HHCLError(f"{self.folder} has no {epoch_file_name(epoch)}; {option} takes one of "
                            f"{', '.join(map(str, self.epochs))}")
        arrays = read_npz(self.folder / epoch_file_name(epoch))
        labels = np.asarray(arrays.get("labels", np.zeros(0)), dtype=np.int64)
        if labels.shape != (len(self.paths),):
            raise HHCLError(f"{self.folder / epoch_file_name(epoch)} holds {labels.size} labels for "
                            f"{len(self.paths)} images in {self.folder / IMAGES_FILE}; train the run again with "
                            f"--inspect")
        return EpochLabels(epoch, labels, json.loads(str(arrays.get("stats", "{}"))),
                           str(arrays.get("decision", "train")), json.loads(str(arrays.get("reasons", "[]"))))


def load_inspection(run: str | os.PathLike) -> Inspection:
    """The inspection data of the run folder ``run``; a one-line :class:`HHCLError` for a folder without it."""
    run = Path(run)
    if not run.is_dir():
        raise HHCLError(f"{run} is not a folder; give the --output folder of a `hhcl train` run")
    folder = run / INSPECT_FOLDER
    if not (folder / IMAGES_FILE).is_file():
        if not (run / RUN_CONFIG_FILE).is_file():
            raise HHCLError(f"{run} is not a run folder (no {RUN_CONFIG_FILE}); give the --output folder of a "
                            f"`hhcl train ... --inspect` run")
        raise HHCLError(f"{run} has no inspection data ({folder / IMAGES_FILE} is missing); train it with "
                        f"`hhcl train ... --output {run} --inspect`")
    arrays = read_npz(folder / IMAGES_FILE)
    missing = [key for key in ("paths", "cameras", "identities") if key not in arrays]
    if missing:
        raise HHCLError(f"{folder / IMAGES_FILE} has no {', '.join(missing)}; train the run again with --inspect")
    epochs = sorted(int(path.stem.split("_")[1]) for path in folder.glob("epoch_[0-9][0-9][0-9]*.npz")
                    if path.stem.split("_")[1].isdigit())
    if not epochs:
        raise HHCLError(f"{folder} holds no epoch yet (no epoch_NNN.npz); let `hhcl train ... --inspect` "
                        f"cluster at least once")
    return Inspection(run, [str(path) for path in arrays["paths"]], arrays["cameras"].astype(np.int64),
                      arrays["identities"].astype(np.int64), epochs)


@dataclass
class ClusterView:
    """Per-cluster facts of one epoch's labels: ``(C,)`` arrays, and each image's border."""

    sizes: np.ndarray  # (C,) images per cluster
    camera_counts: np.ndarray  # (C,) distinct cameras per cluster
    majority: np.ndarray  # (C,) the most frequent known identity, -1 when none is known
    purity: np.ndarray  # (C,) majority's share of the known identities, nan when none is known
    borders: np.ndarray  # (N,) "majority", "other" or "unknown"


def cluster_view(labels, cameras, identities) -> ClusterView:
    """The facts the page shows about each cluster of ``labels`` (N,), with ``cameras`` and ``identities`` (N,)."""
    labels = np.asarray(labels, dtype=np.int64)
    cameras = np.asarray(cameras, dtype=np.int64)
    identities = np.asarray(identities, dtype=np.int64)
    num_clusters = int(labels.max(initial=-1)) + 1
    clustered = labels >= 0
    sizes = np.bincount(labels[clustered], minlength=num_clusters)
    camera_pairs = np.unique(np.stack([labels[clustered], cameras[clustered]], axis=1), axis=0)
    camera_counts = np.bincount(camera_pairs[:, 0], minlength=num_clusters) if len(camera_pairs) else sizes * 0
    majority = np.full(num_clusters, -1, dtype=np.int64)
    purity = np.full(num_clusters, np.nan)
    known = clustered & (identities >= 0)
    if known.any():
        pairs, counts = np.unique(np.stack([labels[known], identities[known]], axis=1), axis=0, return_counts=True)
        # the most frequent identity per cluster; ties go to the smallest identity
        order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
        pairs, counts = pairs[order], counts[order]
        first = np.ones(len(pairs), dtype=bool)
        first[1:] = pairs[1:, 0] != pairs[:-1, 0]
        majority[pairs[first, 0]] = pairs[first, 1]
        purity[pairs[first, 0]] = counts[first] / np.bincount(labels[known], minlength=num_clusters)[pairs[first, 0]]
    borders = np.full(len(labels), "unknown", dtype=object)
    judged = known & (majority[np.where(clustered, labels, 0)] >= 0)
    borders[judged] = np.where(identities[judged] == majority[labels[judged]], "majority", "other")
    return ClusterView(sizes, camera_counts, majority, purity, borders)


def size_histogram(sizes) -> list[tuple[str, int]]:
    """``[(bin label, clusters)]`` of the cluster sizes, from the smallest bin used to the largest."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if sizes.size == 0:
        return []
    lower, bins = 1, []
    for upper in (*SIZE_BINS, None):
        inside = sizes >= lower if upper is None else (sizes >= lower) & (sizes <= upper)
        label = f"{lower}+" if upper is None else (str(lower) if upper == lower else f"{lower}-{upper}")
        bins.append((label, int(inside.sum())))
        if upper is None or sizes.max() <= upper:
            break
        lower = upper + 1
    first_used = next(index for index, (_, count) in enumerate(bins) if count)
    return bins[first_used:]


def merges_and_splits(previous, current, min_part: int = 2) -> tuple[list[tuple[int, list[int]]],
                                                                      list[tuple[int, list[int]]]]:
    """Clusters that merged and split from ``previous`` to ``current`` labels (both (N,), -1 = outlier).

    A part is the images that a previous and a current cluster share, when there are at least
    ``min_part``. Returns ``merges``, ``[(current cluster, [previous clusters])]`` for each current
    cluster made of two or more parts, and ``splits``, ``[(previous cluster, [current clusters])]``
    for each previous cluster cut into two or more; each list largest first.
    """
    previous = np.asarray(previous, dtype=np.int64)
    current = np.asarray(current, dtype=np.int64)
    both = (previous >= 0) & (current >= 0)
    if not both.any():
        return [], []
    pairs, counts = np.unique(np.stack([previous[both], current[both]], axis=1), axis=0, return_counts=True)
    parts = pairs[counts >= min_part]
    part_sizes = counts[counts >= min_part]

    def grouped(key: int, other: int) -> list[tuple[int, list[int]]]:
        groups: dict[int, list[tuple[int, int]]] = {}
        for pair, size in zip(parts, part_sizes):
            groups.setdefault(int(pair[key]), []).append((int(size), int(pair[other])))
        found = [(sum(size for size, _ in members), cluster,
                  [other for _, other in sorted(members, key=lambda member: (-member[0], member[1]))])
                 for cluster, members in groups.items() if len(members) >= 2]
        return [(cluster, members) for _, cluster, members in sorted(found, key=lambda item: (-item[0], item[1]))]

    return grouped(1, 0), grouped(0, 1)


class _Thumbnails:
    """Thumbnails in ``folder``, one per image path, made on first use and kept (their names hash the path)."""

    def __init__(self, folder: Path, page_folder: Path) -> None:
        self.folder = ensure_writable_folder(folder, "--out")
        self.prefix = os.path.relpath(folder, page_folder).replace(os.sep, "/")
        self.made = 0

    def source(self, path: str) -> str:
        name = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:20] + ".jpg"
        target = self.folder / name
        if not target.is_file():
            write_bytes_atomically(target, thumbnail_jpeg(path, THUMBNAIL_SIZE, quality=80), "--out")
            self.made += 1
        return f"{self.prefix}/{name}"


def write_inspection_page(inspection: Inspection, epoch: int | None = None, out: str | os.PathLike | None = None,
                          compare: int | None = None, rows: int = 8, per_row: int = 12, outliers: int = 48,
                          seed: int = 0) -> Path:
    """Write ``OUT/epoch_NNN.html`` (OUT defaults to ``RUN/inspect``) for ``epoch`` (None: the last one kept).

    ``compare`` is the earlier epoch whose clusters merged or split (None: the one before, when kept).
    ``rows`` clusters per section, at most ``per_row`` thumbnails each, ``outliers`` outliers; the
    random choices follow ``seed``. Returns the page's path.
    """
    labels = inspection.epoch(epoch)
    if compare is None:
        earlier = [number for number in inspection.epochs if number < labels.epoch]
        compared = inspection.epoch(earlier[-1]) if earlier else None
    else:
        compared = inspection.epoch(compare, option="--compare")
    out = ensure_writable_folder(inspection.folder if out is None else Path(out), "--out")
    page = _Page(inspection, labels, _Thumbnails(out / THUMBNAIL_FOLDER, out), np.random.default_rng(seed), per_row)
    body = [page.summary(), page.cluster_sections(rows), page.outlier_section(outliers),
            page.change_section(compared, rows)]
    path = out / f"epoch_{labels.epoch:03d}.html"
    write_bytes_atomically(path, page.document(body), "--out")
    return path


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.2em 2em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
nav a{margin-right:1em}
table.facts td{padding:2px 12px 2px 0;vertical-align:top}
.histogram td{padding:1px 6px;font-size:13px}.bar{background:#4a78c8;height:12px;display:inline-block}
.cluster{margin:6px 0 10px}.head{font-size:13px;margin-bottom:3px}.head b{margin-right:.5em}
.thumbs{display:flex;flex-wrap:wrap;gap:4px;align-items:flex-end}
figure{margin:0;text-align:center;font-size:10px;color:#555}
figure img{display:block;width:%(width)dpx;height:%(height)dpx;border:3px solid;background:#eee}
.majority img{border-color:rgb%(majority)s}.other img{border-color:rgb%(other)s}
.unknown img{border-color:rgb%(unknown)s}
.part{display:flex;gap:4px;padding:0 6px 0 0;margin-right:6px;border-right:2px dashed #aaa}
.part:last-child{border-right:none}.part .label{writing-mode:vertical-rl;font-size:11px;color:#555}
.more{font-size:12px;color:#555;align-self:center}
.hold{color:rgb%(other)s;font-weight:bold}.train{color:rgb%(majority)s;font-weight:bold}
"""


class _Page:
    def __init__(self, inspection: Inspection, labels: EpochLabels, thumbnails: _Thumbnails,
                 rng: np.random.Generator, per_row: int) -> None:
        self.inspection = inspection
        self.labels = labels
        self.thumbnails = thumbnails
        self.rng = rng
        self.per_row = per_row
        self.view = cluster_view(labels.labels, inspection.cameras, inspection.identities)
        self.members = _members(labels.labels)

    def document(self, body: list[str]) -> str:
        title = f"Pseudo-labels of {self.inspection.run.name}, epoch {self.labels.epoch}"
        style = STYLE % {"width": THUMBNAIL_SIZE[1], "height": THUMBNAIL_SIZE[0], **BORDER_COLORS}
        nav = " ".join(f'<a href="#{anchor}">{name}</a>' for anchor, name in (
            ("summary", "Summary"), ("largest", "Largest"), ("random", "Random sample"),
            ("camera-diverse", "Camera-diverse"), ("outliers", "Outliers"), ("changes", "Merges and splits")))
        return "\n".join(["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
                          '<meta name="viewport" content="width=device-width">', f"<title>{html.escape(title)}</title>",
                          f"<style>{style}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<nav>{nav}</nav>",
                          *body, "</body></html>", ""])

    # --- the summary ---------------------------------------------------------------------------
    def summary(self) -> str:
        labels, view = self.labels.labels, self.view
        num_images, num_clusters = len(labels), len(view.sizes)
        num_outliers = int((labels < 0).sum())
        multi_camera = int((view.camera_counts >= 2).sum())
        facts = [
            ("epoch", f"{self.labels.epoch} (kept: {', '.join(map(str, self.inspection.epochs))})"),
            ("images", f"{num_images}"),
            ("clusters", f"{num_clusters}"),
            ("outliers", f"{num_outliers} ({_percent(num_outliers, num_images)})"),
            ("clusters spanning 2+ cameras",
             f"{multi_camera} of {num_clusters} ({_percent(multi_camera, num_clusters)})"),
        ]
        if self.inspection.identities_known and num_clusters:
            known = (labels >= 0) & (self.inspection.identities >= 0)
            agreeing = int((view.borders[known] == "majority").sum())
            facts.append(("purity", f"{_percent(agreeing, int(known.sum()))} of the clustered images with a known "
                                    f"identity are their cluster's majority identity (green border)"))
        facts.append(("guard", self.guard_text()))
        rows = "".join(f"<tr><td>{html.escape(name)}</td><td>{value}</td></tr>" for name, value in facts)
        histogram = size_histogram(view.sizes)
        most = max((count for _, count in histogram), default=1)
        bars = "".join(f'<tr><td>{label}</td><td><span class="bar" style="width:{240 * count / most:.0f}px"></span> '
                       f"{count}</td></tr>" for label, count in histogram)
        return (f'<section id="summary" data-clusters="{num_clusters}" data-outliers="{num_outliers}" '
                f'data-images="{num_images}"><h2>Summary</h2><table class="facts">{rows}</table>'
                f"<h3>Cluster sizes</h3><table class=\"histogram\"><tr><td><i>images</i></td><td><i>clusters</i></td>"
                f"</tr>{bars}</table>{self.history()}</section>")

    def guard_text(self) -> str:
        guard = self.labels.guard
        decision = html.escape(self.labels.decision)
        reasons = "; ".join(html.escape(str(reason)) for reason in self.labels.reasons)
        if guard is None:
            text = f"off (labels used: <span class=\"{decision}\">{decision}</span>)"
            return text + (f": {reasons}" if reasons else "")
        shown = [(key, guard.get(key)) for key in ("clustered_share", "cross_camera_share", "eps_stability",
                                                   "epoch_stability", "drift")]
        statistics = ", ".join(f"{key.replace('_', ' ')} {100 * value:.0f}%" for key, value in shown
                               if isinstance(value, (int, float)))
        text = f'<span class="{decision}">{decision}</span> ({html.escape(statistics)})'
        return text + (f": {reasons}" if reasons else "")

    def history(self) -> str:
        """Clusters and outliers of every kept epoch, read from the small label files."""
        if len(self.inspection.epochs) < 2:
            return ""
        cells = []
        for number in self.inspection.epochs:
            labels = self.labels if number == self.labels.epoch else self.inspection.epoch(number)
            marker = " <b>(shown)</b>" if number == self.labels.epoch else ""
            cells.append(f"<tr><td>{number}{marker}</td><td>{int(labels.labels.max(initial=-1)) + 1}</td>"
                         f"<td>{int((labels.labels < 0).sum())}</td><td>{html.escape(labels.decision)}</td></tr>")
        return ("<h3>Epochs</h3><table class=\"histogram\"><tr><td><i>epoch</i></td><td><i>clusters</i></td>"
                f"<td><i>outliers</i></td><td><i>decision</i></td></tr>{''.join(cells)}</table>")

    # --- clusters ------------------------------------------------------------------------------
    def cluster_sections(self, rows: int) -> str:
        sizes, camera_counts = self.view.sizes, self.view.camera_counts
        clusters = np.arange(len(sizes))
        largest = clusters[np.lexsort((clusters, -sizes))][:rows]
        sample = np.sort(self.rng.choice(clusters, size=min(rows, len(clusters)), replace=False)) if len(clusters) \
            else clusters
        diverse = clusters[np.lexsort((clusters, -sizes, -camera_counts))][:rows]
        sections = []
        for anchor, title, chosen in (("largest", "Largest clusters", largest),
                                      ("random", "A random sample of clusters", sample),
                                      ("camera-diverse", "The most camera-diverse clusters", diverse)):
            body = "".join(self.cluster_row(int(cluster)) for cluster in chosen) or "<p>No cluster.</p>"
            sections.append(f'<section id="{anchor}"><h2>{title}</h2>{body}</section>')
        return "\n".join(sections)

    def cluster_row(self, cluster: int) -> str:
        members = self.members[cluster]
        shown = self.spread_over_cameras(members, self.per_row)
        return (f'<div class="cluster" data-cluster="{cluster}" data-size="{len(members)}">'
                f'<div class="head">{self.cluster_head(cluster)}</div><div class="thumbs">'
                f"{''.join(self.figure(index) for index in shown)}{_more(len(members) - len(shown))}</div></div>")

    def cluster_head(self, cluster: int) -> str:
        members = self.members[cluster]
        cameras = np.unique(self.inspection.cameras[members])
        parts = [f"<b>cluster {cluster}</b>", f"{len(members)} images",
                 f"{len(cameras)} camera{'s' if len(cameras) != 1 else ''} ({', '.join(map(str, cameras))})"]
        purity = self.view.purity[cluster]
        if not np.isnan(purity):
            parts.append(f"purity {100 * purity:.0f}% (identity {self.view.majority[cluster]})")
        return " · ".join(parts)

    def spread_over_cameras(self, members: np.ndarray, count: int) -> np.ndarray:
        """Up to ``count`` of ``members``, taken in turn from each camera, each camera's in random order."""
        if len(members) <= count:
            return members
        cameras = self.inspection.cameras[members]
        queues = [list(self.rng.permutation(members[cameras == camera])) for camera in np.unique(cameras)]
        chosen: list[int] = []
        while len(chosen) < count:
            for queue in queues:
                if queue and len(chosen) < count:
                    chosen.append(int(queue.pop()))
        return np.array(chosen, dtype=np.int64)

    def figure(self, index: int, border: str | None = None) -> str:
        path = self.inspection.paths[index]
        camera = int(self.inspection.cameras[index])
        identity = int(self.inspection.identities[index])
        border = border or self.view.borders[index]
        title = f"{path}\ncamera {camera}" + (f", identity {identity}" if identity >= 0 else "")
        caption = f"c{camera}" + (f" · {identity}" if identity >= 0 else "")
        return (f'<figure class="{border}"><img src="{html.escape(self.thumbnails.source(path))}" loading="lazy" '
                f'width="{THUMBNAIL_SIZE[1]}" height="{THUMBNAIL_SIZE[0]}" data-index="{index}" '
                f'alt="{html.escape(Path(path).name)}" title="{html.escape(title)}"><figcaption>{caption}</figcaption>'
                f"</figure>")

    # --- outliers ------------------------------------------------------------------------------
    def outlier_section(self, count: int) -> str:
        outliers = np.flatnonzero(self.labels.labels < 0)
        chosen = np.sort(self.rng.choice(outliers, size=min(count, len(outliers)), replace=False)) \
            if len(outliers) else outliers
        body = "".join(self.figure(int(index), "unknown") for index in chosen)
        text = (f"{len(chosen)} of {len(outliers)} outliers, chosen at random: images in no pseudo-identity this "
                f"epoch." if len(outliers) else "No outlier.")
        return (f'<section id="outliers" data-outliers="{len(outliers)}"><h2>Outliers</h2><p>{text}</p>'
                f'<div class="thumbs">{body}</div></section>')

    # --- changes between two epochs ------------------------------------------------------------
    def change_section(self, compared: EpochLabels | None, rows: int) -> str:
        if compared is None:
            return ('<section id="changes"><h2>Merges and splits</h2><p>No earlier epoch is kept to compare '
                    "with.</p></section>")
        previous, current = compared.labels, self.labels.labels
        merges, splits = merges_and_splits(previous, current)
        old, new = compared.epoch, self.labels.epoch
        parts = [f'<section id="changes" data-merges="{len(merges)}" data-splits="{len(splits)}">'
                 f"<h2>Merges and splits since epoch {old}</h2>"
                 f"<p>{len(merges)} clusters of epoch {new} join two or more clusters of epoch {old}; {len(splits)} "
                 f"clusters of epoch {old} are cut into two or more of epoch {new} (parts of two images or more; "
                 f"the largest {rows} of each shown).</p><h3>Merged</h3>"]
        per_part = max(self.per_row // 3, 2)
        for cluster, sources in merges[:rows]:
            pieces = [(f"from {source}", np.flatnonzero((current == cluster) & (previous == source)))
                      for source in sources]
            parts.append(self.change_row(f"{self.cluster_head(cluster)} ← clusters {', '.join(map(str, sources))} of "
                                         f"epoch {old}", pieces, per_part))
        parts.append("<h3>Split</h3>")
        for cluster, targets in splits[:rows]:
            pieces = [(f"to {target}", np.flatnonzero((previous == cluster) & (current == target)))
                      for target in targets]
            size = int((previous == cluster).sum())
            parts.append(self.change_row(f"<b>cluster {cluster} of epoch {old}</b> · {size} images → clusters "
                                         f"{', '.join(map(str, targets))} of epoch {new}", pieces, per_part))
        parts.append("</section>")
        return "\n".join(parts)

    def change_row(self, head: str, pieces: list[tuple[str, np.ndarray]], per_part: int) -> str:
        body = "".join(f'<div class="part"><span class="label">{html.escape(label)} ({len(members)})</span>'
                       f"{''.join(self.figure(int(index)) for index in members[:per_part])}"
                       f"{_more(len(members) - per_part)}</div>" for label, members in pieces)
        return f'<div class="cluster change"><div class="head">{head}</div><div class="thumbs">{body}</div></div>'


def _members(labels: np.ndarray) -> list[np.ndarray]:
    """Each cluster's image indices, in image order."""
    clustered = np.flatnonzero(labels >= 0)
    order = clustered[np.argsort(labels[clustered], kind="stable")]
    counts = np.bincount(labels[clustered], minlength=int(labels.max(initial=-1)) + 1)
    return np.split(order, np.cumsum(counts)[:-1]) if len(counts) else []


def _more(count: int) -> str:
    return f'<span class="more">+{count} more</span>' if count > 0 else ""


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


__all__ = ["ClusterView", "EpochLabels", "Inspection", "cluster_view", "load_inspection", "merges_and_splits",
           "size_histogram", "write_inspection_page"]
