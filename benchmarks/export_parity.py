"""How closely the ONNX export reproduces PyTorch: ``hhcl.export.export_onnx`` on real and random weights.

    python -m benchmarks.export_parity
    python -m benchmarks.export_parity --weights ../shared/models/osnet_x0_25_msmt17.pth --no-doc

Each model is exported at 256x128 (opset 17) and run by onnxruntime on the same seeded random
batches as PyTorch (batch sizes 1 and 3, the export's own parity check); the figure is the
largest absolute difference of the output features, against the tolerance the export enforces.
Models: ``osnet_x0_25`` with the MSMT17 weights of ``../shared/models`` (when present: the model
practitioners start from) and ``resnet50`` at its seeded random initialisation (the paper's
backbone; no ImageNet weights on this machine). The table is written to the ``export-parity``
block of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.report import REPO_ROOT, add_doc_argument, command_line, machine_load, table, write_block

DEFAULT_WEIGHTS = REPO_ROOT.parent / "shared" / "models" / "osnet_x0_25_msmt17.pth"


def export_case(arch: str, weights: Path | None, folder: Path) -> dict:
    """Export one model and return its parity figures."""
    import torch

    from hhcl.export import export_onnx
    from hhcl.models import build_model, load_weights

    torch.manual_seed(0)
    model = build_model(arch)
    if weights is not None:
        load_weights(model, weights, verbose=False)
    tick = time.perf_counter()
    report = export_onnx(model.eval(), folder / f"{arch}.onnx", metadata={"arch": arch})
    return {"arch": arch, "weights": weights.name if weights else None, "max_abs_diff": report.max_abs_diff,
            "tolerance": report.tolerance, "feature_dim": report.feature_dim, "megabytes": report.size_bytes / 2**20,
            "seconds": time.perf_counter() - tick}


def render_markdown(results: list[dict]) -> str:
    rows = [[f"`{r['arch']}`", f"`{r['weights']}`" if r["weights"] else "random init, seed 0",
             f"{r['feature_dim']}", f"{r['megabytes']:.1f}", f"{r['max_abs_diff']:.2e}", f"{r['tolerance']:.0e}",
             f"{r['seconds']:.1f}"] for r in results]
    return "\n".join([
        "## ONNX export parity (`python -m benchmarks.export_parity`)", "",
        "`hhcl export` at 256x128, opset 17; onnxruntime against PyTorch on the same seeded batches of 1 and 3 "
        "images. An export whose difference exceeds the tolerance is refused and leaves no file.", "",
        table(["arch", "weights", "feature dim", "file MiB", "max abs diff", "tolerance", "export + check s"], rows)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="osnet_x0_25 weights (skipped when absent)")
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()
    cases = [("resnet50", None)]
    if Path(args.weights).is_file():
        cases.insert(0, ("osnet_x0_25", Path(args.weights)))
    else:
        print(f"{args.weights} not found: osnet_x0_25 with real weights skipped")
    with tempfile.TemporaryDirectory() as folder:
        results = [export_case(arch, weights, Path(folder)) for arch, weights in cases]
    markdown = render_markdown(results)
    print(markdown)
    if not args.no_doc:
        write_block("export-parity", markdown, command_line("benchmarks.export_parity", argv), load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
