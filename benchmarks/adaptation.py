"""Adapting a pretrained re-ID model to unlabeled real cameras: zero-shot, HHCL and an oracle, per protocol.

    python -m benchmarks.adaptation --protocol cuhk01 --seeds 1 2 3   # the adapt preset, 3 training seeds
    python -m benchmarks.adaptation --protocol folders --label lr-3.5e-4 --set optim.lr=3.5e-4 --no-oracle
    python -m benchmarks.adaptation --protocol pairs --render         # rewrite the tables from stored runs

The model is the MSMT17-trained ``osnet_x0_25`` of ``../shared/models``; the protocols (which real
images pool into the unlabeled training set, which test) are those of
:mod:`benchmarks.adaptation_protocols`: ``folders``, ``cuhk01``, ``pairs``, ``many-cameras`` and
``duke`` (skipped, saying why, when DukeMTMC-reID is not on this machine).

Three models are measured: zero-shot (the pretrained model as is, once per protocol), adapted (HHCL
on the pool, evaluated after every epoch, once per training seed) and the oracle (the same training
with ``train.supervised`` on the pool's true identities, first seed only, evaluated at the end). Per
epoch it also records the clusters, the outliers, the mutual-neighbour pairs, the guard's
statistics and decision (label-free), and the pair precision and recall of the pseudo-labels
against the hidden identities (a diagnosis only: nothing reads them to decide anything).

Each run is stored as JSON in ``benchmarks/results/adaptation/<protocol>/<label>[-seed-N].json``; the
protocol's blocks of ``docs/benchmarks.md`` are rebuilt from its stored runs
(:mod:`benchmarks.adaptation_report`). The evaluation pass after an epoch also extracts the
training pool, and the next epoch clusters those features instead of extracting again when they are
the trained model's (without ``model.init_mix``): a hook supplies them to the trainer.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.adaptation_protocols import PROTOCOL_NAMES, Item, Protocol, ProtocolUnavailable, load_protocol
from benchmarks.adaptation_report import MAIN_LABEL, RESULTS_DIR, stored_results, write_document
from benchmarks.report import cpu_description, git_commit, machine_load

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data"
DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "models" / "osnet_x0_25_msmt17.pth"

# -- measuring ---------------------------------------------------------------------------------------


def mean_metrics(per_set: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([metrics[key] for metrics in per_set.values()])) for key in ("mAP", "rank1", "mINP")}


def evaluate_test_sets(features, protocol: Protocol) -> dict[str, dict[str, float]]:
    """mAP, rank-1 and mINP in percent per test set, plus ``mean``; ``features`` rows follow :func:`evaluation_items`."""
    from hhcl.evaluation.model import split_metrics

    results: dict[str, dict[str, float]] = {}
    start = 0
    for test_set in protocol.test_sets:
        num_query, num_gallery = len(test_set.query), len(test_set.gallery)
        query_features = features[start:start + num_query]
        gallery_features = features[start + num_query:start + num_query + num_gallery]
        start += num_query + num_gallery
        metrics, _ = split_metrics(query_features, gallery_features, test_set.query, test_set.gallery,
                                   max_rank=1, cross_camera=test_set.cross_camera)
        results[test_set.name] = {"mAP": metrics["mAP"], "rank1": metrics["rank1"], "mINP": metrics["mINP"]}
    results["mean"] = mean_metrics({name: value for name, value in results.items()})
    return results


def evaluation_items(protocol: Protocol) -> list[Item]:
    return [item for test_set in protocol.test_sets for item in test_set.query + test_set.gallery]


def _extract(model, items, config, device):
    from hhcl.models import extract_features

    return extract_features(model, items, batch_size=config.train.extract_batch_size, device=device,
                            height=config.dataset.height, width=config.dataset.width,
                            num_workers=config.dataset.num_workers, precision="fp32", progress=False,
                            compile=config.train.compile)


def run_training(config, protocol: Protocol, *, supervised: bool, initial_train_features, evaluate_every_epoch: bool,
                 log: logging.Logger) -> dict[str, Any]:
    """Train one model on the pool; per epoch the diagnosis, the guard, and the test metrics when due."""
    from hhcl.cluster.diagnostics import pair_scores
    from hhcl.data.dataset import ReIDDataset
    from hhcl.engine import Hook, Trainer

    train = protocol.train if supervised else protocol.unlabeled_train()
    dataset = ReIDDataset("adaptation-pool", train=list(train), camera_sources=dict(protocol.camera_sources))
    true_ids = protocol.train_identities()
    test_images = evaluation_items(protocol)
    epochs: list[dict[str, Any]] = []

    class Measure(Hook):
        """Collects each epoch's figures, and hands the trainer the pool features its evaluation pass extracted."""

        def __init__(self) -> None:
            self.cached_features = initial_train_features
            self.stats: dict[str, Any] = {}
            self.previous_labels: np.ndarray | None = None

        def train_features(self, trainer: Trainer):
            # the zero-shot model is built as the trainer builds its own (build_starting_model), so its
            # pool features serve the first epoch
            features, self.cached_features = self.cached_features, None
            return features

        def after_cluster(self, trainer: Trainer, assignment) -> None:
            self.stats = dict(assignment.stats)

        def after_epoch(self, trainer: Trainer, record) -> None:
            tick = time.perf_counter()
            labels = np.asarray(trainer.pseudo_labels, dtype=np.int64)
            entry: dict[str, Any] = {
                "epoch": record.epoch, "clusters": record.num_clusters, "outliers": record.num_outliers,
                "images": record.num_images, "loss": record.loss, "lr": record.lr,
                "train_seconds": dict(record.seconds),
            }
            for key in ("eps", "mutual_pairs", "cameras_mostly_uncentred"):
                if key in self.stats:
                    entry[key] = self.stats[key]
            if "eps" in self.stats and "unreliable_images" in self.stats:
                entry["unreliable"] = self.stats["unreliable_images"]
            if record.guard is not None:
                entry["guard"] = record.guard
            if record.final_guard is not None:
                entry["final_guard"] = record.final_guard
            if not supervised:
                truth = pair_scores(labels, true_ids)
                entry["pair_precision"], entry["pair_recall"] = truth["precision"], truth["recall"]
                if self.previous_labels is not None:
                    entry["stability"] = pair_scores(labels, self.previous_labels)["f_score"]
            self.previous_labels = labels
            last = record.epoch == trainer.config.train.epochs or trainer.stop_reason is not None
            if evaluate_every_epoch or last:
                output = trainer.output_model()
                # the pool's features serve the next clustering only when they are the trained model's
                reuse = not last and not supervised and output is trainer.model
                items = (list(dataset.train) if reuse else []) + test_images
                features = _extract(output, items, trainer.config, trainer.device)
                trainer.model.train()
                if reuse:
                    self.cached_features = features[:len(dataset.train)]
                entry["metrics"] = evaluate_test_sets(features[len(items) - len(test_images):], protocol)
            entry["measure_seconds"] = time.perf_counter() - tick
            epochs.append(entry)
            log.info("%s epoch %d: %s", "oracle" if supervised else "adapted", record.epoch, _epoch_line(entry))

    start = time.perf_counter()
    trainer = Trainer(config, None, dataset=dataset, hooks=[Measure()], progress=False)
    trainer.fit()
    return {"epochs": epochs, "seconds": time.perf_counter() - start, "stop_reason": trainer.stop_reason,
            "trained_epochs": trainer.trained_epochs}


