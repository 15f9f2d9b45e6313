"""The adaptation benchmark's report: tables rendered from stored runs into docs/benchmarks.md.

Runs are stored as JSON under ``benchmarks/results/adaptation/<protocol>/<label>.json``. Two kinds of
block are rendered, each between its own markers:

- the ``folders`` protocol's detailed section (the run labelled ``adapt`` gives the main tables:
  every epoch, the oracle, the goal check; other labels form the variants table; ``findings.md``
  there, written by hand from those runs, follows them);
- one no-harm block per protocol: each test set's zero-shot, the adapted model of every training
  seed of the ``adapt`` preset, the oracle, and **harm** wherever an adapted model ends below
  zero-shot; then the guard's decisions and its share of the epoch time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results" / "adaptation"
FINDINGS_FILE = RESULTS_DIR / "folders" / "findings.md"  # the conclusions drawn from the stored runs, by hand
DOC_PATH = REPO_ROOT / "docs" / "benchmarks.md"
BEGIN_MARKER = "<!-- adaptation:begin -->"
END_MARKER = "<!-- adaptation:end -->"
MAIN_LABEL = "adapt"
_ABSENT = object()  # a key a config lacks: it differs from any value


def gap_closed(zero_shot: float, adapted: float, oracle: float) -> float | None:
    """Fraction of the zero-shot -> oracle gap that the adapted model closes (None without a gap)."""
    gap = oracle - zero_shot
    return (adapted - zero_shot) / gap if gap > 0 else None


def final_metrics(run: dict[str, Any] | None) -> dict[str, dict[str, float]] | None:
    if not run:
        return None
    return next((entry["metrics"] for entry in reversed(run["epochs"]) if "metrics" in entry), None)


def _cell(metrics: dict[str, float] | None) -> str:
    return f"{metrics['mAP']:.1f} / {metrics['rank1']:.1f}" if metrics else "-"


IGNORED_KEYS = ("model.init_weights", "train.num_threads", "dataset.num_workers", "train.device")


def config_differences(reference: dict[str, dict], config: dict[str, dict],
                       defaults: dict[str, dict] | None = None) -> list[tuple[str, Any]]:
    """``(section.key, value)`` where ``config`` differs from ``reference`` (run-environment keys left out).

    A key that either config lacks (a run stored before the option existed) counts with its value in
    ``defaults``, the option's default: that is how such a run behaved.
    """
    defaults = defaults or {}
    sections = [*config, *(section for section in defaults if section not in config)]
    changed = []
    for section in sections:
        section_defaults = defaults.get(section) or {}
        reference_section = reference.get(section) or {}
        reference_values = {**section_defaults, **reference_section}
        assumed = {key: value for key, value in section_defaults.items() if key in reference_section}
        for key, value in {**assumed, **(config.get(section) or {})}.items():
            name = f"{section}.{key}"
            if name not in IGNORED_KEYS and reference_values.get(key, _ABSENT) != value:
                changed.append((name, value))
    return changed


def render_section(results: Sequence[dict[str, Any]], findings: str = "") -> str:
    """The markdown between the markers: main tables from the ``adapt`` run, one row per variant, then ``findings``."""
    from hhcl.config import Config

    defaults = Config().to_dict()  # the value of an option for the runs stored before it existed
    main = next((result for result in results if result["label"] == MAIN_LABEL), None)
    oracle_run = main if main and main.get("oracle") else next((r for r in results if r.get("oracle")), None)
    oracle = final_metrics(oracle_run["oracle"]) if oracle_run else None
    lines = [BEGIN_MARKER, "## Adaptation to unlabeled real cameras (`python -m benchmarks.adaptation`)", "",
             "MSMT17-trained `osnet_x0_25` adapted without labels to the pooled train halves of the five real "
             "folders of `../shared/data`; each test half evaluated on its own (prid2011 cross-camera, the others "
             "one query per identity). Cells are mAP / rank-1 in percent. Protocol and options: the docstring "
             "of `benchmarks/adaptation.py`. Pair precision/recall compare the pseudo-labels with the hidden "
             "identities (diagnosis only); stability is the pair F-score between consecutive epochs' "
             "pseudo-labels (no label used).", ""]
    if main is None:
        lines += ["No run of the `adapt` preset is stored yet.", ""]
    else:
        names = list(main["test_sets"])
        header = "| model | " + " | ".join(names) + " | mean |"
        lines += [f"Command: `{main['command']}` ({main['finished']}, {main['threads']} threads, "
                  f"load average {main['load_average']['before']} before / {main['load_average']['after']} after "
                  f"on {main['cpu_count']} cores; wall time {main['seconds'] / 60:.1f} min: zero-shot "
                  f"{main['zero_shot_seconds']:.0f} s, adapted {main['adapted']['seconds']:.0f} s"
                  + (f", oracle {main['oracle']['seconds']:.0f} s" if main.get("oracle") else "") + ").", "",
                  f"Training pool: {main['pool_images']} images, no identities. Test sets (queries / gallery): "
                  + ", ".join(f"{name} {v['queries']} / {v['gallery']}" for name, v in main["test_sets"].items())
                  + ".", "", header, "|" + "---|" * (len(names) + 2)]

        def row(title: str, metrics) -> str:
            return f"| {title} | " + " | ".join(_cell(metrics.get(name) if metrics else None)
                                                for name in names + ["mean"]) + " |"

        lines.append(row("zero-shot", main["zero_shot"]))
        for entry in main["adapted"]["epochs"]:
            if "metrics" in entry:
                lines.append(row(f"adapted, epoch {entry['epoch']}", entry["metrics"]))
        if oracle:
            source = "" if oracle_run is main else f", from run `{oracle_run['label']}`"
            lines.append(row(f"oracle (true identities{source})", oracle))
        adapted_final = final_metrics(main["adapted"])
        if oracle and adapted_final:
            closed = gap_closed(main["zero_shot"]["mean"]["mAP"], adapted_final["mean"]["mAP"], oracle["mean"]["mAP"])
            above = [name for name in names if adapted_final[name]["mAP"] > main["zero_shot"][name]["mAP"]]
            lines += ["", f"Goal check (last epoch, chosen in advance): mean mAP {adapted_final['mean']['mAP']:.1f} vs "
                      f"zero-shot {main['zero_shot']['mean']['mAP']:.1f} and oracle {oracle['mean']['mAP']:.1f}: "
                      + (f"{100 * closed:.0f}% of the gap closed" if closed is not None else "no gap")
                      + f"; above zero-shot on {len(above)} of {len(names)} test sets"
                      + (f" (not on {', '.join(n for n in names if n not in above)})" if len(above) < len(names) else "")
                      + "."]
        seed_runs = [main] + [result for result in results if result is not main and
                              [key for key, _ in config_differences(main["config"], result["config"], defaults)] == ["train.seed"]]
        if oracle and len(seed_runs) > 1:
            lines += ["", seed_summary(seed_runs, oracle["mean"]["mAP"], names)]
        lines += ["", "| epoch | eps | clusters | outliers (unreliable) | pair precision | pair recall | stability | "
                  "loss | seconds |", "|---|---|---|---|---|---|---|---|---|"]
        for entry in main["adapted"]["epochs"]:
            seconds = sum(entry["train_seconds"].values()) + entry["measure_seconds"]
            lines.append(f"| {entry['epoch']} | " + (f"{entry['eps']:.2f}" if "eps" in entry else "-")
                         + f" | {entry['clusters']} | {entry['outliers']} ({entry.get('unreliable', 0)}) | "
                         f"{entry.get('pair_precision', float('nan')):.3f} | {entry.get('pair_recall', float('nan')):.3f} | "
                         + (f"{entry['stability']:.3f}" if "stability" in entry else "-")
                         + f" | {entry['loss']:.3f} | {seconds:.0f} |")
    variants = [result for result in results if result["label"] != MAIN_LABEL]
    if variants:
        lines += ["", "Variants (one run each; the adapted model after its last epoch; \"what changed\" is the "
                  "difference from the main run's config; gap closed against the main run's oracle):", "",
                  "| variant | what changed | mean mAP / R1 | worst set vs zero-shot (mAP) | gap closed | "
                  "last pair P / R | wall min | note |", "|---|---|---|---|---|---|---|---|"]
        for result in sorted(results, key=lambda r: r["finished"]):
            metrics = final_metrics(result["adapted"])
            if metrics is None:
                continue
            deltas = {name: metrics[name]["mAP"] - result["zero_shot"][name]["mAP"] for name in result["test_sets"]}
            worst = min(deltas, key=deltas.get)
            closed = (gap_closed(result["zero_shot"]["mean"]["mAP"], metrics["mean"]["mAP"], oracle["mean"]["mAP"])
                      if oracle else None)
            last = result["adapted"]["epochs"][-1]
            changed = ", ".join(f"`{key}={value}`" for key, value in
                                config_differences(main["config"] if main else {}, result["config"],
                                                   defaults)) or "-"
            lines.append(f"| {result['label']} | {changed} | {_cell(metrics['mean'])} | {worst} {deltas[worst]:+.1f} | "
                         + (f"{100 * closed:.0f}%" if closed is not None else "-")
                         + f" | {last.get('pair_precision', float('nan')):.2f} / {last.get('pair_recall', float('nan')):.2f}"
                         f" | {result['seconds'] / 60:.1f} | {result.get('note') or ''} |")
    if findings.strip():
        lines += ["", findings.strip()]
    lines.append(END_MARKER)
    return "\n".join(lines)


def seed_summary(runs: Sequence[dict[str, Any]], oracle_mean: float, names: Sequence[str]) -> str:
    """One line on runs of the same config with other training seeds: is the goal met in each?"""
    parts, every_set = [], 0
    per_set = {name: [] for name in names}
    for run in runs:
        final = final_metrics(run["adapted"])
        closed = gap_closed(run["zero_shot"]["mean"]["mAP"], final["mean"]["mAP"], oracle_mean)
        seed = run["config"].get("train", {}).get("seed", "?")
        parts.append(f"seed {seed}: {final['mean']['mAP']:.1f}" + (f" ({100 * closed:.0f}%)" if closed is not None else ""))
        every_set += all(final[name]["mAP"] > run["zero_shot"][name]["mAP"] for name in names)
        for name in names:
            per_set[name].append(final[name]["mAP"] - run["zero_shot"][name]["mAP"])
    spread = ", ".join(f"{name} {min(values):+.1f} to {max(values):+.1f}" for name, values in per_set.items())
    return (f"Across {len(runs)} training seeds (`train.seed`; same config otherwise), mean mAP and gap closed: "
            + "; ".join(parts) + f". Above zero-shot on every test set in {every_set} of {len(runs)} runs; "
            f"change against zero-shot per set: {spread}.")


def _same_training(config: dict, other: dict) -> bool:
    """Whether two runs' oracles are the same training: every section but the pseudo-label ones is equal."""
    return all(config.get(section) == other.get(section) for section in ("model", "memory", "optim", "train")
               if section != "train") and all(
        config.get("train", {}).get(key) == other.get("train", {}).get(key)
        for key in set(config.get("train", {})) | set(other.get("train", {})) if key not in ("num_threads", "device"))


