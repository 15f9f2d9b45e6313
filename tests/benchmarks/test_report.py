"""The benchmarks' blocks of docs/benchmarks.md and README.md: markers, header line, renderers."""

import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from benchmarks import demo, report  # noqa: E402

FIXED = {"when": "2026-01-02 03:04", "commit": "abc1234", "cpu": "Test CPU, torch CPU capability AVX512",
         "cores": 2, "load_after": 2.5}


def test_write_block_replaces_only_its_own_block(tmp_path):
    path = tmp_path / "benchmarks.md"
    path.write_text("# Benchmarks\n\nintro\n\n<!-- speed:begin -->\n## Speed\n\nold figures\n<!-- speed:end -->\n\n"
                    "<!-- other:begin -->\nkept\n<!-- other:end -->\n\nfooter\n")
    block = report.write_block("speed", "## Speed\n\n| a | b |\n|---|---|\n| 1 | 2 |\n", "python -m benchmarks.speed",
                               1.25, path, **FIXED)
    text = path.read_text()
    assert "old figures" not in text
    assert block in text
    assert text.startswith("# Benchmarks\n\nintro\n\n<!-- speed:begin -->\n## Speed\n\nCommand: ")
    assert "<!-- other:begin -->\nkept\n<!-- other:end -->\n\nfooter\n" in text
    assert text.count("<!-- speed:begin -->") == 1 and text.count("<!-- speed:end -->") == 1
    # a second run replaces the first, it does not add a block
    report.write_block("speed", "## Speed\n\nnew", "python -m benchmarks.speed", 1.0, path, **FIXED)
    assert path.read_text().count("<!-- speed:begin -->") == 1 and "| 1 | 2 |" not in path.read_text()


def test_write_block_appends_a_missing_block_and_creates_the_file(tmp_path):
    path = tmp_path / "docs" / "benchmarks.md"
    report.write_block("first", "## First\n\nbody", "python -m benchmarks.first", None, path, **FIXED)
    report.write_block("second", "no heading", "python -m benchmarks.second", None, path, **FIXED)
    text = path.read_text()
    assert text.index("<!-- first:end -->") < text.index("<!-- second:begin -->")
    assert "<!-- second:begin -->\nCommand: `python -m benchmarks.second`" in text
    assert text.endswith("\n\nno heading\n<!-- second:end -->\n")


def test_the_header_line_names_command_date_load_commit_and_cpu():
    line = report.header_line("python -m benchmarks.speed --quick", 0.5, 3.25, when="2026-01-02 03:04",
                              commit="abc1234", cpu="Test CPU, torch CPU capability AVX2", cores=2)
    assert line == ("Command: `python -m benchmarks.speed --quick` (2026-01-02 03:04, load average 0.50 before / "
                    "3.25 after on 2 cores, commit abc1234, Test CPU, torch CPU capability AVX2).")
    assert "load average ? before" in report.header_line("c", None, 1.0, **{k: FIXED[k] for k in
                                                                             ("when", "commit", "cpu", "cores")})


def test_the_header_line_reads_this_machine_by_default():
    import torch

    line = report.header_line("python -m benchmarks.speed", report.machine_load(), report.machine_load())
    assert re.search(r"\(\d{4}-\d\d-\d\d \d\d:\d\d, load average ", line)
    assert f"torch CPU capability {torch.backends.cpu.get_cpu_capability()})." in line
    assert re.search(r"commit ([0-9a-f]{4,}(\+changes)?|unknown),", line)


def test_command_line_quotes_its_arguments():
    assert report.command_line("benchmarks.x", ["--note", "two words"]) == "python -m benchmarks.x --note 'two words'"


def test_the_docs_have_a_block_for_every_benchmark():
    text = (REPO_ROOT / "docs" / "benchmarks.md").read_text()
    for name in ("data-pipeline", "evaluation", "pseudo-labels", "backbones", "training", "demo"):
        begin, end = report.markers(name)
        assert text.count(begin) == 1 and text.count(end) == 1 and text.index(begin) < text.index(end), name
    readme = (REPO_ROOT / "README.md").read_text()
    begin, end = report.markers("demo-figures")
    assert readme.count(begin) == 1 and readme.count(end) == 1


