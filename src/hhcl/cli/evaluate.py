"""``hhcl evaluate``: mAP, rank-1/5/10 and mINP of a model on a dataset's query/gallery split."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from hhcl.cli.arguments import add_data_arguments, add_progress_argument, options_from_args, show_progress
from hhcl.config import PRECISIONS
from hhcl.errors import HHCLError

RANKED_TOPK = 10


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="dataset name (see `hhcl datasets`), e.g. market1501 or folder")
    data.add_argument("--root", metavar="DIR", help="the dataset folder")
    add_data_arguments(data)
    data.add_argument("--num-workers", type=int, default=0, help="image-decoding processes (default 0)")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True, nargs="+", metavar="FILE",
                       help="a checkpoint: hhcl's model.pth, or torchreid / torchvision / IBN-Net weights; several "
                            "are evaluated in turn and their CMC curves overlaid by --plot (e.g. zero-shot against "
                            "adapted)")
    model.add_argument("--arch", metavar="ARCH",
                       help="architecture, e.g. resnet50 or osnet_x0_25 (may be left out for an hhcl checkpoint, "
                            "which records it)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    run_group.add_argument("--precision", choices=PRECISIONS, default="fp32",
                           help="bf16: faster on CPUs with AVX512-BF16, at a small cost in accuracy "
                                "(fp16 on CUDA only; default fp32)")
    run_group.add_argument("--batch-size", type=int, default=128, help="images per forward pass (default 128)")
    parser.add_argument("--rerank", action="store_true", help="k-reciprocal re-ranking of the distances")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON object {"mAP", "rank1", "rank5", "rank10", "mINP"} in percent '
                             "(with several --weights: one such object per weights file, keyed by its path)")
    parser.add_argument("--plot", metavar="OUT", help="write the CMC curve to OUT/cmc.png (and --ranked's pictures)")
    parser.add_argument("--ranked", type=int, default=0, metavar="N",
                        help=f"also draw the top {RANKED_TOPK} of N queries in OUT/ranked.png and OUT/index.html, "
                             "as `hhcl search` does (needs --plot OUT)")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from hhcl.data import load_dataset
    from hhcl.engine.runtime import resolve_device
    from hhcl.retrieval.extractor import load_trained_model, resolve_input_size

    device = resolve_device(args.device)
    if args.ranked < 0:
        raise HHCLError(f"--ranked {args.ranked} is negative: give the number of queries to draw, e.g. --ranked 8")
    if args.ranked and not args.plot:
        raise HHCLError(f"--ranked {args.ranked} draws into the --plot folder: add --plot OUT")
    if args.plot:
        from hhcl.retrieval.outputs import ensure_writable_folder

        ensure_writable_folder(args.plot, "--plot")
    # The models first: a wrong weights file fails before a long dataset scan.
    models = [(weights, load_trained_model(args.arch, weights, device, require_complete=False, verbose=True),
               resolve_input_size(weights, args.height, args.width)) for weights in args.weights]
    dataset = load_dataset(args.dataset, args.root, **options_from_args(args))
    if not dataset.query or not dataset.gallery:
        raise HHCLError(f"dataset {args.dataset} at {args.root} has no query/gallery split to evaluate "
                        "(for one folder split by camera pass -o query_camera=A -o gallery_camera=B)")

    figures, curves = {}, {}
    for number, (weights, model, (height, width)) in enumerate(models, start=1):
        percent, cmc = evaluate_one(args, weights, model, dataset, device, height, width, ranked_folder(args, number))
        figures[weights] = percent
        name = model_name(weights)
        curves[name if name not in curves else f"{name} ({number})"] = cmc
    note = sys.stderr if args.json else sys.stdout  # with --json, stdout carries the JSON alone
    if args.plot:
        from hhcl.retrieval.visualize import plot_cmc

        if len(models) == 1:
            ((name, cmc),) = curves.items()
            title = f"{name} on {args.dataset}: mAP {figures[args.weights[0]]['mAP']:.1f}%"
            picture = plot_cmc(cmc, Path(args.plot) / "cmc.png", label=title)
        else:
            title = f"{', '.join(curves)} on {args.dataset}"
            picture = plot_cmc(curves, Path(args.plot) / "cmc.png", label=f"{len(models)} models on {args.dataset}")
        print(f"wrote {picture} (CMC of {title})", file=note)
    if args.json:
        print(json.dumps(figures[args.weights[0]] if len(models) == 1 else figures))
    return 0


def evaluate_one(args: argparse.Namespace, weights: str, model, dataset, device, height: int, width: int,
                 ranked_folder: Path | None):
    """Print (unless --json) and return one model's figures in percent and its CMC; draw its ranked lists."""
    from hhcl.evaluation.model import split_metrics
    from hhcl.models import extract_features

    def features_of(items, description: str) -> torch.Tensor:
        return extract_features(model, items, batch_size=args.batch_size, device=device, height=height,
                                width=width, num_workers=args.num_workers, precision=args.precision,
                                progress=show_progress(args), description=description)

    query_features = features_of(dataset.query, "query")
    gallery_features = features_of(dataset.gallery, "gallery")
    metrics, result = split_metrics(query_features, gallery_features, dataset.query, dataset.gallery,
                                    max_rank=min(50, len(dataset.gallery)), rerank=args.rerank)
    percent = {name: round(value, 2) for name, value in metrics.items()}
    arch = model.build_options["arch"]
    note = sys.stderr if args.json else sys.stdout
    if ranked_folder is not None:
        from hhcl.retrieval.search import split_ranked_lists
        from hhcl.retrieval.visualize import write_search_report

        ranked = split_ranked_lists(query_features.numpy(), gallery_features.numpy(), dataset.query,
                                    dataset.gallery, args.ranked, topk=RANKED_TOPK)
        title = f"hhcl evaluate: {model_name(weights)} ({arch}) on {args.dataset}"
        grid, page = write_search_report(ranked, ranked_folder, title=title)
        print(f"wrote {grid} and {page} ({len(ranked)} queries; same identity and camera left out)", file=note)
    if not args.json:
        rerank = ", re-ranked" if args.rerank else ""
        if len(args.weights) > 1:
            print(f"{weights}:")
        print(f"{arch} on {args.dataset}: {len(dataset.query)} query, {len(dataset.gallery)} gallery images "
              f"({result['num_valid_queries']} queries evaluated{rerank})")
        for name, label in (("mAP", "mAP"), ("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"),
                            ("mINP", "mINP")):
            print(f"  {label:8s} {percent[name]:6.2f}%")
    return percent, result["cmc"]


def model_name(weights: str) -> str:
    """The weights file as a chart names it: ``runs/adapt/model.pth`` -> ``adapt/model.pth``."""
    path = Path(weights)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def ranked_folder(args: argparse.Namespace, number: int) -> Path | None:
    """Where --ranked draws model ``number``'s lists: the --plot folder, or a sub-folder per model when several."""
    if not args.ranked:
        return None
    if len(args.weights) == 1:
        return Path(args.plot)
    return Path(args.plot) / f"ranked_{number}_{Path(args.weights[number - 1]).stem}"
