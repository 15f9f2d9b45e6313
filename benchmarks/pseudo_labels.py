"""Time and memory of hhcl.cluster.pseudo_labels on synthetic re-ID-like features.

    python -m benchmarks.pseudo_labels                    # N = 12,936, 16,522 and 100,000
    python -m benchmarks.pseudo_labels --sizes 12936      # a quick run
    python -m benchmarks.pseudo_labels --sizes 12936 --knn faiss
    python -m benchmarks.pseudo_labels --sizes 1000000 --knn approximate      # 512-d, a million images

With an approximate ``--knn`` the run is about scale: 512-d features by default (OSNet's
embedding; 1M x 2048-d float32 alone is 8 GB), each size of ``--sizes`` plus
``--agreement-size`` (100,000) for the growth exponent of time and memory between them
(``t ~ N^a``), and the agreement at ``--agreement-size``: the adjusted Rand index between the
approximate and the exact pseudo-labels, for each of ``--agreement-dims`` (512 and 2048). Its
table goes to the ``pseudo-labels-approximate`` block.

Features: 2048-d (``--dim``), unit length, fixed seed; about 17 images per identity, two images of an
identity at cosine 0.6-0.8, 3% outliers belonging to no identity. Each size runs in a fresh
process, so that its peak memory is its own. The baseline is the kNN in the same run: the issue
asks that everything after it costs little (total <= 1.3x kNN at N=12,936).

Reported per size: wall-clock and process CPU seconds per phase (knn, reciprocal_sets, weights,
query_expansion, jaccard, dbscan), total, total/kNN, peak resident memory of the process and its rise above the resident
memory once the features were built (the high-water mark is reset there, Linux only), clusters,
outliers and the adjusted Rand index against the true identities (outliers as singletons).
On a machine shared with other work, wall time far above CPU time means the run waited for a
core: compare the CPU columns then. The kNN is numpy's float32 matmul, so its speed is that of
the OpenBLAS kernel chosen at import: where OPENBLAS_CORETYPE pins an AVX2 kernel (Haswell) on
a CPU with AVX-512, unsetting it made the kNN about 1.9x faster on this project's machines.

The table is written to the ``pseudo-labels`` block of docs/benchmarks.md (``--no-doc``: print only).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import subprocess
import sys
import tempfile

import numpy as np

from benchmarks.report import add_doc_argument, command_line, machine_load, table, write_block

DEFAULT_SIZES = (12936, 16522, 100000)
# HHCL's DBSCAN radius per benchmark: 0.45 on Market (12,936 training images), 0.6 on Duke.
EPS_BY_SIZE = {12936: 0.45, 16522: 0.6}
DEFAULT_EPS = 0.6


def synthetic_features(
    num_images: int,
    dim: int = 2048,
    seed: int = 0,
    images_per_identity: int = 17,
    cosine: tuple[float, float] = (0.6, 0.8),
    outlier_fraction: float = 0.03,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, dim) float32 unit vectors and their identities (N,) int64 (-1: outlier).

    An image is sqrt(c) * centre + sqrt(1 - c) * noise with c drawn per identity in `cosine`,
    so two images of one identity have cosine about c. Built in chunks: the peak is the output.
    """
    rng = np.random.default_rng(seed)
    num_outliers = int(round(outlier_fraction * num_images))
    num_identities = max(1, (num_images - num_outliers) // images_per_identity)
    identities = np.concatenate(
        [rng.integers(0, num_identities, num_images - num_outliers), np.full(num_outliers, -1)]
    )
    rng.shuffle(identities)
    centres = rng.standard_normal((num_identities, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    closeness = rng.uniform(*cosine, size=num_identities).astype(np.float32)
    features = np.empty((num_images, dim), dtype=np.float32)
    chunk = 8192
    for start in range(0, num_images, chunk):
        ids = identities[start : start + chunk]
        noise = rng.standard_normal((ids.shape[0], dim), dtype=np.float32)
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        mix = np.where(ids >= 0, closeness[ids], 0.0).astype(np.float32)[:, None]
        block = np.sqrt(mix) * centres[np.maximum(ids, 0)] + np.sqrt(1 - mix) * noise
        features[start : start + chunk] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return features, identities


def _memory_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_memory() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def outliers_as_singletons(labels: np.ndarray) -> np.ndarray:
    """Labels where each -1 becomes a cluster of its own (an outlier agrees with no other image)."""
    return np.where(labels >= 0, labels, labels.max() + 1 + np.arange(len(labels)))


def measure_one(num_images: int, eps: float, knn: str, seed: int, dim: int = 2048,
                labels_path: str | None = None) -> dict:
    """Build the features, run pseudo_labels once, return its figures (runs in a worker); the
    labels are saved to ``labels_path`` (.npy) when given."""
    from sklearn.metrics import adjusted_rand_score

    from hhcl.cluster import pseudo_labels

    features, identities = synthetic_features(num_images, dim=dim, seed=seed)
    gc.collect()
    resident_before = _memory_kib("VmRSS")
    peak_was_reset = _reset_peak_memory()
    labels, stats = pseudo_labels(features, eps=eps, knn=knn)
    peak = _memory_kib("VmHWM")
    if labels_path:
        np.save(labels_path, labels)
    truth = outliers_as_singletons(identities)
    found = outliers_as_singletons(labels)
    return {
        "num_images": num_images,
        "eps": eps,
        "knn": knn,
        "dim": dim,
        "knn_described": stats["knn"],
        "features_mib": features.nbytes / 2**20,
        "peak_mib": peak / 1024 if peak else None,
        "above_features_mib": (peak - resident_before) / 1024 if peak and peak_was_reset else None,
        "num_clusters": stats["num_clusters"],
        "num_outliers": stats["num_outliers"],
        "adjusted_rand": float(adjusted_rand_score(truth, found)),
        "seconds": stats["seconds"],
        "cpu_seconds": stats["cpu_seconds"],
    }


def _print_table(results: list[dict]) -> None:
    phases = ("knn", "reciprocal_sets", "weights", "query_expansion", "jaccard", "dbscan", "total")
    for clock, title in (("seconds", "wall s"), ("cpu_seconds", "CPU s")):
        print(f"{title:>18}" + "".join(f"{r['num_images']:>12,}" for r in results))
        for phase in phases:
            print(f"{phase:>18}" + "".join(f"{r[clock][phase]:>12.2f}" for r in results))
        ratios = [r[clock]["total"] / r[clock]["knn"] for r in results]
        print(f"{'total / kNN':>18}" + "".join(f"{ratio:>12.3f}" for ratio in ratios))
    rows = {
        "features MiB": [f"{r['features_mib']:.0f}" for r in results],
        "peak RSS MiB": [f"{r['peak_mib']:.0f}" if r["peak_mib"] else "n/a" for r in results],
        "above feat. MiB": [f"{r['above_features_mib']:.0f}" if r["above_features_mib"] else "n/a" for r in results],
        "eps": [f"{r['eps']}" for r in results],
        "clusters": [f"{r['num_clusters']}" for r in results],
        "outliers": [f"{r['num_outliers']}" for r in results],
        "adjusted Rand": [f"{r['adjusted_rand']:.4f}" for r in results],
    }
    for name, values in rows.items():
        print(f"{name:>18}" + "".join(f"{v:>12}" for v in values))


APPROXIMATE_METHODS = ("approximate", "faiss-ivf", "faiss-hnsw")
AGREEMENT_SIZE = 100_000
PROJECTED_SIZE = 10_000_000  # the scale of docs/scaling.md, projected from the measured growth


def run_worker(size: int, knn: str, seed: int, eps: float | None, dim: int, labels_path: str | None = None) -> dict:
    """measure_one in a fresh process (its peak memory is its own)."""
    command = [sys.executable, "-m", "benchmarks.pseudo_labels", "--worker", "--sizes", str(size), "--knn", knn,
               "--seed", str(seed), "--dim", str(dim)]
    if eps is not None:
        command += ["--eps", str(eps)]
    if labels_path:
        command += ["--labels-out", labels_path]
    finished = subprocess.run(command, capture_output=True, text=True)
    if finished.returncode != 0:
        print(finished.stderr, file=sys.stderr)
        raise SystemExit(finished.returncode)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def growth_exponent(small: dict, large: dict, key) -> float | None:
    """``a`` in ``value ~ N^a`` between two results (None when a value is missing or zero)."""
    a, b = key(small), key(large)
    if not a or not b:
        return None
    return math.log(b / a) / math.log(large["num_images"] / small["num_images"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of images")
    parser.add_argument("--eps", type=float, default=None, help="DBSCAN eps (default: 0.45 / 0.6 by size)")
    parser.add_argument("--knn", default="auto",
                        help="kNN method (auto, exact, approximate, matmul, faiss, faiss-ivf, faiss-hnsw)")
    parser.add_argument("--dim", type=int, default=None, help="feature dimension (default 2048; 512 with an "
                        "approximate --knn)")
    parser.add_argument("--agreement-size", type=int, default=AGREEMENT_SIZE,
                        help="approximate --knn: the size of the growth baseline and of the agreement with exact")
    parser.add_argument("--agreement-dims", type=int, nargs="*", default=[512, 2048],
                        help="approximate --knn: feature dimensions of the agreement with exact (none: skip it)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--labels-out", default=None, help=argparse.SUPPRESS)
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()
    approximate = args.knn in APPROXIMATE_METHODS
    dim = args.dim or (512 if approximate else 2048)

    if args.worker:
        eps = args.eps if args.eps is not None else EPS_BY_SIZE.get(args.sizes[0], DEFAULT_EPS)
        print(json.dumps(measure_one(args.sizes[0], eps, args.knn, args.seed, dim, args.labels_out)))
        return 0

    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kNN method {args.knn!r}, {dim}-d", flush=True)
    if approximate:
        return main_approximate(args, dim, argv, load_before)
    results = []
    for size in args.sizes or DEFAULT_SIZES:
        result = run_worker(size, args.knn, args.seed, args.eps, dim)
        results.append(result)
        seconds, cpu = result["seconds"], result["cpu_seconds"]
        print(
            f"N={size:,}: total {seconds['total']:.2f} s, kNN {seconds['knn']:.2f} s, "
            f"ratio {seconds['total'] / seconds['knn']:.3f} (CPU: {cpu['total']:.2f} s, "
            f"ratio {cpu['total'] / cpu['knn']:.3f})",
            flush=True,
        )
    _print_table(results)
    if not args.no_doc:
        write_block("pseudo-labels", render_markdown(results),
                    command_line("benchmarks.pseudo_labels", argv), load_before)
    return 0


def main_approximate(args, dim: int, argv: list[str] | None, load_before: float | None) -> int:
    """The scale run: each size with the approximate search, the growth from --agreement-size, and the
    agreement with the exact labels at --agreement-size."""
    from sklearn.metrics import adjusted_rand_score

    sizes = sorted(set([args.agreement_size, *(args.sizes or [1_000_000])]))
    results = []
    agreements = []
    with tempfile.TemporaryDirectory(prefix="hhcl-bench-pseudo-labels-") as tmp:
        for size in sizes:
            result = run_worker(size, args.knn, args.seed, args.eps, dim)
            results.append(result)
            print(f"N={size:,} {dim}-d: total {result['seconds']['total']:.1f} s (kNN {result['seconds']['knn']:.1f} s), "
                  f"peak {result['peak_mib']:.0f} MiB, ARI vs true {result['adjusted_rand']:.4f}; "
                  f"{result['knn_described']}", flush=True)
        for agreement_dim in args.agreement_dims:
            runs = {}
            for method in (args.knn, "exact"):
                path = f"{tmp}/labels-{agreement_dim}-{method}.npy"
                runs[method] = run_worker(args.agreement_size, method, args.seed, args.eps, agreement_dim, path)
                runs[method]["labels"] = np.load(path)
            ari = float(adjusted_rand_score(outliers_as_singletons(runs["exact"]["labels"]),
                                            outliers_as_singletons(runs[args.knn]["labels"])))
            agreements.append({"dim": agreement_dim, "adjusted_rand": ari,
                               "approximate_seconds": runs[args.knn]["seconds"]["total"],
                               "exact_seconds": runs["exact"]["seconds"]["total"],
                               "approximate_knn_seconds": runs[args.knn]["seconds"]["knn"],
                               "exact_knn_seconds": runs["exact"]["seconds"]["knn"]})
            print(f"agreement at N={args.agreement_size:,}, {agreement_dim}-d: ARI approximate vs exact {ari:.4f}; "
                  f"total {runs[args.knn]['seconds']['total']:.1f} s vs {runs['exact']['seconds']['total']:.1f} s",
                  flush=True)
    _print_table(results)
    markdown = render_approximate_markdown(results, agreements, args.knn, dim)
    print(markdown)
    if not args.no_doc:
        write_block("pseudo-labels-approximate", markdown, command_line("benchmarks.pseudo_labels", argv), load_before)
    return 0


PHASE_TITLES = {"knn": "kNN", "reciprocal_sets": "reciprocal sets", "weights": "weights",
                "query_expansion": "query expansion", "jaccard": "Jaccard", "dbscan": "DBSCAN"}


def render_markdown(results: list[dict]) -> str:
    """The docs block: one column per size; wall seconds per phase, memory, clusters and agreement."""

    def mib(value: float | None) -> str:
        return f"{value:.0f}" if value else "n/a"

    rows = [[f"{title} (s)", *(f"{r['seconds'][phase]:.2f}" for r in results)] for phase, title in PHASE_TITLES.items()]
    rows += [
        ["**total (s)**", *(f"**{r['seconds']['total']:.2f}**" for r in results)],
        ["total / kNN (wall)", *(f"{r['seconds']['total'] / r['seconds']['knn']:.3f}" for r in results)],
        ["total / kNN (CPU)", *(f"{r['cpu_seconds']['total'] / r['cpu_seconds']['knn']:.3f}" for r in results)],
        ["peak memory (MiB)", *(mib(r["peak_mib"]) for r in results)],
        ["above the features (MiB)", *(mib(r["above_features_mib"]) for r in results)],
        ["eps", *(f"{r['eps']}" for r in results)],
        ["clusters / outliers", *(f"{r['num_clusters']} / {r['num_outliers']}" for r in results)],
        ["adjusted Rand vs true identities", *(f"{r['adjusted_rand']:.4f}" for r in results)],
    ]
    return "\n".join([
        "## Pseudo-labels: sparse Jaccard distance + DBSCAN (`python -m benchmarks.pseudo_labels`)", "",
        "Synthetic clustered 2048-d features, fixed seed, ~17 images per identity, within-identity cosine "
        f"0.6-0.8, a few per cent outliers; kNN method `{results[0]['knn']}`. Each size runs in a fresh process. "
        "Quick run: `--sizes 12936`. Targets: total ≤ 1.3x kNN and ≤ 1 GB above the features at 12,936; ≤ 5 min "
        "and ≤ 4 GB at 100,000. Wall time far above CPU time means the run waited for a core.", "",
        table(["", *(f"{r['num_images']:,}" for r in results)], rows),
    ])


def render_approximate_markdown(results: list[dict], agreements: list[dict], knn: str, dim: int) -> str:
    """The scale block: phases, memory and growth per size; then the agreement with the exact labels."""

    def mib(value: float | None) -> str:
        return f"{value:,.0f}" if value else "n/a"

    base = results[0]
    rows = [[f"{title} (s)", *(f"{r['seconds'][phase]:.1f}" for r in results)] for phase, title in PHASE_TITLES.items()]
    rows += [
        ["**total (s)**", *(f"**{r['seconds']['total']:.1f}**" for r in results)],
        ["total CPU (s)", *(f"{r['cpu_seconds']['total']:.1f}" for r in results)],
        ["peak memory (MiB)", *(mib(r["peak_mib"]) for r in results)],
        ["features (MiB)", *(mib(r["features_mib"]) for r in results)],
        ["clusters / outliers", *(f"{r['num_clusters']:,} / {r['num_outliers']:,}" for r in results)],
        ["adjusted Rand vs true identities", *(f"{r['adjusted_rand']:.4f}" for r in results)],
    ]
    growth = []
    for result in results[1:]:
        time_exponent = growth_exponent(base, result, lambda r: r["seconds"]["total"])
        memory_exponent = growth_exponent(base, result, lambda r: r["peak_mib"])
        growth.append(f"from {base['num_images']:,} to {result['num_images']:,} images, total time grows as "
                      f"N^{time_exponent:.2f} and peak memory as N^{memory_exponent:.2f}")
    if len(results) > 1 and time_exponent is not None and memory_exponent is not None:
        largest = results[-1]
        scale = PROJECTED_SIZE / largest["num_images"]
        growth.append(f"projected at {PROJECTED_SIZE:,} images on this machine with the same exponents (docs/scaling.md): "
                      f"{largest['seconds']['total'] * scale ** time_exponent / 3600:.1f} h and "
                      f"{largest['peak_mib'] * scale ** memory_exponent / 1024:.0f} GB peak")
    agreement_rows = [[f"{a['dim']}", f"{a['adjusted_rand']:.4f}", f"{a['approximate_knn_seconds']:.1f} / "
                       f"{a['exact_knn_seconds']:.1f}", f"{a['approximate_seconds']:.1f} / {a['exact_seconds']:.1f}"]
                      for a in agreements]
    lines = [
        f"## Pseudo-labels at scale: approximate kNN (`python -m benchmarks.pseudo_labels --knn {knn}`)", "",
        f"The synthetic features of the block above at {dim}-d; kNN `{knn}`: {results[-1]['knn_described']}. "
        "Each size runs in a fresh process. Targets: 1M images x 512-d in ≤ 30 min at ≤ 12 GB peak; "
        "adjusted Rand index ≥ 0.99 between approximate and exact labels at 100,000 images.", "",
        table(["", *(f"{r['num_images']:,}" for r in results)], rows), "",
        "Growth: " + "; ".join(growth) + "." if growth else "",
    ]
    if agreements:
        lines += ["", f"Agreement at {agreements[0].get('size', results[0]['num_images']):,} images "
                  "(same synthetic features, exact search = `cluster.knn: exact`):", "",
                  table(["dim", "adjusted Rand, approximate vs exact", "kNN s (approx. / exact)",
                         "total s (approx. / exact)"], agreement_rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
