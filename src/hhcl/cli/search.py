"""``hhcl search``: rank a gallery folder for query images; print the top-k, draw them, write a page."""

from __future__ import annotations

import argparse

from hhcl.cli.extract import add_extractor_arguments, build_extractor
from hhcl.retrieval.search import CAMERA_PATTERN, IDENTITY_PATTERN


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_extractor_arguments(parser)
    parser.add_argument("--gallery", required=True, metavar="DIR", help="folder of gallery images")
    parser.add_argument("--query", required=True, nargs="+", metavar="IMG", help="query image files (or folders)")
    parser.add_argument("--topk", type=int, default=10, help="gallery images to show per query (default 10)")
    parser.add_argument("--output", required=True, metavar="OUT", help="folder for ranked.png and index.html")
    parser.add_argument("--cache", metavar="FILE",
                        help="gallery features cache (.npz), reused while the gallery and weights are unchanged")
    parser.add_argument(
        "--pattern", metavar="REGEX",
        help=f"regular expression with a named group 'pid' that reads identities from file names, to colour "
             f"true (green) and false (red) matches, and 'cam' for --exclude-same-camera; '' for none (default "
             f"'{IDENTITY_PATTERN}', with --exclude-same-camera '{CAMERA_PATTERN}')",
    )
    parser.add_argument("--exclude-same-camera", action="store_true",
                        help="leave out the gallery images of the query's own camera (read from the file names by "
                             "--pattern), as the evaluation protocol leaves a camera's own view of a person out")


def run(args: argparse.Namespace) -> int:
    from hhcl.errors import HHCLError
    from hhcl.retrieval.inputs import gather_image_paths
    from hhcl.retrieval.outputs import check_output_file, ensure_writable_folder
    from hhcl.retrieval.search import compile_identity_pattern, search_gallery
    from hhcl.retrieval.visualize import write_search_report

    if args.topk < 1:
        raise HHCLError(f"--topk must be at least 1, got {args.topk}")
    output = ensure_writable_folder(args.output)
    if args.cache is not None:
        check_output_file(args.cache, option="--cache")
    if args.pattern is None:
        args.pattern = CAMERA_PATTERN if args.exclude_same_camera else IDENTITY_PATTERN
    compile_identity_pattern(args.pattern)  # a bad --pattern fails before any extraction
    gallery = gather_image_paths([args.gallery], role="--gallery")
    queries = gather_image_paths(args.query, role="--query")
    extractor = build_extractor(args)
    results = search_gallery(extractor, queries, gallery, topk=args.topk, cache_path=args.cache, pattern=args.pattern,
                             exclude_same_camera=args.exclude_same_camera)

    for number, ranked in enumerate(results, start=1):
        print(f"query {number}: {ranked.query_path}")
        for rank, (path, distance, pid) in enumerate(
            zip(ranked.gallery_paths, ranked.distances, ranked.gallery_pids), start=1
        ):
            verdict = ""
            if ranked.query_pid is not None and pid is not None:
                verdict = "  same identity" if pid == ranked.query_pid else "  other identity"
            print(f"  {rank:>3}  {distance:.4f}  {path}{verdict}")
    grid, page = write_search_report(results, output, title=f"hhcl search: {extractor.arch}")
    print(f"wrote {grid} and {page} ({extractor.arch} at {extractor.height}x{extractor.width})")
    return 0
