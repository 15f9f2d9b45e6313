"""What a training run is built from, before its first epoch: runtime, dataset, model, optimizer.

Each piece is a function of the config (and of the runtime for the device and the ranks), so the
trainer only assembles them, in this order: runtime (seeds first, so that the model's random
initialisation is the seed's), the checkpoint to resume, the dataset, the model, the optimizer.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from hhcl.config import Config
from hhcl.engine import distributed
from hhcl.engine.hooks import CHECKPOINT_FILE
from hhcl.engine.runtime import (choose_num_threads, configure_determinism, resolve_device, resolve_precision,
                                 seed_everything)
from hhcl.errors import HHCLError
from hhcl.models.inference import check_precision

log = logging.getLogger("hhcl")


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes, resolved once."""

    context: distributed.DistributedContext
    device: torch.device
    precision: str
    progress: bool
    batch_size_per_rank: int
    num_threads: int
    threads_reason: str


def start_runtime(config: Config, progress: bool) -> Runtime:
    """Join the process group (under torchrun), resolve device and precision, fix threads and seeds."""
    requested = resolve_device(config.train.device)
    context = distributed.init_distributed(requested.type)
    device = resolve_device(config.train.device, context.local_rank)
    precision = resolve_precision(config.train.precision, device)
    check_precision(precision, device)
    configure_determinism(config.train.deterministic)
    num_threads, reason = choose_num_threads(config.train.num_threads)
    torch.set_num_threads(num_threads)
    seed_everything(config.train.seed)
    if not context.is_main:
        log.setLevel(logging.WARNING)
    train = config.train
    if context.world_size > 1 and train.batch_size % (context.world_size * train.num_instances):
        raise HHCLError(f"train.batch_size = {train.batch_size} must split into {context.world_size} "
                        f"ranks of whole groups of train.num_instances = {train.num_instances}")
    return Runtime(context, device, precision, progress and context.is_main, train.batch_size // context.world_size,
                   num_threads, reason)


def checkpoint_to_resume(output_dir: Path | None, resume: bool | str | os.PathLike) -> Path | None:
    """The checkpoint ``--resume`` continues (``True``: the run folder's, when there is one), or None.

    A run folder that holds a checkpoint is never overwritten by a new run without ``--resume``.
    """
    existing = output_dir / CHECKPOINT_FILE if output_dir is not None else None
    if resume is True:
        if existing is not None and existing.is_file():
            return existing
        log.info("no checkpoint in %s yet: starting a new run", output_dir)
        return None
    if resume:
        return Path(resume)
    if existing is not None and existing.is_file():
        raise HHCLError(f"{output_dir} already holds the checkpoint of a run: pass --resume to continue "
                        "it, or choose another --output")
    return None


def load_training_dataset(config: Config, context, dataset=None):
    """The run's dataset (``config.dataset`` unless given), checked to have images to train on.

    A generated dataset (synthetic) is written by rank 0 alone, then read by every rank.
    """
    from hhcl.data import load_dataset

    if dataset is None:
        options = dict(config.dataset.options)
        if context.is_main:
            dataset = load_dataset(config.dataset.name, config.dataset.root, **options)
        distributed.barrier()
        if not context.is_main:
            dataset = load_dataset(config.dataset.name, config.dataset.root, **options)
    if not dataset.train:
        raise HHCLError(f"dataset {dataset.name!r} has no training image: check --root and --dataset")
    if config.train.supervised and all(pid < 0 for _, pid, _ in dataset.train):
        raise HHCLError(f"--supervised needs identities, but the training images of {dataset.name!r} "
                        "carry none (pid -1): drop --supervised or use a folder pattern with a pid")
    return dataset


def build_starting_model(config: Config) -> nn.Module:
    """The model that ``config.model`` describes, on the CPU, with its starting weights
    (``model.init_weights`` when set): what training starts from, and what a zero-shot evaluation measures."""
    from hhcl.models import build_model, load_weights

    model = build_model(config.model.arch, pooling=config.model.pooling, num_features=config.model.num_features,
                        last_stride=config.model.last_stride, weights=config.model.weights,
                        freeze_bn=config.model.freeze_bn, patch_stride=config.model.patch_stride,
                        parts=config.model.parts)
    if config.model.init_weights:
        report = load_weights(model, config.model.init_weights, verbose=False)
        log.info("initial weights: %s", report)
    return model


def build_training_model(config: Config, runtime: Runtime) -> tuple[nn.Module, nn.Module, bool]:
    """``(model, train_model, channels_last)``: the model on its device with its starting weights, and
    the module the steps run (the DDP wrapper under torchrun, else the model itself)."""
    device, context = runtime.device, runtime.context
    model = build_starting_model(config)
    channels_last = config.train.channels_last and device.type == "cuda"
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    if config.model.sync_bn and context.enabled:
        if device.type != "cuda":
            raise HHCLError("model.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel): "
                            "set model.sync_bn=false for CPU training")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    train_model = model
    if context.enabled:
        train_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                          else None)
    return model, train_model, channels_last


def build_optimization(config: Config, model: nn.Module, runtime: Runtime):
    """``(optimizer, scheduler, scaler)``: Adam over the trainable parameters, StepLR, and the fp16 grad scaler."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.optim.step_size, gamma=config.optim.gamma)
    scaler = torch.amp.GradScaler(runtime.device.type, enabled=runtime.precision == "fp16"
                                  and runtime.device.type == "cuda")
    return optimizer, scheduler, scaler


__all__ = ["Runtime", "build_optimization", "build_starting_model", "build_training_model", "checkpoint_to_resume",
           "load_training_dataset", "start_runtime"]