def protocol_markers(protocol: str) -> tuple[str, str]:
    return f"<!-- adaptation-{protocol}:begin -->", f"<!-- adaptation-{protocol}:end -->"


def seed_runs(results: Sequence[dict[str, Any]], label: str = MAIN_LABEL) -> list[dict[str, Any]]:
    """The runs of ``label`` and of ``label-seed-N``, by seed."""
    pattern = re.compile(re.escape(label) + r"(-seed-\d+)?$")
    runs = [result for result in results if pattern.match(result["label"])]
    return sorted(runs, key=lambda run: run["config"].get("train", {}).get("seed", 0))


def render_protocol_section(protocol: str, results: Sequence[dict[str, Any]], label: str = MAIN_LABEL,
                            findings: str = "") -> str:
    """The no-harm block of one protocol: zero-shot, each seed's adapted model, oracle and harm per test set."""
    begin, end = protocol_markers(protocol)
    runs = seed_runs(results, label)
    lines = [begin, f"### Protocol `{protocol}` (`python -m benchmarks.adaptation --protocol {protocol}`)", ""]
    if not runs:
        return "\n".join(lines + [f"No run of the `{label}` preset is stored for this protocol yet.", end])
    first = runs[0]
    names = list(first["test_sets"])
    # the oracle trains on the true identities: a stored run's oracle stands for the others' when
    # their supervised configs match (the pseudo-label settings do not enter it)
    oracle_run = next((run for run in runs if run.get("oracle")), None) or next(
        (run for run in results if run.get("oracle") and _same_training(run["config"], runs[0]["config"])), None)
    oracle = final_metrics(oracle_run["oracle"]) if oracle_run else None
    seeds = [run["config"].get("train", {}).get("seed", "?") for run in runs]
    lines += [f"Command: `{first['command']}` ({first['finished']}, {first['threads']} threads, load average "
              f"{first['load_average']['before']} before / {first['load_average']['after']} after on "
              f"{first['cpu_count']} cores, {first.get('cpu', 'CPU not recorded')}, commit {first.get('commit', '?')}). "
              f"Pool: {first['pool_images']} images in {first.get('pool_cameras', '?')} cameras, no identities. "
              "Test sets (queries / gallery): "
              + ", ".join(f"{name} {v['queries']} / {v['gallery']}" for name, v in first["test_sets"].items()) + ".",
              "", "mAP in percent after the last epoch; one column per training seed (`train.seed`).", "",
              "| test set | zero-shot | " + " | ".join(f"adapted, seed {seed}" for seed in seeds)
              + " | worst change | oracle" + ("" if oracle_run in runs or oracle_run is None
                                               else f" (run `{oracle_run['label']}`)") + " | harm |", "|---|---|" + "---|" * len(seeds) + "---|---|---|"]
    harmed = []
    for name in names + ["mean"]:
        zero = first["zero_shot"][name]["mAP"]
        finals = [final_metrics(run["adapted"])[name]["mAP"] for run in runs]
        worst = min(final - zero for final in finals)
        harm = "**harm**" if worst < 0 else "no"
        if worst < 0:
            harmed.append(name)
        lines.append(f"| {name} | {zero:.1f} | " + " | ".join(f"{final:.1f}" for final in finals)
                     + f" | {worst:+.1f} | " + (f"{oracle[name]['mAP']:.1f}" if oracle else "-") + f" | {harm} |")
    gains = [final_metrics(run["adapted"])["mean"]["mAP"] - first["zero_shot"]["mean"]["mAP"] for run in runs]
    lines += ["", f"Goal (no harm on every test set, a gain on the mean, {len(runs)} seeds): "
              + ("met" if not harmed and min(gains) > 0 else "not met")
              + f"; mean change {', '.join(f'{gain:+.1f}' for gain in gains)}"
              + (f"; harm on {', '.join(harmed)}" if harmed else "") + "."]
    guard_lines = []
    for run in runs:
        epochs = run["adapted"]["epochs"]
        decisions = [entry["guard"]["decision"] for entry in epochs if entry.get("guard")]
        if not decisions:
            continue
        guard_seconds = sum(entry["guard"].get("seconds", 0.0) for entry in epochs if entry.get("guard"))
        epoch_seconds = sum(sum(entry["train_seconds"].values()) for entry in epochs)
        last = epochs[-1]["guard"]
        shares = ", ".join(f"{key.replace('_', ' ')} {last[key]:.2f}" for key in
                           ("clustered_share", "cross_camera_share", "eps_stability", "epoch_stability", "drift")
                           if last.get(key) is not None)
        guard_lines.append(f"- seed {run['config'].get('train', {}).get('seed', '?')}: "
                           f"{' / '.join(decisions)}; last epoch {shares}; "
                           f"guard {100 * guard_seconds / max(epoch_seconds, 1e-9):.1f}% of the epochs' time"
                           + (f"; {run['adapted']['stop_reason']}" if run["adapted"].get("stop_reason") else ""))
    if guard_lines:
        lines += ["", "Guard decisions per epoch (label-free):", *guard_lines]
    lines += ["", "| epoch (seed " + str(seeds[0]) + ") | clusters | outliers | mutual pairs | pair precision | "
              "pair recall | mean mAP |", "|---|---|---|---|---|---|---|"]
    for entry in first["adapted"]["epochs"]:
        metrics = entry.get("metrics")
        lines.append(f"| {entry['epoch']} | {entry['clusters']} | {entry['outliers']} | {entry.get('mutual_pairs', '-')} | "
                     f"{entry.get('pair_precision', float('nan')):.3f} | {entry.get('pair_recall', float('nan')):.3f} | "
                     + (f"{metrics['mean']['mAP']:.1f}" if metrics else "-") + " |")
    lines += phase_lines(first)
    variants = [run for run in results if run not in runs and final_metrics(run["adapted"])]
    groups = seeded_groups(variants)
    if groups:
        lines += option_table(groups, first, names)
        variants = [run for run in variants if not any(run in group for group in groups.values())]
    if variants and protocol != "folders":  # the folders section lists its variants in a table of its own
        lines += ["", "Other runs on this protocol (one seed each; mAP after the last epoch, change against zero-shot):",
                  ""]
        for run in sorted(variants, key=lambda r: r["finished"]):
            final = final_metrics(run["adapted"])
            changes = ", ".join(f"{name} {final[name]['mAP']:.1f} ({final[name]['mAP'] - run['zero_shot'][name]['mAP']:+.1f})"
                                for name in names)
            overrides = ", ".join(f"`{item}`" for item in run.get("overrides", [])) or "-"
            lines.append(f"- `{run['label']}` ({overrides}): {changes}" + (f"; {run['note']}" if run.get("note") else ""))
    if findings.strip():
        lines += ["", findings.strip()]
    lines.append(end)
    return "\n".join(lines)


