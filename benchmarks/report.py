"""A benchmark's figures rendered into its own block of docs/benchmarks.md (or README.md).

Every benchmark ends its run with :func:`write_block`: its markdown goes between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``, replacing what the last run wrote there (the
block is appended when the file has none), with one line that says how and where the figures
were measured: the command, the date, the load average before and after the run, the git
commit and the CPU. A figure a user reads is then always the output of a run that can be
repeated, never a number copied by hand.

    load_before = machine_load()
    ...  # the measurement
    write_block("evaluation", markdown, command_line("benchmarks.evaluation"), load_before)
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.adaptation_report import replace_section

REPO_ROOT = Path(__file__).resolve().parents[1]
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"


def markers(name: str) -> tuple[str, str]:
    """The HTML comments that enclose block ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def machine_load() -> float | None:
    """The 1-minute load average (None where /proc/loadavg is absent)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cpu_description() -> str:
    """The CPU model and the widest vector unit torch uses: figures differ between CPUs with and without AVX-512."""
    model = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import torch

    return f"{model}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def git_commit() -> str:
    """The short commit of the working tree, with ``+changes`` when tracked files differ from it."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+changes" if changed else "")


def command_line(module: str, argv: list[str] | None = None) -> str:
    """``python -m MODULE ARGS`` as the user typed it (``argv`` defaults to this process's arguments)."""
    arguments = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", module, *arguments])


def header_line(command: str, load_before: float | None, load_after: float | None, *, when: str | None = None,
                commit: str | None = None, cpu: str | None = None, cores: int | None = None) -> str:
    """The line that says how the figures were measured; the keyword arguments default to this machine now."""
    when = when or time.strftime("%Y-%m-%d %H:%M")
    commit = commit or git_commit()
    cpu = cpu or cpu_description()
    cores = cores or os.cpu_count()

    def load(value: float | None) -> str:
        return "?" if value is None else f"{value:.2f}"

    return (f"Command: `{command}` ({when}, load average {load(load_before)} before / {load(load_after)} after "
            f"on {cores} cores, commit {commit}, {cpu}).")


def render_block(name: str, markdown: str, header: str) -> str:
    """``markdown`` between block ``name``'s markers, ``header`` after its first line when that is a heading."""
    begin, end = markers(name)
    lines = markdown.strip("\n").splitlines()
    heading = lines[:1] if lines and lines[0].startswith("#") else []
    rest = "\n".join(lines[len(heading):]).strip("\n")
    body = [*heading, *([""] if heading else []), header, *(["", rest] if rest else [])]
    return "\n".join([begin, *body, end])


def replace_block(name: str, block: str, path: Path = DOC_PATH) -> str:
    """Put ``block`` (markers included) in place of block ``name`` of ``path``, or append it; returns the file's text."""
    from hhcl.files import write_bytes_atomically

    path = Path(path)
    document = path.read_text() if path.is_file() else ""
    document = replace_section(document, block, *markers(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomically(path, document, option="the report file")
    return document


def write_block(name: str, markdown: str, command: str, load_before: float | None, path: Path = DOC_PATH,
                **header_fields) -> str:
    """Render and write block ``name`` of ``path``: ``markdown`` with the header line; returns the block.

    ``load_before`` is :func:`machine_load` read when the run started; the load after is read
    here. ``header_fields`` (``when``, ``commit``, ``cpu``, ``cores``) override what is read
    from this machine (for tests).
    """
    load_after = header_fields.pop("load_after", None)
    if load_after is None:
        load_after = machine_load()
    block = render_block(name, markdown, header_line(command, load_before, load_after, **header_fields))
    replace_block(name, block, path)
    print(f"wrote block {name!r} of {path}")
    return block


def table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table."""
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                      *("| " + " | ".join(row) + " |" for row in rows)])


def add_doc_argument(parser) -> None:
    """``--no-doc``: a run that only prints (a trial with other options) leaves the docs as they are."""
    parser.add_argument("--no-doc", action="store_true",
                        help=f"print the figures only; do not rewrite this benchmark's block of "
                             f"{DOC_PATH.relative_to(REPO_ROOT)}")