def _epoch_line(entry: dict[str, Any]) -> str:
    parts = [f"{entry['clusters']} clusters", f"{entry['outliers']} outliers", f"loss {entry['loss']:.3f}"]
    if "eps" in entry:
        parts.append(f"eps {entry['eps']:.3f} ({entry.get('unreliable', 0)} unreliable left out)")
    if "mutual_pairs" in entry:
        parts.append(f"{entry['mutual_pairs']} mutual pairs")
    if "pair_precision" in entry:
        parts.append(f"pairs P {entry['pair_precision']:.2f} R {entry['pair_recall']:.2f}")
    if "stability" in entry:
        parts.append(f"stability {entry['stability']:.2f}")
    if "guard" in entry:
        from hhcl.engine.run_log import guard_summary

        parts.append(guard_summary(entry["guard"]))
        if "final_guard" in entry:
            parts.append(f"its update: {guard_summary(entry['final_guard'])}")
    if "metrics" in entry:
        mean = entry["metrics"]["mean"]
        parts.append(f"mean mAP {mean['mAP']:.1f} R1 {mean['rank1']:.1f}")
    return ", ".join(parts)


def zero_shot_features(config, protocol: Protocol, weights: str):
    """``(pool features, zero-shot metrics, seconds)`` of the starting model, built as training builds it:
    with ``model.parts`` the zero-shot descriptor holds the stripes too, so that an option's change
    against zero-shot is what its training did, not what a wider descriptor did."""
    from hhcl.config import apply_overrides
    from hhcl.engine.setup import build_starting_model

    tick = time.perf_counter()
    model = build_starting_model(apply_overrides(copy.deepcopy(config), [f"model.init_weights={weights}"]))
    everything = _extract(model, list(protocol.train) + evaluation_items(protocol), config, "cpu")
    return (everything[:len(protocol.train)], evaluate_test_sets(everything[len(protocol.train):], protocol),
            time.perf_counter() - tick)


