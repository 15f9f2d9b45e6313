"""`hhcl train --config PRESET --root DIR --output RUN_DIR [options]`: HHCL training.

Run several processes with ``torchrun --nproc_per_node=N -m hhcl train ...`` (DDP).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path

from hhcl.cli.arguments import add_data_arguments, add_progress_argument, options_from_args, show_progress
from hhcl.config import LOSS_FORMS, MEMORY_MODES, PRECISION_CHOICES, load_config

# flag -> config key; a flag left unset keeps the preset's value
FLAG_KEYS = {
    "dataset": "dataset.name",
    "root": "dataset.root",
    "height": "dataset.height",
    "width": "dataset.width",
    "num_workers": "dataset.num_workers",
    "arch": "model.arch",
    "weights": "model.weights",
    "init_weights": "model.init_weights",
    "parts": "model.parts",
    "eps": "cluster.eps",
    "ensemble_eps": "cluster.ensemble_eps",
    "memory": "memory.mode",
    "hard_weight": "memory.hard_weight",
    "loss_form": "memory.loss_form",
    "lr": "optim.lr",
    "epochs": "train.epochs",
    "iters": "train.iters",
    "batch_size": "train.batch_size",
    "num_instances": "train.num_instances",
    "seed": "train.seed",
    "device": "train.device",
    "precision": "train.precision",
    "eval_every": "evaluation.eval_every",
}
SWITCH_KEYS = {
    "supervised": "train.supervised",
    "camera_proxies": "memory.camera_proxies",
    "sync_bn": "model.sync_bn",
    "select_best": "evaluation.select_best",
    "compile": "train.compile",
    "rerank": "evaluation.rerank",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="market1501_resnet50",
                        help="a preset name (hhcl config list) or a YAML file (default: market1501_resnet50)")
    parser.add_argument("--output", required=True, metavar="RUN_DIR",
                        help="the run folder: config.yaml, train.log, TensorBoard events, checkpoint.pth, "
                             "model.pth, metrics.json")
    parser.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                        help="continue RUN_DIR/checkpoint.pth (or the given checkpoint); without one yet, start")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="dataset name, e.g. market1501 or folder (overrides the preset)")
    data.add_argument("--root", nargs="+", help="the dataset folder; several folders pool into one training set")
    add_data_arguments(data, input_size="train")
    data.add_argument("--num-workers", type=int)
    model = parser.add_argument_group("model")
    model.add_argument("--arch", help="backbone, e.g. resnet50, resnet50_ibn_a, osnet_x1_0, or vit_small "
                                      "(ViT-S/16 with timm's parameter names: timm and DeiT-S files load)")
    model.add_argument("--weights", metavar="FILE", help="backbone initialisation, e.g. ImageNet ResNet-50 weights")
    model.add_argument("--init-weights", metavar="FILE",
                       help="start from a whole re-ID model (any file load_weights accepts), e.g. for domain adaptation")
    model.add_argument("--parts", type=int, metavar="P",
                       help="P horizontal stripes with features of their own after the global one, trained by "
                            "selective contrast (model.parts; default 0: off; CNN backbones)")
    model.add_argument("--sync-bn", action="store_true", default=None, help="SyncBatchNorm under DDP (CUDA)")
    method = parser.add_argument_group("method")
    method.add_argument("--memory", choices=MEMORY_MODES, help="cluster memory (default hybrid: HHCL)")
    method.add_argument("--hard-weight", type=float, metavar="W", help="weight of the hard term (default 0.5)")
    method.add_argument("--loss-form", choices=LOSS_FORMS,
                        help="paper: w*CE_hard + (1-w)*CE_centroid; official: the authors' code, "
                             "w*(CE_hard + (1-w)*CE_centroid)")
    method.add_argument("--eps", type=float, help="DBSCAN eps on the Jaccard distance")
    method.add_argument("--ensemble-eps", type=float, nargs="+", metavar="EPS",
                        help="a clustering ensemble: also cluster at each of these eps, each granularity with a "
                             "memory and loss term of its own (only the images whose labels nest take part); "
                             "cluster.ensemble_eps")
    method.add_argument("--camera-proxies", action="store_true", default=None,
                        help="add camera-aware proxies (CAP): one memory row per pseudo-identity and camera, "
                             "with an intra- and an inter-camera loss; memory.camera_proxies (memory.camera_proxy_scope="
                             "cross_camera: only for the identities seen by two cameras or more)")
    method.add_argument("--supervised", action="store_true", default=None,
                        help="train the memories on ground-truth identities (upper bound)")
    loop = parser.add_argument_group("loop")
    loop.add_argument("--epochs", type=int)
    loop.add_argument("--iters", type=int, help="iterations per epoch")
    loop.add_argument("--batch-size", type=int, help="images per step, over all processes")
    loop.add_argument("--num-instances", type=int, help="images per pseudo-identity in a batch")
    loop.add_argument("--lr", type=float)
    loop.add_argument("--seed", type=int)
    loop.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    loop.add_argument("--precision", choices=PRECISION_CHOICES,
                      help="auto: AMP bf16 (or fp16) on CUDA, fp32 on CPU; bf16/fp16 use autocast")
    loop.add_argument("--compile", action="store_true", default=None,
                      help="extract features through torch.compile (train.compile): the same features, faster "
                           "after a one-off compile per model; needs a C++ compiler on CPU, else runs eagerly")
    loop.add_argument("--eval-every", type=int, metavar="EPOCHS", help="evaluate every N epochs (0: at the end)")
    loop.add_argument("--select-best", action="store_true", default=None,
                      help="keep the epoch with the best test mAP (uses the test labels: optimistic)")
    loop.add_argument("--rerank", action="store_true", default=None, help="k-reciprocal re-ranking at evaluation")
    loop.add_argument("--inspect", action="store_true",
                      help="keep each epoch's pseudo-labels in RUN_DIR/inspect/ for `hhcl inspect RUN_DIR` (a page)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set cluster.k1=20 (repeatable; applied last)")
    add_progress_argument(parser)


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The config overrides the flags stand for, then the --set ones (which win)."""
    overrides = []
    for flag, key in FLAG_KEYS.items():
        value = getattr(args, flag, None)
        if flag == "root" and len(value or ()) == 1:  # one folder, not a pool of one
            value = value[0]
        if value is not None:
            overrides.append(f"{key}={json.dumps(value)}")  # quoted: a path stays a string
    for flag, key in SWITCH_KEYS.items():
        if getattr(args, flag, None):
            overrides.append(f"{key}=true")
    if hasattr(args, "option"):  # --pattern and -o KEY=VALUE: the dataset's options
        overrides += [f"dataset.options.{key}={json.dumps(value)}" for key, value in options_from_args(args).items()]
    return overrides + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from hhcl.engine import Trainer
    from hhcl.engine.run_folder import locked_run_folder

    config = load_config(args.config, overrides_from_args(args))
    dataset = checked_dataset(config)  # a wrong --root fails here, before the run folder exists
    # Under torchrun every rank runs this command; rank 0 holds the run folder for all of them.
    holds_folder = int(os.environ.get("RANK", "0")) == 0
    trainer = None
    with locked_run_folder(args.output) if holds_folder else contextlib.nullcontext():
        try:
            trainer = Trainer(config, args.output, resume=args.resume, dataset=dataset, progress=show_progress(args),
                              hooks=inspection_hooks(args))
            trainer.fit()
        except KeyboardInterrupt:
            raise KeyboardInterrupt(interruption_hint(args, getattr(trainer, "epoch", 0))) from None
    return 0


