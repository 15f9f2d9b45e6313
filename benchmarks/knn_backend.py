"""Which exact kNN search the pseudo-labels should run: hhcl's matmul search against faiss's flat index.

    python -m benchmarks.knn_backend                     # DukeMTMC-reID's 16,522 training images, 512-d
    python -m benchmarks.knn_backend --dim 2048          # ResNet-50's features
    python -m benchmarks.knn_backend --repeats 1 --no-doc

Features: unit vectors shaped like a re-ID training set (benchmarks.pseudo_labels's synthetic
features: ~17 images per identity, fixed seed), ``--num-images`` x ``--dim`` float32; 512-d is
OSNet's embedding. Each method runs :func:`hhcl.cluster.knn.nearest_neighbours` with k = ``--k``
(the pseudo-labels ask k1; the adapt and Duke presets use 20), ``--repeats`` times, interleaved,
after a warm-up on a small slice (faiss's import and thread start are not timed). A method's figure
is its median wall-clock and process CPU seconds; the baseline is ``matmul`` in the same run. Each
method's lists are compared with matmul's: exact methods must give the same lists, so the same
pseudo-labels. Also printed: what ``cluster.knn: auto`` runs on CPU features on this machine.

The table is written to the ``knn-backend`` block of docs/benchmarks.md (``--no-doc``: print only).
On a machine shared with other work, wall time far above CPU time means the run waited for a core.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.report import add_doc_argument, command_line, machine_load, table, write_block

DUKE_TRAIN_IMAGES = 16522
EXACT_METHODS = ("matmul", "faiss")


def time_method(features: np.ndarray, k: int, method: str) -> tuple[float, float, np.ndarray]:
    """``(wall s, CPU s, (N, k) indices)`` of one search."""
    from hhcl.cluster.knn import nearest_neighbours

    wall, cpu = time.perf_counter(), time.process_time()
    neighbours = nearest_neighbours(features, k, method=method)
    return time.perf_counter() - wall, time.process_time() - cpu, neighbours.indices


def measure(features: np.ndarray, k: int, methods: list[str], repeats: int) -> dict[str, dict]:
    """Per method: median ``seconds`` and ``cpu_seconds``, and ``same_lists`` (share of rows equal to matmul's)."""
    for method in methods:  # warm-up: imports, thread pools
        time_method(features[: min(len(features), 1000)], k, method)
    runs: dict[str, list[tuple[float, float]]] = {method: [] for method in methods}
    lists: dict[str, np.ndarray] = {}
    for _ in range(repeats):
        for method in methods:
            seconds, cpu_seconds, indices = time_method(features, k, method)
            runs[method].append((seconds, cpu_seconds))
            lists[method] = indices
    reference = lists.get("matmul")
    return {method: {"seconds": statistics.median(run[0] for run in runs[method]),
                     "cpu_seconds": statistics.median(run[1] for run in runs[method]),
                     "same_lists": None if reference is None else float((lists[method] == reference).all(axis=1).mean())}
            for method in methods}


def thread_counts() -> str:
    import torch

    text = f"torch {torch.get_num_threads()} threads"
    from hhcl.cluster.knn import faiss_available

    if faiss_available():
        import faiss

        text += f", faiss {faiss.__version__} {faiss.omp_get_max_threads()} threads"
    return text


def render_markdown(results: dict[str, dict], num_images: int, dim: int, k: int, repeats: int, auto: str) -> str:
    baseline = results.get("matmul", {}).get("seconds")
    rows = []
    for method, figures in results.items():
        ratio = f"{figures['seconds'] / baseline:.2f}" if baseline else "n/a"
        same = "n/a" if figures["same_lists"] is None else f"{100 * figures['same_lists']:.1f}%"
        rows.append([f"`{method}`", f"{figures['seconds']:.2f}", f"{figures['cpu_seconds']:.2f}", ratio, same])
    return "\n".join([
        "## kNN backend for the pseudo-labels (`python -m benchmarks.knn_backend`)",
        "",
        f"{num_images:,} x {dim} unit features (re-ID-like, fixed seed), k = {k}, median of {repeats} "
        f"run(s) after a warm-up; {thread_counts()}. `cluster.knn: auto` on CPU features runs: {auto}.",
        "",
        table(["method", "wall s", "CPU s", "wall / matmul", "rows equal to matmul's"], rows),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=DUKE_TRAIN_IMAGES)
    parser.add_argument("--dim", type=int, default=512, help="feature size (512: OSNet; 2048: ResNet-50)")
    parser.add_argument("--k", type=int, default=20, help="neighbours per image (the pseudo-labels' k1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=None,
                        help="kNN methods (default: matmul, and faiss when it is installed)")
    parser.add_argument("--seed", type=int, default=0)
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()

    from benchmarks.pseudo_labels import synthetic_features
    from hhcl.cluster.knn import describe_method, faiss_available
    from hhcl.errors import HHCLError

    methods = args.methods or [method for method in EXACT_METHODS if method != "faiss" or faiss_available()]
    if any(method.startswith("faiss") for method in methods) and not faiss_available():
        raise HHCLError("faiss is not installed: pip install 'hhcl[faiss]', or pass --methods matmul")
    features, _ = synthetic_features(args.num_images, dim=args.dim, seed=args.seed)
    print(f"{args.num_images:,} x {args.dim} features, k = {args.k}; {thread_counts()}", flush=True)
    results = measure(features, args.k, methods, args.repeats)
    auto = describe_method("auto", None)
    for method, figures in results.items():
        print(f"{method:>10}: {figures['seconds']:.2f} s wall, {figures['cpu_seconds']:.2f} s CPU, "
              f"rows equal to matmul's: {figures['same_lists']}")
    print(f"cluster.knn auto on CPU runs: {auto}")
    if not args.no_doc:
        write_block("knn-backend", render_markdown(results, args.num_images, args.dim, args.k, args.repeats, auto),
                    command_line("benchmarks.knn_backend", argv), load_before)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