def run_benchmark(args: argparse.Namespace, seed: int | None, zero_shot) -> dict[str, Any]:
    """One run of the preset on the protocol (with ``seed`` as ``train.seed`` when given), from the
    protocol's ``zero_shot`` (:func:`zero_shot_features`, computed once for all seeds)."""
    import torch

    from hhcl.config import apply_overrides, load_config

    log = logging.getLogger("benchmarks.adaptation")
    started = time.perf_counter()
    load_before = machine_load()
    torch.set_num_threads(args.threads)
    overrides = [f"model.init_weights={args.weights}", "train.device=cpu", f"train.num_threads={args.threads}",
                 f"dataset.num_workers={args.workers}", *args.set]
    if seed is not None:
        overrides.append(f"train.seed={seed}")
    config = load_config(args.config, overrides)
    protocol = load_protocol(Path(args.data_root), name=args.protocol,
                             duke_root=Path(args.duke_root) if args.duke_root else None)
    log.info("%s: %d training images in %d cameras; test sets: %s", args.protocol, len(protocol.train),
             len(protocol.camera_sources),
             ", ".join(f"{t.name} {len(t.query)} q / {len(t.gallery)} g" for t in protocol.test_sets))
    train_features, zero_metrics, zero_seconds = zero_shot
    log.info("zero-shot: mean mAP %.1f, rank-1 %.1f (%.0f s)", zero_metrics["mean"]["mAP"],
             zero_metrics["mean"]["rank1"], zero_seconds)

    adapted = run_training(config, protocol, supervised=False, initial_train_features=train_features.clone(),
                           evaluate_every_epoch=not args.final_only, log=log)
    oracle = None
    if args.oracle:
        # from the config read at the start: the preset file may change while the benchmark runs
        oracle_config = apply_overrides(copy.deepcopy(config), ["train.supervised=true", "guard.enabled=false"])
        oracle = run_training(oracle_config, protocol, supervised=True, initial_train_features=train_features.clone(),
                              evaluate_every_epoch=False, log=log)
    return {
        "label": args.label if seed is None or seed == args.seeds[0] else f"{args.label}-seed-{seed}",
        "protocol": args.protocol,
        "note": args.note,
        "command": "python -m benchmarks.adaptation " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "config_file": str(args.config),
        "overrides": list(args.set) + ([f"train.seed={seed}"] if seed is not None else []),
        "config": config.to_dict(),
        "threads": args.threads,
        "load_average": {"before": load_before, "after": machine_load()},
        "cpu_count": os.cpu_count(),
        "cpu": cpu_description(),
        "commit": git_commit(),
        "pool_images": len(protocol.train),
        "pool_cameras": len(protocol.camera_sources),
        "test_sets": {t.name: {"queries": len(t.query), "gallery": len(t.gallery)} for t in protocol.test_sets},
        "zero_shot": zero_metrics,
        "zero_shot_seconds": zero_seconds,
        "adapted": adapted,
        "oracle": oracle,
        "seconds": time.perf_counter() - started,
        "finished": time.strftime("%Y-%m-%d %H:%M"),
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", default="folders", choices=PROTOCOL_NAMES,
                        help="which real images pool and which test (default: folders)")
    parser.add_argument("--config", default=MAIN_LABEL, help="preset or YAML file (default: the adapt preset)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override, repeatable")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="training seeds, one run each (default: the preset's train.seed); the first keeps "
                             "--label, the others are stored as LABEL-seed-N")
    parser.add_argument("--label", default=MAIN_LABEL, help="name of the stored run (default: adapt, the main table)")
    parser.add_argument("--note", default="", help="a remark shown in the variants table")
    parser.add_argument("--data-root", default=str(DEFAULT_DATA))
    parser.add_argument("--duke-root", default=None, help="DukeMTMC-reID for --protocol duke")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--workers", type=int, default=1, help="image loader processes (default 1)")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", help="skip the supervised oracle")
    parser.add_argument("--final-only", action="store_true", help="evaluate the adapted model after its last epoch only")
    parser.add_argument("--no-write", action="store_true", help="store nothing, print the JSON")
    parser.add_argument("--render", action="store_true", help="only rebuild the docs blocks from stored runs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    folder = RESULTS_DIR / args.protocol
    if not args.render:
        from hhcl.config import load_config

        seeds = args.seeds or [None]
        args.seeds = seeds
        try:
            protocol = load_protocol(Path(args.data_root), name=args.protocol,
                                     duke_root=Path(args.duke_root) if args.duke_root else None)
        except ProtocolUnavailable as reason:
            print(f"protocol {args.protocol} skipped: {reason}")
            return 0
        zero_shot = zero_shot_features(load_config(args.config, [*args.set, "train.device=cpu"]), protocol,
                                       args.weights)
        for index, seed in enumerate(seeds):
            oracle = args.oracle
            args.oracle = oracle and index == 0
            result = run_benchmark(args, seed, zero_shot)
            args.oracle = oracle
            if args.no_write:
                print(json.dumps(result, indent=1))
                continue
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{result['label']}.json").write_text(json.dumps(result, indent=1))
        if args.no_write:
            return 0
    print(write_document(args.protocol, stored_results(folder)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
