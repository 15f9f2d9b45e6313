"""``hhcl datasets``: list the dataset names, or ``hhcl datasets info NAME --root DIR`` to summarise one."""

from __future__ import annotations

import argparse

from hhcl.cli.arguments import add_data_arguments, options_from_args
from hhcl.errors import HHCLError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list the dataset names (the default)")
    info = actions.add_parser(
        "info",
        help="read a dataset and print its summary",
        description="Read a dataset and print images, identities and cameras per split.",
    )
    info.add_argument("name", help="dataset name (see `hhcl datasets`)")
    info.add_argument(
        "--root",
        action="append",
        metavar="DIR",
        help="dataset folder; repeat it to pool several folders into one training set (folder only)",
    )
    add_data_arguments(info, input_size=None)
    info.add_argument("--check-images", action="store_true", help="decode every image while scanning")
    info.add_argument("--strict", action="store_true", help="a broken image is an error, not a warning")


def run(args: argparse.Namespace) -> int:
    from hhcl.data import dataset_options, describe_datasets, load_dataset

    if args.action in (None, "list"):
        descriptions = describe_datasets()
        width = max(map(len, descriptions))
        for name, description in descriptions.items():
            options = ", ".join(option for option in dataset_options(name) if option not in ("check_images", "strict"))
            suffix = f"  [options: {options}]" if options else ""
            print(f"{name.ljust(width)}  {description}{suffix}")
        return 0

    options = options_from_args(args)
    if args.check_images:
        options["check_images"] = True
    if args.strict:
        options["strict"] = True
    roots = args.root or []
    if len(roots) > 1 and args.name != "folder":
        raise HHCLError(f"only the folder dataset pools several --root folders; pass one --root for {args.name}")
    root = roots if len(roots) > 1 else (roots[0] if roots else None)
    dataset = load_dataset(args.name, root, **options)
    print(dataset.summary())
    return 0