def seeded_groups(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Runs of one label at two seeds or more (the first seed stored as LABEL, the others as
    LABEL-seed-N), by LABEL, each group ordered by seed."""
    bases = {match.group(1) for run in runs if (match := re.fullmatch(r"(.+)-seed-\d+", run["label"]))}
    groups = {base: seed_runs(runs, base) for base in sorted(bases)}
    return {base: group for base, group in groups.items() if len(group) >= 2}


def option_table(groups: dict[str, list[dict[str, Any]]], main: dict[str, Any], names: Sequence[str]) -> list[str]:
    """One row per option run at several seeds: its overrides, each seed's mean mAP, the worst change of any
    test set against zero-shot, and harm. The preset's own rows stand above it (the seeds' table)."""
    lines = ["", "Options at several training seeds (mean mAP after the last epoch per seed; worst change is "
             "over every test set and seed, against zero-shot):", "",
             "| option | overrides | mean mAP per seed | worst change (mAP) | harm | CPU |", "|---|---|---|---|---|---|"]
    for label, group in groups.items():
        finals = [final_metrics(run["adapted"]) for run in group]
        changes = [(final[name]["mAP"] - run["zero_shot"][name]["mAP"], name)
                   for run, final in zip(group, finals) for name in names]
        worst, worst_set = min(changes)
        per_seed = ", ".join(f"{final['mean']['mAP']:.1f} (seed {run['config'].get('train', {}).get('seed', '?')})"
                             for run, final in zip(group, finals))
        overrides = ", ".join(f"`{item}`" for item in group[0].get("overrides", [])
                              if not item.startswith("train.seed=")) or "-"
        note = f"; {group[0]['note']}" if group[0].get("note") else ""
        capability = group[0].get("cpu", "not recorded").rsplit("capability ", 1)[-1]
        lines.append(f"| `{label}` | {overrides}{note} | {per_seed} | {worst_set} {worst:+.1f} | "
                     f"{'**harm**' if worst < 0 else 'no'} | {capability} |")
    return lines


def phase_lines(run: dict[str, Any]) -> list[str]:
    """Final mAP / rank-1 / mINP against zero-shot, and the wall time of each phase of ``run``'s adapted model."""
    final, zero = final_metrics(run["adapted"]), run["zero_shot"]
    lines = [""]
    if final:
        def figures(metrics):
            return ", ".join(f"{key} {metrics[key]:.1f}" for key in ("mAP", "rank1", "mINP") if key in metrics)

        lines += [f"Final (seed {run['config'].get('train', {}).get('seed', '?')}, mean over the test sets): "
                  f"{figures(final['mean'])}; zero-shot {figures(zero['mean'])}.", ""]
    lines += ["| epoch | extract s | cluster s | train s | epoch s | test evaluation s |", "|---|---|---|---|---|---|"]
    for entry in run["adapted"]["epochs"]:
        phases = entry["train_seconds"]
        lines.append(f"| {entry['epoch']} | " + " | ".join(f"{phases.get(key, 0.0):.0f}" for key in
                                                          ("extract", "cluster", "train"))
                     + f" | {sum(phases.values()):.0f} | "
                     + (f"{entry['measure_seconds']:.0f}" if entry.get("metrics") else "-") + " |")
    lines += ["", f"Zero-shot extraction and evaluation (pool and test sets): {run['zero_shot_seconds']:.0f} s; "
              "the first epoch clusters the zero-shot pool features. Adaptation and its evaluations: "
              f"{run['adapted']['seconds'] / 60:.1f} min; with the zero-shot: "
              f"{(run['adapted']['seconds'] + run['zero_shot_seconds']) / 60:.1f} min."]
    return lines


def replace_section(document: str, section: str, begin: str = BEGIN_MARKER, end: str = END_MARKER) -> str:
    """``document`` with the text between the markers replaced (appended when absent)."""
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section, document, count=1)
    if not document.strip():
        document = "# Benchmarks\n"
    return document.rstrip("\n") + "\n\n" + section + "\n"


def stored_results(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def write_document(protocol: str, results: Sequence[dict[str, Any]], path: Path = DOC_PATH) -> str:
    """Rewrite ``protocol``'s blocks of ``path`` from its stored ``results``; returns what was written."""
    document = path.read_text() if path.is_file() else ""
    sections = []
    if protocol == "folders":
        findings = FINDINGS_FILE.read_text() if FINDINGS_FILE.is_file() else ""
        sections.append((render_section(results, findings), BEGIN_MARKER, END_MARKER))
    protocol_findings = RESULTS_DIR / protocol / "protocol-findings.md"
    sections.append((render_protocol_section(protocol, results, findings=protocol_findings.read_text()
                                             if protocol_findings.is_file() else ""), *protocol_markers(protocol)))
    for section, begin, end in sections:
        document = replace_section(document, section, begin, end)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(document)
    return "\n\n".join(section for section, _, _ in sections)
