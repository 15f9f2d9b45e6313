"""The demo's figures, as a new user gets them: ``hhcl demo --json`` in a fresh folder.

    python -m benchmarks.demo

Runs ``hhcl demo --json`` in a subprocess, in a temporary folder (the synthetic set is generated,
as on a fresh clone), and writes what it printed, the test mAP and rank-1 of the randomly
initialised model and of the trained one and the seconds, in two places: the ``demo`` block of
docs/benchmarks.md (a table, the preset's sizes, the command, date, load, commit and CPU) and
the ``demo-figures`` block of README.md (one short sentence in the Quick start). The README's
figures are therefore always those of a run. ``--no-doc`` prints only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.report import (
    DOC_PATH,
    REPO_ROOT,
    add_doc_argument,
    command_line,
    git_commit,
    machine_load,
    markers,
    replace_block,
    table,
    write_block,
)

README_PATH = REPO_ROOT / "README.md"
DEMO_COMMAND = ["demo", "--json"]


def run_demo(output: Path) -> dict:
    """``hhcl demo --json --output OUTPUT`` in a subprocess; its JSON summary (one-line error if it fails)."""
    completed = subprocess.run([sys.executable, "-m", "hhcl", *DEMO_COMMAND, "--output", str(output)],
                               cwd=REPO_ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        last = (completed.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"hhcl demo failed (exit {completed.returncode}): {last}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def preset_summary() -> str:
    """What the demo preset trains, read from the preset itself (so that the text follows the preset)."""
    from hhcl.config import load_config

    config = load_config("demo")
    options = config.dataset.options
    identities, images = options.get("num_identities", "?"), options.get("images_per_identity", "?")
    return (f"{config.model.arch} from random initialisation, {config.memory.mode} memory, synthetic set "
            f"({identities} training identities x {images} images, {options.get('num_cameras', '?')} cameras, "
            f"{config.dataset.height}x{config.dataset.width}; see `src/hhcl/configs/demo.yaml` for the choices), "
            f"{config.train.epochs} epochs x {config.train.iters} iterations of batch {config.train.batch_size}, "
            f"{_count(config.train.num_threads, 'compute thread')}, "
            + (f"plus {_count(config.dataset.num_workers, 'loader worker')}." if config.dataset.num_workers
               else "the images loaded in the main process."))


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def render_markdown(summary: dict, description: str) -> str:
    """The docs block: before/after mAP and rank-1, the gain and the wall time."""
    before, after = summary["before"], summary["after"]
    rows = [["before training (random init)", f"{before['mAP']:.1f}", f"{before['rank1']:.1f}"],
            ["after training", f"{after['mAP']:.1f}", f"{after['rank1']:.1f}"]]
    return "\n".join([
        "## The demo (`hhcl demo --json`, through `python -m benchmarks.demo`)", "",
        f"{description} `hhcl demo` in a fresh folder (the synthetic set generated, as on a fresh clone):", "",
        table(["", "mAP", "rank-1"], rows), "",
        f"Gain: {after['mAP'] - before['mAP']:+.1f} mAP, {after['rank1'] - before['rank1']:+.1f} rank-1 points; "
        f"{summary['seconds']:.0f} s wall in all (generation, both evaluations and training).",
    ])


def readme_sentence(summary: dict, commit: str, when: str) -> str:
    """The README's parenthesis: the figures, when and at which commit; the rest is in docs/benchmarks.md."""
    before, after = summary["before"], summary["after"]
    return (f"(measured by `python -m benchmarks.demo` at commit {commit} on {when}: {before['mAP']:.1f} → "
            f"{after['mAP']:.1f} mAP, {before['rank1']:.1f} → {after['rank1']:.1f} rank-1 in "
            f"{summary['seconds']:.0f} s; machine and load in [docs/benchmarks.md](docs/benchmarks.md)).")


def write_figures(summary: dict, command: str, load_before: float | None, description: str,
                  doc_path: Path = DOC_PATH, readme_path: Path = README_PATH, **header_fields) -> None:
    """Write the docs block and the README's sentence from one ``hhcl demo --json`` summary."""
    header_fields.setdefault("commit", git_commit())
    header_fields.setdefault("when", time.strftime("%Y-%m-%d %H:%M"))
    write_block("demo", render_markdown(summary, description), command, load_before, doc_path,
                **header_fields)
    begin, end = markers("demo-figures")
    sentence = readme_sentence(summary, header_fields["commit"], header_fields["when"].split()[0])
    replace_block("demo-figures", f"{begin}\n{sentence}{end}", readme_path)
    print(f"wrote block 'demo-figures' of {readme_path}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()
    with tempfile.TemporaryDirectory(prefix="hhcl-bench-demo-") as scratch:
        summary = run_demo(Path(scratch) / "hhcl-demo")
    before, after = summary["before"], summary["after"]
    print(f"before: mAP {before['mAP']:.1f} rank-1 {before['rank1']:.1f}; after: mAP {after['mAP']:.1f} "
          f"rank-1 {after['rank1']:.1f}; {summary['seconds']:.0f} s")
    if not args.no_doc:
        write_figures(summary, command_line("benchmarks.demo", list(argv) if argv is not None else None),
                      load_before, preset_summary())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
