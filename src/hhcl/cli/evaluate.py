"""``hhcl evaluate``: mAP, rank-1/5/10 and mINP of a model on a dataset's query/gallery split."""

from __future__ import annotations

import argparse
import json

import torch

from hhcl.cli.arguments import add_data_arguments, add_progress_argument, options_from_args, show_progress
from hhcl.config import PRECISIONS
from hhcl.errors import HHCLError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", required=True, help="dataset name (see `hhcl datasets`), e.g. market1501 or folder")
    data.add_argument("--root", metavar="DIR", help="the dataset folder")
    add_data_arguments(data)
    data.add_argument("--num-workers", type=int, default=0, help="image-decoding processes (default 0)")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", required=True, metavar="FILE",
                       help="a checkpoint: hhcl's model.pth, or torchreid / torchvision / IBN-Net weights")
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
                        help='print one JSON object {"mAP", "rank1", "rank5", "rank10", "mINP"} in percent')
    parser.add_argument("--plot", metavar="OUT", help="write the CMC curve to OUT/cmc.png")
    add_progress_argument(parser)


def run(args: argparse.Namespace) -> int:
    from hhcl.data import load_dataset
    from hhcl.engine.runtime import resolve_device
    from hhcl.evaluation.model import split_metrics
    from hhcl.models import extract_features
    from hhcl.retrieval.extractor import load_trained_model, resolve_input_size

    device = resolve_device(args.device)
    if args.plot:
        from hhcl.retrieval.outputs import ensure_writable_folder

        ensure_writable_folder(args.plot, "--plot")
    # The model first: a wrong weights file fails before a long dataset scan.
    model = load_trained_model(args.arch, args.weights, device, require_complete=False, verbose=True)
    height, width = resolve_input_size(args.weights, args.height, args.width)
    dataset = load_dataset(args.dataset, args.root, **options_from_args(args))
    if not dataset.query or not dataset.gallery:
        raise HHCLError(f"dataset {args.dataset} at {args.root} has no query/gallery split to evaluate "
                        "(for one folder split by camera pass -o query_camera=A -o gallery_camera=B)")

    def features_of(items, description: str) -> torch.Tensor:
        return extract_features(model, items, batch_size=args.batch_size, device=device, height=height,
                                width=width, num_workers=args.num_workers, precision=args.precision,
                                progress=show_progress(args), description=description)

    query_features = features_of(dataset.query, "query")
    gallery_features = features_of(dataset.gallery, "gallery")
    metrics, result = split_metrics(query_features, gallery_features, dataset.query, dataset.gallery,
                                    max_rank=min(50, len(dataset.gallery)), rerank=args.rerank)
    cmc = result["cmc"]
    percent = {name: round(value, 2) for name, value in metrics.items()}
    arch = model.build_options["arch"]
    if args.plot:
        from pathlib import Path

        from hhcl.retrieval.visualize import plot_cmc

        plot_cmc(cmc, Path(args.plot) / "cmc.png", label=f"{arch} on {args.dataset}: mAP {percent['mAP']:.1f}%")
    if args.json:
        print(json.dumps(percent))
        return 0
    rerank = ", re-ranked" if args.rerank else ""
    print(f"{arch} on {args.dataset}: {len(dataset.query)} query, {len(dataset.gallery)} gallery images "
          f"({result['num_valid_queries']} queries evaluated{rerank})")
    for name, label in (("mAP", "mAP"), ("rank1", "rank-1"), ("rank5", "rank-5"), ("rank10", "rank-10"),
                        ("mINP", "mINP")):
        print(f"  {label:8s} {percent[name]:6.2f}%")
    return 0