FAKE_DEMO = {"before": {"mAP": 15.06, "rank1": 28.44}, "after": {"mAP": 46.61, "rank1": 66.27}, "seconds": 170.4}


def test_the_demo_figures_go_to_the_docs_and_to_the_readme_sentence(tmp_path):
    doc, readme = tmp_path / "benchmarks.md", tmp_path / "README.md"
    doc.write_text("# Benchmarks\n\n<!-- demo:begin -->\nhand-written\n<!-- demo:end -->\n\n## After\n")
    readme.write_text("prints the mAP before and after training <!-- demo-figures:begin -->\n(measured: 1 → 2 mAP)."
                      "<!-- demo-figures:end -->\nIt also writes a picture.\n")
    demo.write_figures(FAKE_DEMO, "python -m benchmarks.demo", 1.0, "A small preset.", doc, readme, **FIXED)
    text = doc.read_text()
    assert "hand-written" not in text and text.endswith("<!-- demo:end -->\n\n## After\n")
    assert "| before training (random init) | 15.1 | 28.4 |" in text
    assert "| after training | 46.6 | 66.3 |" in text
    assert "Gain: +31.5 mAP, +37.8 rank-1 points; 170 s wall" in text
    assert "Command: `python -m benchmarks.demo` (2026-01-02 03:04, load average 1.00 before / 2.50 after" in text
    assert readme.read_text() == (
        "prints the mAP before and after training <!-- demo-figures:begin -->\n(measured by `python -m "
        "benchmarks.demo` at commit abc1234 on 2026-01-02: 15.1 → 46.6 mAP, 28.4 → 66.3 rank-1 in 170 s; machine "
        "and load in [docs/benchmarks.md](docs/benchmarks.md)).<!-- demo-figures:end -->\nIt also writes a picture.\n")


def test_the_demo_description_follows_the_preset():
    from hhcl.config import load_config

    config = load_config("demo")
    description = demo.preset_summary()
    assert f"{config.train.epochs} epochs x {config.train.iters} iterations" in description
    assert f"{config.dataset.height}x{config.dataset.width}" in description


