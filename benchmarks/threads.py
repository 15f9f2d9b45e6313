"""Training speed by thread count and OpenMP wait policy, on an idle machine and beside another job.

    python -m benchmarks.threads                 # osnet_x0_25 at 256x128, batch 32: the adapt preset's step
    python -m benchmarks.threads --steps 4 --no-doc

Each setting runs in a fresh process (the OpenMP runtime reads its wait policy when torch loads):
threads 1 and 2, wait policy unset (the OpenMP runtime's default: spin a while, then sleep),
``ACTIVE`` (threads spin while waiting) and ``PASSIVE`` (they sleep), each once idle and once
beside one other CPU-bound process (a plain
Python loop, the "another job on the shared machine" of a practitioner). A setting's figure is the
median images/s of its training steps (forward, loss, backward, Adam step) after a warm-up.

hhcl's default is the row marked so: ``train.num_threads: 0``, auto, which takes one thread per core
that is idle when the run starts (``hhcl.engine.runtime.choose_num_threads``), with the wait policy
left to the environment. The goal is a default within 1.2x of the best
setting in each condition. The figures are written to the ``threads`` block of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time

from benchmarks.report import add_doc_argument, command_line, machine_load, table, write_block

POLICIES = (None, "ACTIVE", "PASSIVE")  # None: OMP_WAIT_POLICY unset, the OpenMP runtime's own default
AUTO = (0, None)  # train.num_threads 0: one thread per core idle at the start (hhcl.engine.runtime)


def measure(threads: int, steps: int, arch: str, batch: int, height: int, width: int) -> float:
    """Median images/s of ``steps`` training steps with ``threads`` torch threads (in this process)."""
    import torch

    from hhcl.engine.runtime import choose_num_threads
    from hhcl.models import build_model

    torch.manual_seed(0)
    torch.set_num_threads(choose_num_threads(threads)[0])  # 0: hhcl's auto, as a training run starts
    model = build_model(arch).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    images = torch.randn(batch, 3, height, width)
    rates = []
    for step in range(steps + 1):
        tick = time.perf_counter()
        features = model(images)
        loss = features.pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step:  # the first step warms up the allocator and the kernels
            rates.append(batch / (time.perf_counter() - tick))
    return statistics.median(rates)


def busy_loop(stop) -> None:
    """Another job on the machine: one core of pure-Python work until ``stop`` is set."""
    total = 0
    while not stop.is_set():
        for value in range(100_000):
            total += value * value


def run_setting(threads: int, policy: str | None, args: argparse.Namespace) -> float:
    env = dict(os.environ)
    if policy is None:
        env.pop("OMP_WAIT_POLICY", None)
    else:
        env["OMP_WAIT_POLICY"] = policy
    code = ("import json, sys; from benchmarks.threads import measure; "
            f"print(json.dumps(measure({threads}, {args.steps}, {args.arch!r}, {args.batch}, {args.height}, {args.width})))")
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return float(json.loads(output.strip().splitlines()[-1]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="osnet_x0_25")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--steps", type=int, default=6)
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()
    cores = len(os.sched_getaffinity(0))
    settings = [(threads, policy) for threads in sorted({1, cores}) for policy in POLICIES] + [AUTO]
    results: dict[tuple, dict[str, float]] = {}
    for condition in ("idle", "loaded"):
        stop = multiprocessing.Event()
        other = multiprocessing.Process(target=busy_loop, args=(stop,), daemon=True) if condition == "loaded" else None
        if other is not None:
            other.start()
        try:
            for threads, policy in settings:
                results.setdefault((threads, policy), {})[condition] = run_setting(threads, policy, args)
                print(f"{condition}: {threads} threads, {policy}: {results[(threads, policy)][condition]:.1f} images/s",
                      flush=True)
        finally:
            if other is not None:
                stop.set()
                other.join()
    best = {condition: max(values[condition] for values in results.values()) for condition in ("idle", "loaded")}
    default = AUTO
    rows = []
    for (threads, policy), values in results.items():
        name = "auto (`train.num_threads: 0`)" if threads == 0 else f"{threads} thread{'s' if threads > 1 else ''}"
        rows.append([f"{name}, {policy or 'policy unset'}"
                     + (" (*hhcl's default*)" if (threads, policy) == default else ""),
                     f"{values['idle']:.1f}", f"{best['idle'] / values['idle']:.2f}x",
                     f"{values['loaded']:.1f}", f"{best['loaded'] / values['loaded']:.2f}x"])
    worst = max(best[condition] / results[default][condition] for condition in ("idle", "loaded"))
    markdown = "\n".join([
        "## Threads and OpenMP wait policy (`python -m benchmarks.threads`)", "",
        f"One training step of `{args.arch}` at {args.height}x{args.width}, batch {args.batch}, in images/s "
        f"(median of {args.steps} steps), each setting in a fresh process; *loaded*: beside one other CPU-bound "
        "process. The ratio is the best setting of the condition over this one.", "",
        table(["setting", "idle images/s", "idle: best / this", "loaded images/s", "loaded: best / this"], rows), "",
        f"hhcl's default is within {worst:.2f}x of the best setting in both conditions (goal: 1.2x)."])
    print(markdown)
    if not args.no_doc:
        write_block("threads", markdown, command_line("benchmarks.threads", argv), load_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