def inspection_hooks(args: argparse.Namespace) -> list:
    """``[InspectionHook()]`` with --inspect (the pseudo-labels kept for `hhcl inspect`), else none."""
    from hhcl.engine.inspection import InspectionHook

    return [InspectionHook()] if getattr(args, "inspect", False) else []


def checked_dataset(config):
    """The training set, read before the run folder is created, so that bad inputs leave no folder behind.

    Under torchrun (several processes) the trainer reads it, rank 0 first (a generated set is
    written once): None.
    """
    from hhcl.engine.distributed import DistributedContext
    from hhcl.engine.setup import load_training_dataset

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return None
    return load_training_dataset(config, DistributedContext())


def interruption_hint(args: argparse.Namespace, completed_epochs: int) -> str:
    """``after epoch N; continue with `hhcl train ... --resume` `` for a run stopped with Ctrl-C."""
    from hhcl.engine.trainer import CHECKPOINT_FILE

    command = shlex.join(["hhcl", *sys.argv[1:]]) if sys.argv[1:2] == ["train"] else \
        f"hhcl train ... --output {shlex.quote(str(args.output))}"
    if not args.resume:
        command += " --resume"
    if not (Path(args.output) / CHECKPOINT_FILE).is_file():
        return f"before the first checkpoint was written; start again with `{command}`"
    return f"after epoch {completed_epochs}; continue with `{command}`"