def test_the_benchmark_tables_render_from_their_results():
    from benchmarks import backbones, data_pipeline, evaluation, pseudo_labels, training

    rates = {"per-image Pillow pipeline": (500.0, 1250.0), "hhcl batched transforms": (600.0, 1500.0),
             "decode + resize only": (950.0, 2400.0)}
    augment = {"per-image Pillow pipeline": (1200.0, 3100.0), "hhcl batched transforms": (1800.0, 4400.0)}
    generation = {"render in memory": (510.0, 1275.0), "render + write JPEGs": (410.0, 1050.0)}
    text = data_pipeline.render_markdown("512 synthetic pedestrians", 3, rates, augment, generation)
    assert "| synthetic generation at 128x64, in memory | 510 | 1275 |" in text
    assert "Batched over per-image: 1.20x (decode + augmentation), 1.50x" in text and "target 500: met" in text

    metrics = {"mAP": 0.8372, "cmc": [0.8976], "mINP": 0.7045}
    cases = {"distances": {"seconds": 10.0, "peak_mib": 738.0}, "baseline": {"seconds": 28.4, "peak_mib": 66.0,
             "metrics": metrics}, "evaluate_ranking": {"seconds": 0.2, "peak_mib": 6.0, "metrics": metrics},
             "evaluate_features": {"seconds": 11.9, "peak_mib": 355.0, "metrics": metrics},
             "rerank": {"seconds": 92.4, "peak_mib": 496.0, "metrics": metrics},
             "rerank_dense": {"seconds": 184.8, "peak_mib": 4960.0, "metrics": dict(metrics, mAP=0.8373)}}
    sizes = {"queries": 3368, "gallery": 15913, "distractors": 2798, "identities": 751, "dim": 2048}
    text = evaluation.render_markdown(sizes, cases)
    assert "| `evaluate_ranking` | 0.20 s | +6 MiB | 0.8372 | 0.8976 | 0.7045 |" in text
    assert "**142x** faster than the baseline with identical numbers" in text
    assert "Sparse re-ranking runs **2.00x** the speed of the dense reference at **0.100** of its peak memory" in text
    assert "within 1.0e-04 of the reference's" in text

    result = {"num_images": 100000, "eps": 0.6, "knn": "approximate", "dim": 512, "peak_mib": 1000.0,
              "features_mib": 195.0, "num_clusters": 5700, "num_outliers": 2648, "adjusted_rand": 0.99,
              "seconds": {"knn": 40.0, "reciprocal_sets": 2.0, "weights": 1.0, "query_expansion": 1.0, "jaccard": 1.0,
                          "dbscan": 1.0, "total": 46.0}, "knn_described": "faiss (IndexIVFFlat, approximate)"}
    large = dict(result, num_images=1000000, peak_mib=10000.0,
                 seconds=dict(result["seconds"], total=460.0 * 10 ** 0.3))
    for item in (result, large):
        item["cpu_seconds"] = item["seconds"]
    agreement = {"dim": 512, "adjusted_rand": 0.993, "approximate_seconds": 52.0, "exact_seconds": 68.0,
                 "approximate_knn_seconds": 46.0, "exact_knn_seconds": 58.0}
    text = pseudo_labels.render_approximate_markdown([result, large], [agreement], "approximate", 512)
    assert "total time grows as N^1.30 and peak memory as N^1.00" in text
    assert "| 512 | 0.9930 | 46.0 / 58.0 | 52.0 / 68.0 |" in text

    phases = {"knn": 5.9, "reciprocal_sets": 0.1, "weights": 0.1, "query_expansion": 0.1, "jaccard": 0.1,
              "dbscan": 0.1, "total": 6.4}
    result = {"num_images": 12936, "eps": 0.45, "knn": "auto", "peak_mib": 588.0, "above_features_mib": 124.0,
              "num_clusters": 738, "num_outliers": 354, "adjusted_rand": 0.9972, "seconds": phases,
              "cpu_seconds": phases}
    text = pseudo_labels.render_markdown([result])
    assert "| 12,936 |" in text and "| **total (s)** | **6.40** |" in text and "| clusters / outliers | 738 / 354 |" in text

    rows = [{"variant": "fp32 eager", "images_per_s": 10.0, "speedup": 1.0, "min_cosine": 1.0, "note": ""},
            {"variant": "bf16 autocast + channels_last", "images_per_s": 17.3, "speedup": 1.73,
             "min_cosine": 0.99999, "note": ""},
            {"variant": "torch.compile fp32 + channels_last", "images_per_s": None, "speedup": None,
             "min_cosine": None, "note": "failed: RuntimeError: no compiler"}]
    text = backbones.render_markdown([{"arch": "resnet50", "batch_size": 32, "height": 256, "width": 128,
                                       "rounds": 5, "threads": 2, "results": rows}])
    assert "| fp32 eager (images/s) | 10.0 |" in text
    assert "| bf16 autocast + channels_last (hhcl `--precision bf16`) | 1.73x |" in text
    assert "| torch.compile fp32 + channels_last | - |" in text and "no compiler" in text

    updates = {"identities": 16, "instances": 16, "clusters": 700, "dim": 2048, "device": "cpu",
               "modes": {"hard": {"vectorised_seconds": 0.001, "loop_seconds": 0.0021}}}
    text = training.render_markdown(updates, {"arch": "resnet18", "height": 64, "width": 32, "batch": 32,
                                              "device": "cpu", "rates": {"fp32": 100.0, "bf16": 150.0}})
    assert "| hard | 1.00 | 2.10 | 2.1x |" in text and "bf16 / fp32: 1.50x." in text


def test_export_parity_renders_one_row_per_model():
    from benchmarks import export_parity

    text = export_parity.render_markdown([
        {"arch": "osnet_x0_25", "weights": "osnet.pth", "max_abs_diff": 1.6e-6, "tolerance": 1e-4, "feature_dim": 512,
         "megabytes": 0.9, "seconds": 2.0},
        {"arch": "resnet50", "weights": None, "max_abs_diff": 3.7e-8, "tolerance": 1e-4, "feature_dim": 2048,
         "megabytes": 90.0, "seconds": 9.0}])
    assert "| `osnet_x0_25` | `osnet.pth` | 512 | 0.9 | 1.60e-06 | 1e-04 | 2.0 |" in text
    assert "| `resnet50` | random init, seed 0 | 2048 | 90.0 | 3.70e-08 | 1e-04 | 9.0 |" in text
