"""The `hhcl` command line: thin subcommands that parse arguments and call the library.

Each subcommand lives in its own module of this package and defines
``add_arguments(parser)`` and ``run(args) -> int``. A user mistake raises
:class:`hhcl.errors.HHCLError`; it is printed on one line and the exit status is 2. A warning is one
line too (:mod:`hhcl.cli.user_warnings`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from hhcl.cli.user_warnings import user_facing_warnings
from hhcl.errors import HHCLError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("hhcl.cli.demo", "train on a generated synthetic set and show the gain (no download)"),
    "train": ("hhcl.cli.train", "train a model with HHCL (or a baseline) on a dataset"),
    "evaluate": ("hhcl.cli.evaluate", "evaluate a model on a dataset's query/gallery split"),
    "datasets": ("hhcl.cli.datasets", "list the datasets, or summarise one"),
    "extract": ("hhcl.cli.extract", "write features of a folder of images"),
    "search": ("hhcl.cli.search", "rank a gallery folder for query images, with pictures"),
    "export": ("hhcl.cli.export", "export a model to ONNX and check parity"),
    "config": ("hhcl.cli.config", "show a resolved configuration preset"),
    "inspect": ("hhcl.cli.inspect", "write a page of a run's pseudo-labels (train it with --inspect)"),
}


def _load_command(module_name: str):
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hhcl", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"hhcl {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        module = _load_command(module_name)
        if module is None:
            continue
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run, _parser=sub)
        for action in sub._actions:  # nested actions (`hhcl datasets info`): their own usage on a mistake
            if isinstance(action, argparse._SubParsersAction):
                for nested in action.choices.values():
                    nested.set_defaults(_subparser=nested)
    return parser


def _version() -> str:
    from hhcl import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with user_facing_warnings():  # also the warnings of the imports that build the parser
        return _parse_and_run(argv)


def _parse_and_run(argv: list[str] | None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # argparse leaves what a subcommand does not know to the top level, whose usage would not
        # show the flags of the command at hand
        deepest = getattr(args, "_subparser", None) or getattr(args, "_parser", None) or parser
        deepest.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except HHCLError as error:
        print(f"hhcl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interruption:
        # a command may say where it stopped and how to continue (hhcl train: the --resume command)
        hint = f" {interruption}" if str(interruption) else ""
        print(f"hhcl {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
