"""Speed of the training step's parts on this machine, each against a baseline in the same run.

    python -m benchmarks.training                         # memory updates at the paper's scale
    python -m benchmarks.training --arch resnet18 --height 64 --width 32 --batch 32 --steps 5

1. The memory update after each optimizer step, at the paper's scale (batch 256 = 16 x 16,
   700 clusters, 2048-d): hhcl's vectorised update against the authors' per-sample Python loop
   (re-implemented here as the baseline), for the hard and the centroid memories. Both give the
   same hard memory; the centroid memories differ by design (batch mean against sequential
   per-sample updates, see hhcl.memory).
2. With ``--arch``: one training step (augmentation, forward, hybrid loss, backward, Adam step,
   memory update) in images/s, fp32 against bf16 autocast on CPU or AMP on CUDA.

Timings are medians over the repetitions; on a shared machine run it twice. The figures are
written to the ``training`` block of docs/benchmarks.md (``--no-doc``: print only).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
import torch.nn.functional as F

from benchmarks.report import add_doc_argument, command_line, machine_load, table, write_block
from hhcl.memory import build_memory


def reference_hard_update(rows: torch.Tensor, features: torch.Tensor, targets: torch.Tensor, momentum: float) -> None:
    """The authors' update: a Python loop over the batch's clusters and their instances."""
    by_cluster = collections.defaultdict(list)
    for feature, target in zip(features, targets.tolist()):
        by_cluster[target].append(feature)
    for target, members in by_cluster.items():
        similarities = [float(member @ rows[target]) for member in members]
        hardest = members[similarities.index(min(similarities))]
        rows[target] = momentum * rows[target] + (1 - momentum) * hardest
        rows[target] /= rows[target].norm()


def reference_centroid_update(rows: torch.Tensor, features: torch.Tensor, targets: torch.Tensor,
                              momentum: float) -> None:
    for feature, target in zip(features, targets.tolist()):
        rows[target] = momentum * rows[target] + (1 - momentum) * feature
        rows[target] /= rows[target].norm()


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def memory_updates(repeats: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    num_clusters, dim, identities, instances = 700, 2048, 16, 16
    rows = F.normalize(torch.randn(num_clusters, dim, generator=generator), dim=1).to(device)
    features = F.normalize(torch.randn(identities * instances, dim, generator=generator), dim=1).to(device)
    targets = torch.randperm(num_clusters, generator=generator)[:identities].repeat_interleave(instances).to(device)
    print(f"memory update, batch {identities}x{instances}, {num_clusters} clusters, {dim}-d, {device}:")
    report = {"identities": identities, "instances": instances, "clusters": num_clusters, "dim": dim,
              "device": str(device), "modes": {}}
    for mode, reference in (("hard", reference_hard_update), ("centroid", reference_centroid_update)):
        memory = build_memory(mode, dim, num_clusters).to(device)
        memory.initialize(rows)
        reference_rows = rows.clone()
        vectorised = median_seconds(lambda: memory.update(features, targets), repeats)
        looped = median_seconds(lambda: reference(reference_rows, features, targets, 0.1), repeats)
        print(f"  {mode:8s}  vectorised {vectorised * 1e3:8.2f} ms   per-sample loop {looped * 1e3:8.2f} ms   "
              f"ratio {looped / vectorised:6.1f}x")
        report["modes"][mode] = {"vectorised_seconds": vectorised, "loop_seconds": looped}
    return report


def training_steps(arch: str, height: int, width: int, batch: int, instances: int, steps: int,
                   device: torch.device) -> dict:
    from hhcl.data.transforms import TrainAugmentation
    from hhcl.models import build_model

    precisions = ["fp32", "bf16"] if device.type == "cpu" else ["fp32", "bf16" if torch.cuda.is_bf16_supported()
                                                                 else "fp16"]
    images = torch.randint(0, 256, (batch, 3, height, width), dtype=torch.uint8, device=device)
    targets = torch.arange(batch // instances, device=device).repeat_interleave(instances)
    augmentation = TrainAugmentation(height, width).to(device)
    print(f"training step, {arch} {height}x{width}, batch {batch}, {device}:")
    rates = {}
    for precision in precisions:
        torch.manual_seed(0)
        model = build_model(arch).to(device).train()
        memory = build_memory("hybrid", model.feature_dim, batch // instances).to(device)
        memory.initialize(torch.randn(batch // instances, model.feature_dim, device=device))
        optimizer = torch.optim.Adam(model.parameters(), lr=3.5e-4)
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

        def step():
            inputs = augmentation(images)
            context = (torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)
                       if precision != "fp32" else torch.autocast(device.type, enabled=False))
            with context:
                features = model(inputs)
            loss = memory(features, targets)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            memory.update(features.detach(), targets)
            if device.type == "cuda":
                torch.cuda.synchronize()

        step()  # warm-up
        seconds = median_seconds(step, steps)
        rates[precision] = batch / seconds
        print(f"  {precision:5s} {rates[precision]:8.1f} images/s ({seconds * 1e3:.0f} ms/step)")
    baseline, other = precisions
    print(f"  ratio {other}/{baseline}: {rates[other] / rates[baseline]:.2f}x")
    return {"arch": arch, "height": height, "width": width, "batch": batch, "device": str(device), "rates": rates}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="repetitions of each memory update")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", help="also time whole training steps of this backbone")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--instances", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_doc_argument(parser)
    args = parser.parse_args(argv)
    load_before = machine_load()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with torch.no_grad():
        updates = memory_updates(args.repeats, device)
    steps = None
    if args.arch:
        steps = training_steps(args.arch, args.height, args.width, args.batch, args.instances, args.steps, device)
    if not args.no_doc:
        write_block("training", render_markdown(updates, steps), command_line("benchmarks.training", argv),
                    load_before)


def render_markdown(updates: dict, steps: dict | None = None) -> str:
    """The docs block: each memory update against the per-sample loop; with ``--arch``, the training step."""
    rows = [[mode, f"{times['vectorised_seconds'] * 1e3:.2f}", f"{times['loop_seconds'] * 1e3:.2f}",
             f"{times['loop_seconds'] / times['vectorised_seconds']:.1f}x"] for mode, times in updates["modes"].items()]
    lines = ["## Training: vectorised memory updates (`python -m benchmarks.training`)", "",
             f"The vectorised memory update against the per-sample loop of the reference code, same inputs: batch "
             f"{updates['identities']}x{updates['instances']}, {updates['clusters']} clusters, {updates['dim']}-d, "
             f"on {updates['device']}.", "",
             table(["memory", "vectorised (ms)", "per-sample loop (ms)", "ratio"], rows)]
    if steps:
        baseline, other = list(steps["rates"])
        lines += ["", f"One training step of {steps['arch']} at {steps['height']}x{steps['width']}, batch "
                  f"{steps['batch']}, on {steps['device']}:", "",
                  table(["precision", "images/s"], [[name, f"{rate:.1f}"] for name, rate in steps["rates"].items()]),
                  "", f"{other} / {baseline}: {steps['rates'][other] / steps['rates'][baseline]:.2f}x."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
