"""What a run writes besides checkpoints: the log file, TensorBoard scalars and metrics.json."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hhcl.files import ensure_writable_folder, write_bytes_atomically

LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
TENSORBOARD_DIR = "tensorboard"

log = logging.getLogger("hhcl")


def quantiles(values, points=(0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"q{int(round(p * 100))}": float(np.quantile(values, p)) for p in points}


@dataclass
class EpochRecord:
    """One epoch, as the summary line and metrics.json show it. Retrieval figures are in percent."""

    epoch: int  # 1-based
    num_clusters: int
    num_outliers: int
    num_images: int
    cluster_size_quantiles: dict[str, float]
    loss: float
    lr: float
    seconds: dict[str, float]  # extract, cluster, train, evaluate
    train_images_per_second: float
    metrics: dict[str, float] | None = None
    guard: dict[str, Any] | None = None  # the label-free guard's statistics and decision (hhcl.cluster.guard)
    ensemble: dict[str, Any] | None = None  # cluster.ensemble_eps: clusters per eps, images that do not nest
    final_guard: dict[str, Any] | None = None  # guard.check_final: the guard on this last epoch's own update

    @classmethod
    def of_labels(cls, epoch: int, labels, **values) -> "EpochRecord":
        """The record of an epoch whose pseudo-labels were ``labels`` (``(N,)``, -1 outliers)."""
        labels = np.asarray(labels, dtype=np.int64)
        sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0)
        return cls(epoch=epoch, num_clusters=len(sizes), num_outliers=int((labels < 0).sum()), num_images=len(labels),
                   cluster_size_quantiles=quantiles(sizes), **values)

    def summary_line(self, num_epochs: int, elapsed: float | None = None, remaining: float | None = None) -> str:
        outlier_share = 100.0 * self.num_outliers / max(self.num_images, 1)
        parts = [f"epoch {self.epoch}/{num_epochs}", f"{self.num_clusters} clusters",
                 f"{self.num_outliers} outliers ({outlier_share:.1f}%)", f"loss {self.loss:.3f}",
                 f"lr {self.lr:.2e}"]
        if self.guard is not None:
            parts.append(guard_summary(self.guard))
        if self.ensemble is not None:
            parts.append(ensemble_summary(self.ensemble))
        if self.final_guard is not None:
            parts.append(f"its update: {guard_summary(self.final_guard)}")
        if self.metrics is not None:
            parts.append(f"mAP {self.metrics['mAP']:.1f}% rank-1 {self.metrics['rank1']:.1f}%")
        timing = ", ".join(f"{name} {seconds:.1f}" for name, seconds in self.seconds.items())
        parts.append(f"{sum(self.seconds.values()):.1f} s ({timing}; {self.train_images_per_second:.0f} img/s)")
        if elapsed is not None:  # the whole run so far, and what the epochs left should take at this pace
            left = f", about {describe_duration(remaining)} left" if remaining else ""
            parts.append(f"run {describe_duration(elapsed)}{left}")
        return ": ".join(parts[:1]) + ": " + ", ".join(parts[1:])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``2 h 07 min``: a duration as a person reads it."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def guard_summary(guard: dict[str, Any]) -> str:
    """The guard's statistics in a few words: ``guard train (clustered N%, cross-camera N%, ...)``."""
    names = (("clustered_share", "clustered"), ("cross_camera_share", "cross-camera"),
             ("eps_stability", "eps-stable"), ("epoch_stability", "stable vs last epoch"), ("drift", "drift"))
    shown = [f"{label} {100 * guard[key]:.0f}%" for key, label in names if guard.get(key) is not None]
    return f"guard {guard.get('decision', '?')} ({', '.join(shown)})"


def ensemble_summary(ensemble: dict[str, Any]) -> str:
    """The clustering ensemble in a few words: ``ensemble eps 0.5/0.6/0.7: 14/12/9 clusters, N not nested``."""
    eps = "/".join(f"{value:g}" for value in ensemble["eps"])
    clusters = "/".join(str(count) for count in ensemble["num_clusters"])
    return f"ensemble eps {eps}: {clusters} clusters, {ensemble['not_nested']} not nested"


class RunLog:
    """The log file, TensorBoard writer (when tensorboard is installed) and metrics.json of a run.

    Only the main process writes; on other ranks (or without an output folder) every method
    is a no-op.
    """

    def __init__(self, output_dir: Path | None, enabled: bool = True, tensorboard: bool = True):
        self.output_dir = output_dir
        self.enabled = enabled and output_dir is not None
        self._file_handler: logging.Handler | None = None
        self._writer = None
        # The whole-run clock of the epoch line: from the trainer's start, over the epochs this process ran.
        self._started = time.perf_counter()
        self._epochs_run = 0
        if not self.enabled:
            return
        ensure_writable_folder(output_dir)
        self._file_handler = logging.FileHandler(output_dir / LOG_FILE)
        self._file_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        log.addHandler(self._file_handler)
        if log.level == logging.NOTSET:  # without it, INFO would stop at the root's WARNING level
            log.setLevel(logging.INFO)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.info("TensorBoard is not installed (pip install tensorboard): no event files are written")
            else:
                self._writer = SummaryWriter(log_dir=str(output_dir / TENSORBOARD_DIR))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)

    def epoch(self, record: EpochRecord, num_epochs: int, iteration: int) -> None:
        self._epochs_run += 1
        elapsed = time.perf_counter() - self._started
        remaining = elapsed / self._epochs_run * max(num_epochs - record.epoch, 0)
        log.info(record.summary_line(num_epochs, elapsed=elapsed, remaining=remaining))
        if self._writer is None:
            return
        step = record.epoch
        self._writer.add_scalar("epoch/loss", record.loss, step)
        self._writer.add_scalar("epoch/lr", record.lr, step)
        self._writer.add_scalar("cluster/num_clusters", record.num_clusters, step)
        self._writer.add_scalar("cluster/num_outliers", record.num_outliers, step)
        if record.ensemble is not None:
            for eps, count in zip(record.ensemble["eps"], record.ensemble["num_clusters"]):
                self._writer.add_scalar(f"cluster/ensemble_clusters_eps_{eps:g}", count, step)
        self._writer.add_scalar("speed/train_images_per_second", record.train_images_per_second, step)
        for phase, seconds in record.seconds.items():
            self._writer.add_scalar(f"seconds/{phase}", seconds, step)
        for name, value in (record.metrics or {}).items():
            self._writer.add_scalar(f"test/{name}", value, step)
        self._writer.flush()

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        write_bytes_atomically(self.output_dir / METRICS_FILE, json.dumps(metrics, indent=2) + "\n")

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._file_handler is not None:
            log.removeHandler(self._file_handler)
            self._file_handler.close()
            self._file_handler = None
