"""One consistent CLI: the same data flags wherever a dataset folder is read, --no-progress on every
command that shows bars (off without a terminal), the subcommand's own usage for an unknown
argument, regular expressions printed as typed, and no run folder left by a run whose inputs fail."""

import argparse
import io

import pytest

from cli_helpers import one_line_error, run_cli
from hhcl.cli import build_parser
from hhcl.cli.arguments import show_progress
from hhcl.cli.train import overrides_from_args
from hhcl.config import load_config


def subcommand(name: str, *nested: str) -> argparse.ArgumentParser:
    parser = build_parser()
    for part in (name, *nested):
        action = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
        parser = action.choices[part]
    return parser


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


@pytest.mark.parametrize("command", [("train",), ("evaluate",), ("datasets", "info")])
def test_every_command_that_reads_a_dataset_folder_takes_the_same_data_flags(command):
    assert {"--pattern", "-o", "--option"} <= flags(subcommand(*command))


@pytest.mark.parametrize("command", ["train", "evaluate", "extract", "search", "export"])
def test_every_command_that_feeds_a_model_takes_the_input_size(command):
    assert {"--height", "--width"} <= flags(subcommand(command))


@pytest.mark.parametrize("command", ["demo", "train", "evaluate", "extract", "search"])
def test_every_command_with_bars_takes_no_progress(command):
    assert "--no-progress" in flags(subcommand(command))


def test_train_pattern_and_options_reach_the_dataset_options():
    args = build_parser().parse_args(["train", "--output", "run", "--dataset", "folder", "--root", "a", "b",
                                      "--pattern", r"^(?P<pid>\d+)-", "--pattern", r"^p(?P<pid>\d+)",
                                      "-o", "check_images=true"])
    options = load_config(args.config, overrides_from_args(args)).dataset.options
    assert options["pattern"] == [r"^(?P<pid>\d+)-", r"^p(?P<pid>\d+)"]
    assert options["check_images"] is True
    one = build_parser().parse_args(["train", "--output", "run", "--pattern", r"^(?P<pid>\d+)_(?P<cam>\d)"])
    assert load_config(one.config, overrides_from_args(one)).dataset.options["pattern"] == r"^(?P<pid>\d+)_(?P<cam>\d)"


def test_bars_are_off_without_a_terminal(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    args = argparse.Namespace(no_progress=False)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not show_progress(args)  # redirected: a log full of \r lines is useless
    monkeypatch.setattr("sys.stdout", Terminal())
    monkeypatch.setattr("sys.stderr", Terminal())
    assert show_progress(args)
    assert not show_progress(argparse.Namespace(no_progress=True))


@pytest.mark.parametrize("command", [
    ["evaluate", "--dataset", "folder", "--weights", "m.pth"],
    ["datasets", "info", "folder"],
    ["search", "--weights", "m.pth", "--gallery", "g", "--query", "q", "--output", "o"],
])
def test_an_unknown_argument_prints_the_usage_of_its_subcommand(capsys, command):
    with pytest.raises(SystemExit) as exit_status:
        run_cli(capsys, *command, "--bogus")
    err = capsys.readouterr().err
    name = " ".join(command[:2] if command[0] == "datasets" else command[:1])
    assert exit_status.value.code == 2
    assert f"usage: hhcl {name} " in err and f"hhcl {name}: error: unrecognized arguments: --bogus" in err


def test_a_pattern_in_a_message_reads_as_typed(tmp_path, capsys):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "IMG_1.jpg").write_bytes(b"not read")
    status, _, err = run_cli(capsys, "datasets", "info", "folder", "--root", tmp_path, "--pattern", r"^(?P<pid>\d+)_")
    one_line_error(status, err, "IMG_1.jpg", r"'^(?P<pid>\d+)_'")
    assert "\\\\" not in err


def test_a_run_whose_inputs_fail_leaves_no_run_folder(tmp_path, capsys):
    output = tmp_path / "runs" / "adapt"
    status, _, err = run_cli(capsys, "train", "--dataset", "folder", "--root", tmp_path / "missing",
                             "--output", output, "--no-progress")
    one_line_error(status, err, tmp_path / "missing")
    assert not output.exists() and not output.parent.exists()

    crops = tmp_path / "crops"
    crops.mkdir()
    (crops / "IMG_1.jpg").write_bytes(b"not read")
    status, _, err = run_cli(capsys, "train", "--dataset", "folder", "--root", crops,
                             "--pattern", r"^(?P<pid>\d+)_", "--output", output, "--no-progress")
    one_line_error(status, err, "IMG_1.jpg", r"'^(?P<pid>\d+)_'", "--pattern")
    assert not output.exists()
