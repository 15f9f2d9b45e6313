"""`hhcl config show PRESET [--set a.b=c ...]` prints a resolved configuration; `hhcl config list`."""

from __future__ import annotations

import argparse

from hhcl.config import list_presets, load_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    show = actions.add_parser("show", help="print a preset with its base and overrides resolved, as YAML")
    show.add_argument("preset", help="a preset name (see `hhcl config list`) or a YAML file")
    show.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override one key, e.g. --set cluster.eps=0.5 (repeatable)")
    actions.add_parser("list", help="list the shipped presets")


def run(args: argparse.Namespace) -> int:
    if args.action == "list":
        for name in list_presets():
            print(name)
        return 0
    config = load_config(args.preset, args.overrides)
    print(config.to_yaml(), end="")
    return 0
