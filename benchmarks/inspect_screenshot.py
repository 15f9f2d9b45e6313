"""The README's picture of ``hhcl inspect``: a short synthetic run with ``--inspect``, its page, a screenshot.

    python -m benchmarks.inspect_screenshot            # writes docs/inspect.png
    python -m benchmarks.inspect_screenshot --run RUN  # the page of an existing --inspect run instead

Trains the quick demo preset for a few epochs with the guard on, in a temporary folder, writes the
page of the last epoch with ``hhcl inspect``, opens it in headless Chromium (:mod:`benchmarks.chromium`),
checks that it has no console error and that every thumbnail loads, and saves the first screen as
a PNG. Needs Chromium (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

from benchmarks.chromium import find_chromium, open_page
from benchmarks.report import REPO_ROOT

SCREENSHOT_PATH = REPO_ROOT / "docs" / "inspect.png"
TRAIN_ARGUMENTS = ["--config", "demo_quick", "--epochs", "3", "--iters", "8", "--eval-every", "0", "--no-progress",
                   "--inspect", "--set", "guard.enabled=true"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.inspect_screenshot", description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="an existing `hhcl train ... --inspect` run (default: train one)")
    parser.add_argument("--output", type=Path, default=SCREENSHOT_PATH, help="the PNG (default docs/inspect.png)")
    parser.add_argument("--width", type=int, default=1200)
    parser.add_argument("--height", type=int, default=1100)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from hhcl.cli import main as hhcl
    from hhcl.files import write_bytes_atomically

    args = parse_args(argv)
    if find_chromium() is None:
        print("no Chromium found: install it (apt-get install -y chromium) to take the screenshot", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hhcl-inspect-") as scratch:
        run = args.run
        if run is None:
            run = Path(scratch) / "run"
            # the synthetic set is generated inside the scratch folder: nothing is left behind
            root = ["--root", str(Path(scratch) / "synthetic")]
            if hhcl(["train", *TRAIN_ARGUMENTS, *root, "--output", str(run)]) != 0:
                return 1
        page_folder = Path(scratch) / "page"
        if hhcl(["inspect", str(run), "--out", str(page_folder), "--rows", "6"]) != 0:
            return 1
        page = max(page_folder.glob("epoch_*.html"))
        shot = Path(scratch) / "screenshot.png"
        report = open_page(page, screenshot=shot, width=args.width, height=args.height)
        if report.errors or report.broken:
            print(f"the page has problems: {report.errors + report.broken}", file=sys.stderr)
            return 1
        write_bytes_atomically(args.output, small_png(shot))
    print(f"wrote {args.output} ({report.images} thumbnails on the page, all loaded, no console error)")
    return 0


def small_png(path: Path) -> bytes:
    """The screenshot with at most 256 colours: a fraction of the bytes, for a file kept in the repository."""
    from PIL import Image

    with Image.open(path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


if __name__ == "__main__":
    sys.exit(main())
