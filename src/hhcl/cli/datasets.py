"""``hhcl datasets``: list the dataset names, or ``hhcl datasets info NAME --root DIR`` to summarise one."""

from __future__ import annotations

import argparse

import yaml

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
    info.add_argument(
        "--pattern",
        action="append",
        metavar="REGEX",
        help="folder only: file-name pattern with groups (?P<pid>...) and (?P<cam>...); "
        "one per --root, or one for all (default: Market style '^(?P<pid>-?\\d+)_c(?P<cam>\\d+)')",
    )
    info.add_argument("--check-images", action="store_true", help="decode every image while scanning")
    info.add_argument("--strict", action="store_true", help="a broken image is an error, not a warning")
    info.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a dataset option, e.g. subset=labeled (cuhk03np), num_identities=50 (synthetic), "
        "query_camera=a (folder)",
    )


def parse_options(pairs: list[str]) -> dict:
    """``["a=1", "b=x"]`` -> ``{"a": 1, "b": "x"}``; values are read as YAML scalars."""
    options = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise HHCLError(f"option {pair!r} is not KEY=VALUE; write it like --option subset=labeled")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        # Camera and identity labels stay text (query_camera=1 must find "c1" as well as "a").
        options[key.strip()] = value if key.strip().endswith("_camera") else parsed
    return options


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

    options = parse_options(args.option)
    if args.pattern:
        options["pattern"] = args.pattern[0] if len(args.pattern) == 1 else args.pattern
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
