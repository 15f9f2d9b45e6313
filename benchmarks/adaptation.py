"""Adapting a pretrained re-ID model to unlabeled real cameras: zero-shot, HHCL and an oracle.

    python -m benchmarks.adaptation                                   # the benchmark; writes docs/benchmarks.md
    python -m benchmarks.adaptation --label lr-3.5e-4 --set optim.lr=3.5e-4 --no-oracle   # a variant
    python -m benchmarks.adaptation --render                          # rewrite the table from stored runs

The model is the MSMT17-trained ``osnet_x0_25`` of ``../shared/models``; the data are the five
real folders of ``../shared/data``. Each folder's identities are split in half with seed 0 (the
shuffled identities' first ``n // 2`` are the test half). In prid2011 only the identities 1-200,
seen by both cameras, are split: the camera-``a``-only identities 201-385 join the train half and
the camera-``b`` identities 201-749 are gallery distractors only (prid2011 numbers its two
cameras' unshared people independently, so ``0201_a`` and ``0201_b`` are different people).

The train halves, identities thrown away (pid -1, each folder its own camera, prid2011 two), are
pooled into one unlabeled training set, each folder a source of its own (as ``--root a b`` pools
folders: ``cluster.separate_sources`` may use it). The test halves are evaluated one by one:

- prid2011 by its cross-camera protocol: camera-``a`` images of the test identities are the
  queries; the gallery is every camera-``b`` image of the test half plus the distractors;
- every other folder: one random image (seed 0) of each test identity with two or more images is
  its query, every other test image is the gallery (single-image identities are distractors),
  with no camera filtering.

Three models are measured: zero-shot (the pretrained model as is), adapted (HHCL on the pool,
evaluated after every epoch) and the oracle (the same training with ``train.supervised`` on the
train halves' true identities, evaluated at the end). Per epoch it also reports clusters,
outliers, the pair precision and recall of the pseudo-labels against the hidden identities
(diagnosis only: nothing reads them to decide anything) and the pair F-score between this
epoch's pseudo-labels and the previous one's (stability, an unsupervised signal).

Each run is stored as JSON in ``benchmarks/results/adaptation/<label>.json``; the section of
``docs/benchmarks.md`` between its markers is rebuilt from all stored runs: the run labelled
``adapt`` (the preset as shipped) gives the main tables, the others the table of variants, and
``findings.md`` there (written by hand from those runs) follows them.
The evaluation pass after an epoch also extracts the training pool, and the next epoch clusters
those features instead of extracting again: the model has not changed in between. With
``model.init_mix`` the evaluated model is the mixture, not the trained one, so the pool is then
extracted by the trainer as usual.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "models" / "osnet_x0_25_msmt17.pth"
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "adaptation"
FINDINGS_FILE = RESULTS_DIR / "findings.md"  # the conclusions drawn from the stored runs, written by hand
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
BEGIN_MARKER = "<!-- adaptation:begin -->"
END_MARKER = "<!-- adaptation:end -->"
MAIN_LABEL = "adapt"
_ABSENT = object()  # a key a config lacks: it differs from any value

Item = tuple[str, int, int]


@dataclass(frozen=True)
class FolderSpec:
    """One real folder: its file-name pattern and, for prid2011, its two-camera protocol."""

    name: str
    pattern: str
    shared_identities: int | None = None  # identities 1..n seen by both cameras; None = no camera protocol
    query_camera: str | None = None
    gallery_camera: str | None = None


FOLDERS = (
    FolderSpec("prid2011", r"^(?P<pid>\d+)_(?P<cam>[ab])\.png$", shared_identities=200, query_camera="a",
               gallery_camera="b"),
    FolderSpec("caviar4reid", r"^(?P<pid>\d+)_\d+\.jpg$"),
    FolderSpec("ilids", r"^(?P<pid>\d+)_\d+\.jpg$"),
    # six 3dpes files carry a "_B" (166_B_1280_FRAME_105_RGB.bmp), which the README's pattern lacks
    FolderSpec("3dpes", r"^(?P<pid>\d+)_(?:B_)?\d+_FRAME_\d+_RGB\.bmp$"),
    FolderSpec("towncentre", r"^(?P<pid>\d+)_\d+\.jpg$"),
)


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
                   seed: int = 0) -> Protocol:
    """Split every folder, pool the train halves (global ids and cameras) and build the test sets."""
    train: list[Item] = []
    train_folders: list[str] = []
    test_sets = []
    identities: dict[tuple[str, str], int] = {}
    cameras: dict[tuple[str, str], int] = {}
    camera_sources: dict[int, int] = {}
    for source, spec in enumerate(specs):
        images = images_by_folder[spec.name]
        if spec.shared_identities is not None:
            train_half, query, gallery = camera_protocol_split(images, spec, seed)
        else:
            train_half, query, gallery = single_query_split(images, seed)
        for image in train_half:
            pid = identities.setdefault((spec.name, image.identity), len(identities))
            camera = cameras.setdefault((spec.name, image.camera), len(cameras))
            camera_sources[camera] = source
            train.append((image.path, pid, camera))
            train_folders.append(spec.name)
        local_ids = {identity: index for index, identity in
                     enumerate(sorted({image.identity for image in query + gallery}))}
        local_cams = {camera: index for index, camera in enumerate(sorted({image.camera for image in query + gallery}))}

        def items(part: list[Image]) -> list[Item]:
            return [(image.path, local_ids[image.identity], local_cams[image.camera]) for image in part]

        test_sets.append(TestSet(spec.name, items(query), items(gallery),
                                 cross_camera=spec.shared_identities is not None))
    return Protocol(train, train_folders, test_sets, camera_sources)


def load_protocol(data_root: Path, seed: int = 0) -> Protocol:
    from hhcl.errors import HHCLError

    missing = [spec.name for spec in FOLDERS if not (data_root / spec.name).is_dir()]
    if missing:
        raise HHCLError(f"{data_root} lacks the folders {', '.join(missing)}; pass --data-root DIR "
                        "(the shared real re-ID folders)")
    return build_protocol({spec.name: read_folder_images(data_root / spec.name, spec) for spec in FOLDERS}, seed=seed)


# -- measuring ---------------------------------------------------------------------------------------


def mean_metrics(per_set: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([metrics[key] for metrics in per_set.values()])) for key in ("mAP", "rank1")}


def evaluate_test_sets(features, protocol: Protocol) -> dict[str, dict[str, float]]:
    """mAP and rank-1 in percent per test set, plus ``mean``; ``features`` rows follow :func:`evaluation_items`."""
    from hhcl.evaluation import evaluate_features

    results: dict[str, dict[str, float]] = {}
    start = 0
    for test_set in protocol.test_sets:
        num_query, num_gallery = len(test_set.query), len(test_set.gallery)
        query_features = features[start:start + num_query]
        gallery_features = features[start + num_query:start + num_query + num_gallery]
        start += num_query + num_gallery
        q_pids, q_cams = _ids(test_set.query)
        g_pids, g_cams = _ids(test_set.gallery)
        result = evaluate_features(query_features, gallery_features, q_pids, g_pids, q_cams, g_cams,
                                   max_rank=1, cross_camera=test_set.cross_camera)
        results[test_set.name] = {"mAP": 100.0 * float(result["mAP"]), "rank1": 100.0 * float(result["cmc"][0])}
    results["mean"] = mean_metrics({name: value for name, value in results.items()})
    return results


def evaluation_items(protocol: Protocol) -> list[Item]:
    return [item for test_set in protocol.test_sets for item in test_set.query + test_set.gallery]


def _ids(items: Sequence[Item]) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([pid for _, pid, _ in items], dtype=np.int64),
            np.array([camera for _, _, camera in items], dtype=np.int64))


def gap_closed(zero_shot: float, adapted: float, oracle: float) -> float | None:
    """Fraction of the zero-shot -> oracle gap that the adapted model closes (None without a gap)."""
    gap = oracle - zero_shot
    return (adapted - zero_shot) / gap if gap > 0 else None


def machine_load() -> float | None:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _extract(model, items, config, device):
    from hhcl.models import extract_features

    return extract_features(model, items, batch_size=config.train.extract_batch_size, device=device,
                            height=config.dataset.height, width=config.dataset.width,
                            num_workers=config.dataset.num_workers, precision="fp32", progress=False)


def run_training(config, protocol: Protocol, *, supervised: bool, initial_train_features, evaluate_every_epoch: bool,
                 log: logging.Logger) -> dict[str, Any]:
    """Train one model on the pool; per epoch the diagnosis, and the test metrics when due."""
    import torch

    from hhcl.cluster.diagnostics import pair_scores
    from hhcl.data.dataset import ReIDDataset
    from hhcl.engine import Hook, Trainer

    train = protocol.train if supervised else protocol.unlabeled_train()
    dataset = ReIDDataset("adaptation-pool", train=list(train), camera_sources=dict(protocol.camera_sources))
    true_ids = protocol.train_identities()
    test_images = evaluation_items(protocol)
    epochs: list[dict[str, Any]] = []

    class ReusingTrainer(Trainer):
        """Clusters on the features the last evaluation pass extracted, when there are any."""

        cached_train_features = initial_train_features
        cluster_stats: dict[str, Any] = {}

        def assign_labels(self, features: torch.Tensor):
            labels, self.cluster_stats = super().assign_labels(features)
            return labels, self.cluster_stats

        def extract_train_features(self) -> torch.Tensor:
            if self.cached_train_features is not None:
                features, self.cached_train_features = self.cached_train_features, None
                return features
            return super().extract_train_features()

    class Measure(Hook):
        previous_labels: np.ndarray | None = None

        def after_epoch(self, trainer: Trainer, record) -> None:
            tick = time.perf_counter()
            labels = np.asarray(trainer.pseudo_labels, dtype=np.int64)
            entry: dict[str, Any] = {
                "epoch": record.epoch, "clusters": record.num_clusters, "outliers": record.num_outliers,
                "images": record.num_images, "loss": record.loss, "lr": record.lr,
                "train_seconds": dict(record.seconds),
            }
            if "eps" in trainer.cluster_stats:
                entry["eps"] = trainer.cluster_stats["eps"]
                entry["unreliable"] = trainer.cluster_stats.get("unreliable_images", 0)
            if not supervised:
                truth = pair_scores(labels, true_ids)
                entry["pair_precision"], entry["pair_recall"] = truth["precision"], truth["recall"]
                if self.previous_labels is not None:
                    entry["stability"] = pair_scores(labels, self.previous_labels)["f_score"]
            self.previous_labels = labels
            last = record.epoch == trainer.config.train.epochs
            if evaluate_every_epoch or last:
                output = trainer.output_model()
                # the pool's features serve the next clustering only when they are the trained model's
                reuse = not last and not supervised and output is trainer.model
                items = (list(dataset.train) if reuse else []) + test_images
                features = _extract(output, items, trainer.config, trainer.device)
                trainer.model.train()
                if reuse:
                    trainer.cached_train_features = features[:len(dataset.train)]
                entry["metrics"] = evaluate_test_sets(features[len(items) - len(test_images):], protocol)
            entry["measure_seconds"] = time.perf_counter() - tick
            epochs.append(entry)
            log.info("%s epoch %d: %s", "oracle" if supervised else "adapted", record.epoch, _epoch_line(entry))

    start = time.perf_counter()
    trainer = ReusingTrainer(config, None, dataset=dataset, hooks=[Measure()], progress=False)
    trainer.fit()
    return {"epochs": epochs, "seconds": time.perf_counter() - start}


def _epoch_line(entry: dict[str, Any]) -> str:
    parts = [f"{entry['clusters']} clusters", f"{entry['outliers']} outliers", f"loss {entry['loss']:.3f}"]
    if "eps" in entry:
        parts.append(f"eps {entry['eps']:.3f} ({entry['unreliable']} unreliable left out)")
    if "pair_precision" in entry:
        parts.append(f"pairs P {entry['pair_precision']:.2f} R {entry['pair_recall']:.2f}")
    if "stability" in entry:
        parts.append(f"stability {entry['stability']:.2f}")
    if "metrics" in entry:
        mean = entry["metrics"]["mean"]
        parts.append(f"mean mAP {mean['mAP']:.1f} R1 {mean['rank1']:.1f}")
    return ", ".join(parts)


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from hhcl.config import apply_overrides, load_config
    from hhcl.models import build_model, load_weights

    log = logging.getLogger("benchmarks.adaptation")
    started = time.perf_counter()
    load_before = machine_load()
    torch.set_num_threads(args.threads)
    overrides = [f"model.init_weights={args.weights}", "train.device=cpu", f"train.num_threads={args.threads}",
                 f"dataset.num_workers={args.workers}", *args.set]
    config = load_config(args.config, overrides)
    protocol = load_protocol(Path(args.data_root))
    log.info("pool: %d training images from %d folders; test sets: %s", len(protocol.train), len(FOLDERS),
             ", ".join(f"{t.name} {len(t.query)} q / {len(t.gallery)} g" for t in protocol.test_sets))

    tick = time.perf_counter()
    model = build_model(config.model.arch, pooling=config.model.pooling, num_features=config.model.num_features,
                        last_stride=config.model.last_stride)
    load_weights(model, args.weights)
    everything = _extract(model, list(protocol.train) + evaluation_items(protocol), config, "cpu")
    train_features = everything[:len(protocol.train)]
    zero_shot = evaluate_test_sets(everything[len(protocol.train):], protocol)
    zero_shot_seconds = time.perf_counter() - tick
    log.info("zero-shot: mean mAP %.1f, rank-1 %.1f (%.0f s)", zero_shot["mean"]["mAP"], zero_shot["mean"]["rank1"],
             zero_shot_seconds)

    adapted = run_training(config, protocol, supervised=False, initial_train_features=train_features.clone(),
                           evaluate_every_epoch=not args.final_only, log=log)
    oracle = None
    if args.oracle:
        # from the config read at the start: the preset file may change while the benchmark runs
        oracle_config = apply_overrides(copy.deepcopy(config), ["train.supervised=true"])
        oracle = run_training(oracle_config, protocol, supervised=True, initial_train_features=train_features.clone(),
                              evaluate_every_epoch=False, log=log)
    return {
        "label": args.label,
        "note": args.note,
        "command": "python -m benchmarks.adaptation " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config_file": str(args.config),
        "overrides": list(args.set),
        "config": config.to_dict(),
        "threads": args.threads,
        "load_average": {"before": load_before, "after": machine_load()},
        "cpu_count": os.cpu_count(),
        "pool_images": len(protocol.train),
        "test_sets": {t.name: {"queries": len(t.query), "gallery": len(t.gallery)} for t in protocol.test_sets},
        "zero_shot": zero_shot,
        "zero_shot_seconds": zero_shot_seconds,
        "adapted": adapted,
        "oracle": oracle,
        "seconds": time.perf_counter() - started,
        "finished": time.strftime("%Y-%m-%d %H:%M"),
    }


# -- the table ---------------------------------------------------------------------------------------


def final_metrics(run: dict[str, Any] | None) -> dict[str, dict[str, float]] | None:
    if not run:
        return None
    return next((entry["metrics"] for entry in reversed(run["epochs"]) if "metrics" in entry), None)


def _cell(metrics: dict[str, float] | None) -> str:
    return f"{metrics['mAP']:.1f} / {metrics['rank1']:.1f}" if metrics else "-"


IGNORED_KEYS = ("model.init_weights", "train.num_threads", "dataset.num_workers", "train.device")


def config_differences(reference: dict[str, dict], config: dict[str, dict],
                       defaults: dict[str, dict] | None = None) -> list[tuple[str, Any]]:
    """``(section.key, value)`` where ``config`` differs from ``reference`` (run-environment keys left out).

    A key that ``config`` lacks (a run stored before the option existed) counts with its value in
    ``defaults``, the option's default: that is how such a run behaved.
    """
    defaults = defaults or {}
    sections = [*config, *(section for section in defaults if section not in config)]
    changed = []
    for section in sections:
        reference_values = reference.get(section) or {}
        assumed = {key: value for key, value in (defaults.get(section) or {}).items() if key in reference_values}
        for key, value in {**assumed, **(config.get(section) or {})}.items():
            name = f"{section}.{key}"
            if name not in IGNORED_KEYS and reference_values.get(key, _ABSENT) != value:
                changed.append((name, value))
    return changed


def render_section(results: Sequence[dict[str, Any]], findings: str = "") -> str:
    """The markdown between the markers: main tables from the ``adapt`` run, one row per variant, then ``findings``."""
    from hhcl.config import Config

    defaults = Config().to_dict()  # the value of an option for the runs stored before it existed
    main = next((result for result in results if result["label"] == MAIN_LABEL), None)
    oracle_run = main if main and main.get("oracle") else next((r for r in results if r.get("oracle")), None)
    oracle = final_metrics(oracle_run["oracle"]) if oracle_run else None
    lines = [BEGIN_MARKER, "## Adaptation to unlabeled real cameras (`python -m benchmarks.adaptation`)", "",
             "MSMT17-trained `osnet_x0_25` adapted without labels to the pooled train halves of the five real "
             "folders of `../shared/data`; each test half evaluated on its own (prid2011 cross-camera, the others "
             "one query per identity). Cells are mAP / rank-1 in percent. Protocol and options: the docstring "
             "of `benchmarks/adaptation.py`. Pair precision/recall compare the pseudo-labels with the hidden "
             "identities (diagnosis only); stability is the pair F-score between consecutive epochs' "
             "pseudo-labels (no label used).", ""]
    if main is None:
        lines += ["No run of the `adapt` preset is stored yet.", ""]
    else:
        names = list(main["test_sets"])
        header = "| model | " + " | ".join(names) + " | mean |"
        lines += [f"Command: `{main['command']}` ({main['finished']}, {main['threads']} threads, "
                  f"load average {main['load_average']['before']} before / {main['load_average']['after']} after "
                  f"on {main['cpu_count']} cores; wall time {main['seconds'] / 60:.1f} min: zero-shot "
                  f"{main['zero_shot_seconds']:.0f} s, adapted {main['adapted']['seconds']:.0f} s"
                  + (f", oracle {main['oracle']['seconds']:.0f} s" if main.get("oracle") else "") + ").", "",
                  f"Training pool: {main['pool_images']} images, no identities. Test sets (queries / gallery): "
                  + ", ".join(f"{name} {v['queries']} / {v['gallery']}" for name, v in main["test_sets"].items())
                  + ".", "", header, "|" + "---|" * (len(names) + 2)]

        def row(title: str, metrics) -> str:
            return f"| {title} | " + " | ".join(_cell(metrics.get(name) if metrics else None)
                                                for name in names + ["mean"]) + " |"

        lines.append(row("zero-shot", main["zero_shot"]))
        for entry in main["adapted"]["epochs"]:
            if "metrics" in entry:
                lines.append(row(f"adapted, epoch {entry['epoch']}", entry["metrics"]))
        if oracle:
            source = "" if oracle_run is main else f", from run `{oracle_run['label']}`"
            lines.append(row(f"oracle (true identities{source})", oracle))
        adapted_final = final_metrics(main["adapted"])
        if oracle and adapted_final:
            closed = gap_closed(main["zero_shot"]["mean"]["mAP"], adapted_final["mean"]["mAP"], oracle["mean"]["mAP"])
            above = [name for name in names if adapted_final[name]["mAP"] > main["zero_shot"][name]["mAP"]]
            lines += ["", f"Goal check (last epoch, chosen in advance): mean mAP {adapted_final['mean']['mAP']:.1f} vs "
                      f"zero-shot {main['zero_shot']['mean']['mAP']:.1f} and oracle {oracle['mean']['mAP']:.1f}: "
                      + (f"{100 * closed:.0f}% of the gap closed" if closed is not None else "no gap")
                      + f"; above zero-shot on {len(above)} of {len(names)} test sets"
                      + (f" (not on {', '.join(n for n in names if n not in above)})" if len(above) < len(names) else "")
                      + "."]
        seed_runs = [main] + [result for result in results if result is not main and
                              [key for key, _ in config_differences(main["config"], result["config"], defaults)] == ["train.seed"]]
        if oracle and len(seed_runs) > 1:
            lines += ["", seed_summary(seed_runs, oracle["mean"]["mAP"], names)]
        lines += ["", "| epoch | eps | clusters | outliers (unreliable) | pair precision | pair recall | stability | "
                  "loss | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for entry in main["adapted"]["epochs"]:
            seconds = sum(entry["train_seconds"].values()) + entry["measure_seconds"]
            lines.append(f"| {entry['epoch']} | " + (f"{entry['eps']:.2f}" if "eps" in entry else "-")
                         + f" | {entry['clusters']} | {entry['outliers']} ({entry.get('unreliable', 0)}) | "
                         f"{entry.get('pair_precision', float('nan')):.3f} | {entry.get('pair_recall', float('nan')):.3f} | "
                         + (f"{entry['stability']:.3f}" if "stability" in entry else "-")
                         + f" | {entry['loss']:.3f} | {seconds:.0f} |")
    variants = [result for result in results if result["label"] != MAIN_LABEL]
    if variants:
        lines += ["", "Variants (one run each; the adapted model after its last epoch; \"what changed\" is the "
                  "difference from the main run's config; gap closed against the main run's oracle):", "",
                  "| variant | what changed | mean mAP / R1 | worst set vs zero-shot (mAP) | gap closed | "
                  "last pair P / R | wall min | note |", "|---|---|---|---|---|---|---|---|"]
        for result in sorted(results, key=lambda r: r["finished"]):
            metrics = final_metrics(result["adapted"])
            if metrics is None:
                continue
            deltas = {name: metrics[name]["mAP"] - result["zero_shot"][name]["mAP"] for name in result["test_sets"]}
            worst = min(deltas, key=deltas.get)
            closed = (gap_closed(result["zero_shot"]["mean"]["mAP"], metrics["mean"]["mAP"], oracle["mean"]["mAP"])
                      if oracle else None)
            last = result["adapted"]["epochs"][-1]
            changed = ", ".join(f"`{key}={value}`" for key, value in
                                config_differences(main["config"] if main else {}, result["config"],
                                                   defaults)) or "-"
            lines.append(f"| {result['label']} | {changed} | {_cell(metrics['mean'])} | {worst} {deltas[worst]:+.1f} | "
                         + (f"{100 * closed:.0f}%" if closed is not None else "-")
                         + f" | {last.get('pair_precision', float('nan')):.2f} / {last.get('pair_recall', float('nan')):.2f}"
                         f" | {result['seconds'] / 60:.1f} | {result.get('note') or ''} |")
    if findings.strip():
        lines += ["", findings.strip()]
    lines.append(END_MARKER)
    return "\n".join(lines)


def seed_summary(runs: Sequence[dict[str, Any]], oracle_mean: float, names: Sequence[str]) -> str:
    """One line on runs of the same config with other training seeds: is the goal met in each?"""
    parts, every_set = [], 0
    per_set = {name: [] for name in names}
    for run in runs:
        final = final_metrics(run["adapted"])
        closed = gap_closed(run["zero_shot"]["mean"]["mAP"], final["mean"]["mAP"], oracle_mean)
        seed = run["config"].get("train", {}).get("seed", "?")
        parts.append(f"seed {seed}: {final['mean']['mAP']:.1f}" + (f" ({100 * closed:.0f}%)" if closed is not None else ""))
        every_set += all(final[name]["mAP"] > run["zero_shot"][name]["mAP"] for name in names)
        for name in names:
            per_set[name].append(final[name]["mAP"] - run["zero_shot"][name]["mAP"])
    spread = ", ".join(f"{name} {min(values):+.1f} to {max(values):+.1f}" for name, values in per_set.items())
    return (f"Across {len(runs)} training seeds (`train.seed`; same config otherwise), mean mAP and gap closed: "
            + "; ".join(parts) + f". Above zero-shot on every test set in {every_set} of {len(runs)} runs; "
            f"change against zero-shot per set: {spread}.")


def replace_section(document: str, section: str) -> str:
    """``document`` with the text between the adaptation markers replaced (appended when absent)."""
    pattern = re.compile(re.escape(BEGIN_MARKER) + ".*?" + re.escape(END_MARKER), re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section, document, count=1)
    if not document.strip():
        document = "# Benchmarks\n"
    return document.rstrip("\n") + "\n\n" + section + "\n"


def stored_results(folder: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def write_document(results: Sequence[dict[str, Any]], path: Path = DOC_PATH) -> str:
    findings = FINDINGS_FILE.read_text() if FINDINGS_FILE.is_file() else ""
    section = render_section(results, findings)
    document = path.read_text() if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(replace_section(document, section))
    return section


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=MAIN_LABEL, help="preset or YAML file (default: the adapt preset)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--label", default=MAIN_LABEL, help="name of the stored run (default: adapt, the main table)")
    parser.add_argument("--note", default="", help="a remark shown in the variants table")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA))
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="image loader processes (default 1)")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", help="skip the supervised oracle")
    parser.add_argument("--final-only", action="store_true", help="evaluate the adapted model after its last epoch only")
    parser.add_argument("--no-write", action="store_true", help="store nothing, print the JSON")
    parser.add_argument("--render", action="store_true", help="only rebuild the docs section from stored runs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not args.render:
        result = run_benchmark(args)
        if args.no_write:
            print(json.dumps(result, indent=1))
            return 0
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        (RESULTS_DIR / f"{args.label}.json").write_text(json.dumps(result, indent=1))
    print(write_document(stored_results()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
