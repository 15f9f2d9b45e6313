"""`hhcl demo`: generate the synthetic set, train a small backbone from scratch with HHCL, show the gain.

No download and no GPU: the whole run takes a few minutes on a 2-core CPU. It prints the test
mAP and rank-1 of the randomly initialised model and of the trained one, and writes a picture of
a few ranked lists (green: the same identity, red: another).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from hhcl.cli.arguments import add_progress_argument, show_progress
from hhcl.config import load_config

RUN_FOLDER = "run"
PICTURE_FILE = "ranked_lists.png"
NUM_PICTURE_QUERIES = 6
PICTURE_TOPK = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="hhcl-demo", metavar="DIR",
                        help=f"where the demo writes: the synthetic images (DIR/synthetic unless --root), the run "
                             f"(DIR/{RUN_FOLDER}, replaced on every demo) and {PICTURE_FILE} (default: hhcl-demo)")
    parser.add_argument("--root", metavar="DIR", help="where the synthetic set is generated (reused when present)")
    parser.add_argument("--json", action="store_true",
                        help='print only {"before": {"mAP", "rank1"}, "after": {...}, "seconds"}, in percent')
    parser.add_argument("--quick", action="store_true",
                        help="a smaller run (40 people, 6 short epochs, about a minute) that still learns")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of the demo preset, e.g. --set train.epochs=5")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from hhcl.engine import Trainer, evaluate_model
    from hhcl.engine.hooks import CHECKPOINT_FILE

    start = time.perf_counter()
    output = Path(args.output).expanduser()
    root = Path(args.root).expanduser() if args.root else output / "synthetic"
    config = load_config("demo_quick" if args.quick else "demo", [f"dataset.root={json.dumps(str(root))}",
                                                                   *args.overrides])
    if args.json:
        # stdout carries the JSON alone; the console shows warnings only (the run's log file keeps all)
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
    log = logging.getLogger("hhcl")

    run_dir = output / RUN_FOLDER
    if run_dir.exists():
        shutil.rmtree(run_dir)  # the demo's own run of last time: each demo starts from scratch
    log.info("generating (or reusing) the synthetic set in %s", root)
    trainer = Trainer(config, run_dir, progress=not args.json and show_progress(args))
    log.info("%s", trainer.dataset.summary())
    before = evaluate_model(trainer.model, trainer.dataset, config, trainer.device, trainer.precision)
    log.info("before training (random initialisation): mAP %.1f%%, rank-1 %.1f%%", before["mAP"], before["rank1"])
    summary = trainer.fit()
    after = summary["final"]
    picture = draw_demo_ranked_lists(trainer, output / PICTURE_FILE)
    # The demo's run is not continued: its checkpoint (weights, optimizer moments, generators) only
    # takes room. model.pth stays for search, extract and export.
    (run_dir / CHECKPOINT_FILE).unlink(missing_ok=True)
    seconds = time.perf_counter() - start

    if args.json:
        print(json.dumps({"before": _headline(before), "after": _headline(after), "seconds": round(seconds, 1)}))
        return 0
    print(f"synthetic set: {len(trainer.dataset.train)} training images (labels unused), "
          f"{len(trainer.dataset.query)} queries, {len(trainer.dataset.gallery)} gallery images")
    print(f"before training: mAP {before['mAP']:5.1f}%  rank-1 {before['rank1']:5.1f}%")
    print(f"after training:  mAP {after['mAP']:5.1f}%  rank-1 {after['rank1']:5.1f}%   "
          f"({after['mAP'] - before['mAP']:+.1f} mAP points)")
    print(f"{seconds:.0f} s; model {run_dir / 'model.pth'}; ranked lists {picture}")
    return 0


def _headline(metrics: dict[str, float]) -> dict[str, float]:
    return {"mAP": round(metrics["mAP"], 2), "rank1": round(metrics["rank1"], 2)}


def draw_demo_ranked_lists(trainer, output_path: Path) -> Path:
    """A few queries of the test split with their top gallery matches under the trained model.

    Gallery images of the query's identity seen by the query's camera are left out, as the
    evaluation protocol does.
    """
    from hhcl.models import extract_features
    from hhcl.retrieval.visualize import draw_ranked_lists

    dataset, config = trainer.dataset, trainer.config
    query, gallery = list(dataset.query), list(dataset.gallery)
    features = extract_features(trainer.model, query + gallery, batch_size=config.train.extract_batch_size,
                                device=trainer.device, height=config.dataset.height, width=config.dataset.width,
                                num_workers=config.dataset.num_workers, precision=trainer.precision,
                                progress=False).cpu()
    query_features, gallery_features = features[: len(query)], features[len(query):]
    chosen = np.linspace(0, len(query) - 1, num=min(NUM_PICTURE_QUERIES, len(query))).round().astype(int)
    gallery_pids = np.array([pid for _, pid, _ in gallery])
    gallery_cams = np.array([cam for _, _, cam in gallery])
    ranked_paths, ranked_pids, ranked_distances = [], [], []
    for index in chosen:
        _, pid, cam = query[index]
        distance = (1.0 - gallery_features @ query_features[index]).numpy()
        allowed = ~((gallery_pids == pid) & (gallery_cams == cam))
        order = [g for g in np.argsort(distance, kind="stable") if allowed[g]][:PICTURE_TOPK]
        ranked_paths.append([gallery[g][0] for g in order])
        ranked_pids.append([int(gallery_pids[g]) for g in order])
        ranked_distances.append([float(distance[g]) for g in order])
    return draw_ranked_lists([query[i][0] for i in chosen], ranked_paths, output_path,
                             query_pids=[query[i][1] for i in chosen], ranked_pids=ranked_pids,
                             distances=ranked_distances)
