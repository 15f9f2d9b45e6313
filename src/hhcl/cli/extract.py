"""``hhcl extract``: write the features of image files (a folder, a list file or images) to an .npz.

Also home of the model options that ``hhcl search`` shares.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from hhcl.cli.arguments import add_input_size_arguments, add_progress_argument, show_progress


def add_extractor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--weights``, ``--arch`` and the :class:`~hhcl.retrieval.FeatureExtractor` settings."""
    parser.add_argument("--weights", required=True, metavar="FILE",
                        help="trained weights (.pth/.pt/.tar), or an .onnx file with --backend onnx")
    parser.add_argument("--arch", metavar="ARCH",
                        help="architecture of the weights, e.g. osnet_x0_25 (may be left out for an hhcl model "
                             "file or an ONNX export, which record it)")
    parser.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="run with PyTorch or onnxruntime")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                        help="autocast precision of the torch backend (fp16 on CUDA only; default fp32)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    add_input_size_arguments(parser)
    parser.add_argument("--num-workers", type=int, default=0, help="image-decoding processes (default 0)")
    add_progress_argument(parser)


def build_extractor(args: argparse.Namespace):
    """The :class:`~hhcl.retrieval.FeatureExtractor` that :func:`add_extractor_arguments`' options describe."""
    from hhcl.retrieval import FeatureExtractor

    return FeatureExtractor(
        args.arch, args.weights, device=args.device, precision=args.precision, backend=args.backend,
        batch_size=args.batch_size, height=args.height, width=args.width, num_workers=args.num_workers,
        progress=None if show_progress(args) else False,  # None: a bar for sets large enough to wait for
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_extractor_arguments(parser)
    parser.add_argument(
        "--images", required=True, nargs="+", metavar="DIR_OR_LIST",
        help="image folders (not recursive), image files, or text files listing one image path per line "
             "(relative to the list file)",
    )
    parser.add_argument("--output", required=True, metavar="FILE",
                        help="the .npz to write: 'paths' (N,) and 'features' (N, D) float32, L2-normalised")


def run(args: argparse.Namespace) -> int:
    from hhcl.retrieval.inputs import gather_image_paths
    from hhcl.retrieval.outputs import check_output_file, save_features

    output = check_output_file(args.output)
    paths = gather_image_paths(args.images)
    extractor = build_extractor(args)
    started = time.perf_counter()
    kept, features = extractor.extract_files(paths)
    seconds = time.perf_counter() - started
    save_features(output, kept, features.numpy(), arch=str(extractor.arch), weights=Path(args.weights).name,
                  backend=args.backend, precision=args.precision,
                  input_size=f"{extractor.height}x{extractor.width}")
    skipped = len(paths) - len(kept)
    note = f", {skipped} broken image{'s' if skipped != 1 else ''} skipped" if skipped else ""
    print(f"wrote {output}: {len(kept)} images x {extractor.feature_dim} features ({extractor.arch} at "
          f"{extractor.height}x{extractor.width}, {seconds:.1f} s, {len(kept) / max(seconds, 1e-9):.0f} images/s"
          f"{note})")
    return 0
