"""``hhcl export``: write a trained model as ONNX with a dynamic batch, and check parity with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path

from hhcl.cli.arguments import add_input_size_arguments
from hhcl.export import DEFAULT_OPSET, PARITY_TOLERANCE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", required=True, metavar="FILE", help="trained weights (.pth/.pt/.tar)")
    parser.add_argument("--arch", metavar="ARCH",
                        help="architecture of the weights, e.g. osnet_x0_25 (may be left out for an hhcl model "
                             "file, which records it)")
    parser.add_argument("--output", required=True, metavar="FILE", help="the .onnx file to write")
    add_input_size_arguments(parser)
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument(
        "--tolerance", type=float, default=PARITY_TOLERANCE,
        help=f"largest max abs difference accepted between PyTorch and onnxruntime (default {PARITY_TOLERANCE:g})",
    )


def run(args: argparse.Namespace) -> int:
    from hhcl.export import export_onnx
    from hhcl.retrieval.extractor import load_trained_model, resolve_input_size

    model = load_trained_model(args.arch, args.weights)
    height, width = resolve_input_size(args.weights, args.height, args.width)
    report = export_onnx(
        model, args.output, height=height, width=width, opset=args.opset, tolerance=args.tolerance,
        metadata={"arch": model.build_options["arch"], "weights": Path(args.weights).name},
    )
    print(report.summary())
    return 0
