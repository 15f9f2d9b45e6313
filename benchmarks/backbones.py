"""Inference speed of the backbones on this machine: images/s at 256x128, batch 32.

Run from the repository root:

    python -m benchmarks.backbones                      # resnet50 and osnet_x0_25, 5 rounds
    python -m benchmarks.backbones --rounds 3 --no-compile --threads 1 --json

For each architecture, every variant runs in the same process on the same random input, and the
variants take turns batch by batch (one batch of each per round) so that a busy neighbour on a
shared machine slows them all alike. The figure is the median over the rounds after one warm-up
batch. Variants:

- ``fp32 eager``: contiguous (NCHW) model and input, the baseline;
- ``fp32 channels_last input``: what ``precision="fp32"`` does on CPU (the model is untouched);
- ``fp32 channels_last``: model and input channels-last;
- ``bf16 autocast + channels_last``: what ``precision="bf16"`` does (``extract_features``,
  ``hhcl evaluate --precision bf16``), through the same code path;
- ``torch.compile`` (inductor, with freezing) of the fp32 and bf16 channels-last models, where
  it compiles; the compile time is reported apart.

``min cos`` is the smallest cosine similarity between a variant's and the baseline's
L2-normalised features over the batch: it shows what reduced precision costs in accuracy.
Weights are random: speed does not depend on their values.

The table is written to the ``backbones`` block of docs/benchmarks.md (``--no-doc``: print only).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn import functional as F

from benchmarks.report import add_doc_argument, command_line, machine_load, table, write_block
from hhcl.models import build_model
from hhcl.models.inference import autocast, inference_context, prepare_images

CPU = torch.device("cpu")


def _eager_variants(arch: str, images: torch.Tensor, stack: contextlib.ExitStack) -> dict[str, Callable]:
    baseline = build_model(arch).eval()
    channels_last_model = copy.deepcopy(baseline).to(memory_format=torch.channels_last)
    hhcl_fp32 = stack.enter_context(inference_context(copy.deepcopy(baseline), "fp32", CPU))
    hhcl_bf16 = stack.enter_context(inference_context(copy.deepcopy(baseline), "bf16", CPU))
    channels_last_images = images.contiguous(memory_format=torch.channels_last)
    fp32_input = prepare_images(images, "fp32", CPU)
    bf16_input = prepare_images(images, "bf16", CPU)

    def run_bf16() -> torch.Tensor:
        with autocast("bf16", CPU):
            return hhcl_bf16(bf16_input)

    return {
        "fp32 eager": lambda: baseline(images),
        "fp32 channels_last input": lambda: hhcl_fp32(fp32_input),
        "fp32 channels_last": lambda: channels_last_model(channels_last_images),
        "bf16 autocast + channels_last": run_bf16,
    }, baseline


def _compiled_variants(baseline: torch.nn.Module, images: torch.Tensor) -> tuple[dict[str, Callable], dict[str, str]]:
    """Compiled variants that compile, and for the others the reason, with the compile times."""
    import torch._inductor.config as inductor_config

    # Freezing folds BatchNorm into the convolutions and pre-packs weights for oneDNN: the
    # recommended inductor setting for CPU inference.
    inductor_config.freezing = True
    channels_last_images = images.contiguous(memory_format=torch.channels_last)
    variants: dict[str, Callable] = {}
    notes: dict[str, str] = {}
    for precision in ("fp32", "bf16"):
        name = f"torch.compile {precision} + channels_last"
        model = torch.compile(copy.deepcopy(baseline).to(memory_format=torch.channels_last))

        def run(model=model, precision=precision) -> torch.Tensor:
            with autocast(precision, CPU):
                return model(channels_last_images)

        start = time.perf_counter()
        try:
            with torch.no_grad():
                run()
        except Exception as error:  # noqa: BLE001 - any compiler failure means "does not work here"
            notes[name] = f"failed: {type(error).__name__}: {str(error).strip().splitlines()[0][:120]}"
            continue
        notes[name] = f"compiled in {time.perf_counter() - start:.0f} s"
        variants[name] = run
    return variants, notes


def benchmark_arch(arch: str, batch_size: int, height: int, width: int, rounds: int, compile_models: bool) -> dict:
    torch.manual_seed(0)
    images = torch.randn(batch_size, 3, height, width)
    with contextlib.ExitStack() as stack:
        variants, baseline = _eager_variants(arch, images, stack)
        notes: dict[str, str] = {}
        if compile_models:
            compiled, notes = _compiled_variants(baseline, images)
            variants.update(compiled)
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        outputs: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, run in variants.items():
                outputs[name] = F.normalize(run().float(), dim=1)
            for _ in range(rounds):
                for name, run in variants.items():
                    start = time.perf_counter()
                    run()
                    seconds[name].append(time.perf_counter() - start)
    baseline_rate = batch_size / statistics.median(seconds["fp32 eager"])
    results = []
    for name in variants:
        rate = batch_size / statistics.median(seconds[name])
        cosine = (outputs[name] * outputs["fp32 eager"]).sum(dim=1).min().item()
        results.append({"variant": name, "images_per_s": rate, "speedup": rate / baseline_rate,
                        "min_cosine": cosine, "note": notes.get(name, "")})
    for name, note in notes.items():
        if name not in variants:
            results.append({"variant": name, "images_per_s": None, "speedup": None, "min_cosine": None,
                            "note": note})
    return {"arch": arch, "batch_size": batch_size, "height": height, "width": width, "rounds": rounds,
            "threads": torch.get_num_threads(), "results": results}


def format_table(report: dict) -> str:
    lines = [f"{report['arch']} @ {report['height']}x{report['width']}, batch {report['batch_size']}, "
             f"{report['threads']} threads, median of {report['rounds']} rounds",
             f"  {'variant':36s} {'images/s':>9s} {'x fp32':>7s} {'min cos':>9s}  note"]
    for row in report["results"]:
        if row["images_per_s"] is None:
            lines.append(f"  {row['variant']:36s} {'-':>9s} {'-':>7s} {'-':>9s}  {row['note']}")
        else:
            lines.append(f"  {row['variant']:36s} {row['images_per_s']:9.1f} {row['speedup']:6.2f}x "
                         f"{row['min_cosine']:9.5f}  {row['note']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet50", "osnet_x0_25"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variants (slow to build)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice, one per core)")
    parser.add_argument("--json", action="store_true", help="print one JSON object per architecture")
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()
    if args.threads:
        torch.set_num_threads(args.threads)
    reports = []
    for arch in args.archs:
        report = benchmark_arch(arch, args.batch_size, args.height, args.width, args.rounds, not args.no_compile)
        reports.append(report)
        print(json.dumps(report) if args.json else format_table(report), flush=True)
    if not args.no_doc:
        write_block("backbones", render_markdown(reports), command_line("benchmarks.backbones", argv), load_before)
    return 0


def render_markdown(reports: list[dict]) -> str:
    """The docs block: fp32 eager images/s, then each variant as a ratio to it; one column per architecture."""
    first = reports[0]
    columns = [f"{report['arch']}, {report['threads']} thread{'s' if report['threads'] != 1 else ''}"
               for report in reports]
    variants = list(dict.fromkeys(row["variant"] for report in reports for row in report["results"]))
    by_arch = [{row["variant"]: row for row in report["results"]} for report in reports]
    rows = [["fp32 eager (images/s)", *(f"{of_arch['fp32 eager']['images_per_s']:.1f}" for of_arch in by_arch)]]
    for variant in variants:
        if variant == "fp32 eager":
            continue
        cells = []
        for of_arch in by_arch:
            row = of_arch.get(variant)
            cells.append("-" if row is None or row["speedup"] is None else f"{row['speedup']:.2f}x")
        rows.append([VARIANT_TITLES.get(variant, variant), *cells])
    cosines = [row["min_cosine"] for of_arch in by_arch for row in of_arch.values()
               if row["min_cosine"] is not None]
    notes = [f"{report['arch']} {row['variant']}: {row['note']}" for report in reports for row in report["results"]
             if row["note"].startswith("failed")]
    return "\n".join([
        f"## Backbones: inference images/s at {first['height']}x{first['width']}, batch {first['batch_size']} "
        "(`python -m benchmarks.backbones`)", "",
        f"Ratios to fp32 eager in the same run, median of {first['rounds']} rounds; `--threads 1` for one thread.", "",
        table(["variant", *columns], rows), "",
        f"The smallest cosine between a variant's features and fp32 eager's was {min(cosines):.5f}."
        + (" Not run: " + "; ".join(notes) + "." if notes else ""),
    ])


VARIANT_TITLES = {
    "fp32 channels_last input": "fp32 channels_last input (hhcl `fp32`)",
    "bf16 autocast + channels_last": "bf16 autocast + channels_last (hhcl `--precision bf16`)",
}


if __name__ == "__main__":
    raise SystemExit(main())
