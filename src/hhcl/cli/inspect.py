"""``hhcl inspect RUN [--epoch N] [--out DIR]``: a page of a run's pseudo-labels, with thumbnails."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="the run folder of `hhcl train ... --inspect`")
    parser.add_argument("--epoch", type=int, metavar="N", help="the epoch to show (default: the last one kept)")
    parser.add_argument("--compare", type=int, metavar="N",
                        help="the earlier epoch for merges and splits (default: the one before --epoch)")
    parser.add_argument("--out", metavar="DIR",
                        help="folder for epoch_NNN.html and its thumbnails (default: RUN/inspect)")
    parser.add_argument("--rows", type=int, default=8, help="clusters per section (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random sample of clusters and outliers")


def run(args: argparse.Namespace) -> int:
    from hhcl.errors import HHCLError
    from hhcl.retrieval.inspection_page import load_inspection, write_inspection_page

    if args.rows < 1:
        raise HHCLError(f"--rows must be at least 1, got {args.rows}")
    inspection = load_inspection(args.run)
    page = write_inspection_page(inspection, epoch=args.epoch, out=args.out, compare=args.compare, rows=args.rows,
                                 seed=args.seed)
    print(f"wrote {page}; open it in a browser (file://{page.resolve()})")
    return 0
