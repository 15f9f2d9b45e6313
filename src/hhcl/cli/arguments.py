"""Flags that several subcommands share, so that each reads the same everywhere.

- :func:`add_data_arguments`: ``--pattern``, ``-o KEY=VALUE`` and (where the input size matters)
  ``--height`` and ``--width``, on every command that reads a dataset folder;
- :func:`add_progress_argument` and :func:`show_progress`: ``--no-progress``, and no bars when
  nothing watches them (output redirected to a file).
"""

from __future__ import annotations

import argparse
import sys

import yaml

from hhcl.errors import HHCLError

DEFAULT_INPUT_SIZE = {"height": 256, "width": 128}


def add_data_arguments(parser, *, input_size: str | None = "model") -> None:
    """``--pattern`` (repeatable: one per root, or one for all), ``-o/--option KEY=VALUE`` and the size flags.

    ``input_size`` says what ``--height``/``--width`` default to: ``"model"``, the size the weights
    were trained at (recorded by an hhcl model file); ``"train"``, the preset's
    ``dataset.height``/``width``; ``None`` adds no size flags.
    """
    parser.add_argument(
        "--pattern", action="append", metavar="REGEX",
        help="folder only: file-name pattern with groups (?P<pid>...) and (?P<cam>...); one per --root, or one "
             r"for all (default: Market style '^(?P<pid>-?\d+)_c(?P<cam>\d+)')",
    )
    parser.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE",
        help="a dataset option, e.g. query_camera=a and gallery_camera=b (folder), subset=labeled (cuhk03np), "
             "num_identities=50 (synthetic); `hhcl datasets` lists each dataset's options",
    )
    if input_size == "model":
        add_input_size_arguments(parser)
    elif input_size == "train":
        for side in ("height", "width"):
            parser.add_argument(f"--{side}", type=int, metavar="PIXELS",
                                help=f"training input {side} (default: the preset's dataset.{side})")
    elif input_size is not None:
        raise ValueError(f"input_size must be 'model', 'train' or None, not {input_size!r}")


def add_input_size_arguments(parser) -> None:
    """``--height`` and ``--width``, by default the size the weights were trained at."""
    for side, default in DEFAULT_INPUT_SIZE.items():
        parser.add_argument(f"--{side}", type=int, metavar="PIXELS",
                            help=f"input {side} (default: the one the model was trained at, which an hhcl model "
                                 f"file or an ONNX export records; else {default})")


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


def options_from_args(args: argparse.Namespace) -> dict:
    """The dataset options that ``-o`` and ``--pattern`` give (``--pattern`` wins over ``-o pattern=``)."""
    options = parse_options(args.option)
    if args.pattern:
        options["pattern"] = args.pattern[0] if len(args.pattern) == 1 else list(args.pattern)
    return options


def add_progress_argument(parser) -> None:
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bars (they are off anyway when the output is not a terminal)")


def show_progress(args: argparse.Namespace) -> bool:
    """Bars unless ``--no-progress``, and only on a terminal: redirected to a file, each ``\\r`` update
    would stay in it as a line."""
    return not getattr(args, "no_progress", False) and _is_terminal(sys.stderr) and _is_terminal(sys.stdout)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed streams
        return False
