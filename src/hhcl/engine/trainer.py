"""The HHCL epoch loop.

Each epoch:

1. extract the features of the training set (test transform);
2. compute pseudo-labels (k-reciprocal Jaccard distance + DBSCAN), on rank 0 under DDP;
3. log the clusters, outliers and cluster-size quantiles;
4. initialise the memory from the cluster means;
5. build the P x K loader over the clustered images;
6. run ``iters`` steps of forward, loss, backward, optimizer step and memory update;
7. log the loss and learning rate (TensorBoard when installed, and a one-line summary);
8. the hooks (:mod:`hhcl.engine.hooks`): evaluation every ``eval_every`` epochs when the dataset
   has a labelled test split, the run log, the user's hooks, the checkpoint.

The pseudo-labels, and every policy that decides them (the guard's decision to hold an epoch
back included), come from one call, :func:`hhcl.cluster.assign.assign_pseudo_labels`.

A checkpoint is written at the end of every epoch, so ``--resume`` restarts the interrupted
epoch from the state the uninterrupted run had at that point: model, optimizer, scheduler, loop
counters and every random generator. On CPU with the same seed and thread count the final
weights are bit-identical to those of an uninterrupted run.
"""

from __future__ import annotations

import copy
import logging
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hhcl.config import Config
from hhcl.engine import distributed
from hhcl.engine.checkpoint import load_checkpoint, restore_trainer_state
from hhcl.engine.hooks import CHECKPOINT_FILE, Hook, with_default_hooks
from hhcl.engine.run_log import EpochRecord, RunLog
from hhcl.engine.runtime import (
    configure_determinism,
    derived_seed,
    resolve_device,
    resolve_precision,
    seed_everything,
)
from hhcl.errors import HHCLError
from hhcl.evaluation.model import evaluate_model
from hhcl.files import write_bytes_atomically
from hhcl.memory import ClusterMemory, build_memory, cluster_centers
from hhcl.models.inference import autocast, check_precision

log = logging.getLogger("hhcl")

CONFIG_FILE = "config.yaml"


def quantiles(values: np.ndarray, points: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> dict[str, float]:
    if len(values) == 0:
        return {}
    return {f"q{int(round(p * 100))}": float(np.quantile(values, p)) for p in points}


class Trainer:
    """HHCL training of one model on one dataset.

    Args:
        config: the resolved :class:`hhcl.config.Config`.
        output_dir: the run folder (config used, log, TensorBoard events, checkpoint.pth,
            model.pth, metrics.json); ``None`` writes nothing (checkpoints included).
        resume: a checkpoint to continue from, or ``True`` for ``output_dir/checkpoint.pth`` when
            it exists.
        dataset: a loaded :class:`hhcl.data.ReIDDataset`; by default ``config.dataset`` is loaded.
        hooks: :class:`Hook` instances called during the loop.
        progress: show progress bars.
    """

    def __init__(self, config: Config, output_dir: str | os.PathLike | None = None, *,
                 resume: bool | str | os.PathLike = False, dataset=None, hooks: Iterable[Hook] = (),
                 progress: bool = True):
        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        self.hooks = with_default_hooks(hooks)
        requested = resolve_device(config.train.device)
        self.context = distributed.init_distributed(requested.type)
        self.device = resolve_device(config.train.device, self.context.local_rank)
        self.precision = resolve_precision(config.train.precision, self.device)
        check_precision(self.precision, self.device)
        self.progress = progress and self.context.is_main
        configure_determinism(config.train.deterministic)
        if config.train.num_threads > 0:
            torch.set_num_threads(config.train.num_threads)
        seed_everything(config.train.seed)
        if not self.context.is_main:
            log.setLevel(logging.WARNING)

        if self.context.world_size > 1 and config.train.batch_size % (self.context.world_size * config.train.num_instances):
            raise HHCLError(f"train.batch_size = {config.train.batch_size} must split into {self.context.world_size} "
                            f"ranks of whole groups of train.num_instances = {config.train.num_instances}")
        self.batch_size_per_rank = config.train.batch_size // self.context.world_size

        checkpoint_path = self._checkpoint_to_resume(resume)
        self.run_log = RunLog(self.output_dir, enabled=self.context.is_main)
        try:
            self._build(config, checkpoint_path, dataset)
        except BaseException:
            self.run_log.close()
            raise

    def _build(self, config: Config, checkpoint_path: Path | None, dataset) -> None:
        from hhcl.data.transforms import TrainAugmentation
        from hhcl.models import build_model, load_weights

        self.dataset = dataset if dataset is not None else self._load_dataset()
        self._check_training_split()

        model = build_model(config.model.arch, pooling=config.model.pooling, num_features=config.model.num_features,
                            last_stride=config.model.last_stride, weights=config.model.weights,
                            freeze_bn=config.model.freeze_bn)
        if config.model.init_weights:
            report = load_weights(model, config.model.init_weights, verbose=False)
            log.info("initial weights: %s", report)
        self.channels_last = config.train.channels_last and self.device.type == "cuda"
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if config.model.sync_bn and self.context.enabled:
            if self.device.type != "cuda":
                raise HHCLError("model.sync_bn needs CUDA (torch's SyncBatchNorm has no CPU kernel): "
                                "set model.sync_bn=false for CPU training")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = model
        # init_mix: the starting weights, mixed into the model that is evaluated and saved
        self.initial_weights = ({name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
                                if config.model.init_mix > 0 else None)
        self._output_model: nn.Module | None = None
        self.train_model: nn.Module = model
        if self.context.enabled:
            self.train_model = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None)

        parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
        self.optimizer = torch.optim.Adam(parameters, lr=config.optim.lr, weight_decay=config.optim.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=config.optim.step_size,
                                                         gamma=config.optim.gamma)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16"
                                           and self.device.type == "cuda")
        self.augmentation = TrainAugmentation(height=config.dataset.height, width=config.dataset.width).to(self.device)
        self.augmentation_generator = torch.Generator(device=self.device)
        self.augmentation_generator.manual_seed(derived_seed(config.train.seed, "augmentation", self.context.rank))

        self.epoch = 0  # completed epochs
        self.iteration = 0  # completed optimizer steps
        self.memory: ClusterMemory | None = None
        self.pseudo_labels: np.ndarray | None = None
        self.initial_neighbours: np.ndarray | None = None  # the guard's reference: the starting model's kNN
        self.trained_epochs = 0  # epochs whose updates ran (the guard may hold some back)
        self.stop_reason: str | None = None  # why the guard ended the adaptation early
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"mAP": None, "epoch": None}

        self.steps_this_epoch = 0
        if checkpoint_path is not None:
            restore_trainer_state(self, load_checkpoint(checkpoint_path))
            log.info("resumed from %s after epoch %d (iteration %d)", checkpoint_path, self.epoch, self.iteration)
        elif self.context.is_main and self.output_dir is not None:
            write_bytes_atomically(self.output_dir / CONFIG_FILE, config.to_yaml())

    # -- setup ------------------------------------------------------------------------------------

    def _checkpoint_to_resume(self, resume: bool | str | os.PathLike) -> Path | None:
        existing = self.output_dir / CHECKPOINT_FILE if self.output_dir is not None else None
        if resume is True:
            if existing is not None and existing.is_file():
                return existing
            log.info("no checkpoint in %s yet: starting a new run", self.output_dir)
            return None
        if resume:
            return Path(resume)
        if existing is not None and existing.is_file():
            raise HHCLError(f"{self.output_dir} already holds the checkpoint of a run: pass --resume to continue "
                            "it, or choose another --output")
        return None

    def _load_dataset(self):
        from hhcl.data import load_dataset

        options = dict(self.config.dataset.options)
        # A generated dataset (synthetic) is written by rank 0 alone, then read by every rank.
        if self.context.is_main:
            dataset = load_dataset(self.config.dataset.name, self.config.dataset.root, **options)
        distributed.barrier()
        if not self.context.is_main:
            dataset = load_dataset(self.config.dataset.name, self.config.dataset.root, **options)
        return dataset

    def _check_training_split(self) -> None:
        train = self.dataset.train
        if not train:
            raise HHCLError(f"dataset {self.dataset.name!r} has no training image: check --root and --dataset")
        if self.config.train.supervised and all(pid < 0 for _, pid, _ in train):
            raise HHCLError(f"--supervised needs identities, but the training images of {self.dataset.name!r} "
                            "carry none (pid -1): drop --supervised or use a folder pattern with a pid")

    # -- the loop -----------------------------------------------------------------------------------

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs``; write model.pth and metrics.json; return the final metrics."""
        config = self.config
        if config.evaluation.select_best:
            message = ("evaluation.select_best keeps the epoch with the best test mAP: this uses the test labels, "
                       "so the reported figures are optimistic and not an unsupervised result")
            warnings.warn(message, stacklevel=2)
            log.warning("warning: %s", message)
        log.info("training %s on %s (%d training images) for %d epochs x %d iterations, batch %d = %d x %d, "
                 "%s memory, device %s, precision %s%s", config.model.arch, self.dataset.name, len(self.dataset.train),
                 config.train.epochs, config.train.iters, config.train.batch_size,
                 config.train.batch_size // config.train.num_instances, config.train.num_instances,
                 config.memory.mode, self.device, self.precision,
                 f", {self.context.world_size} processes" if self.context.enabled else "")
        start = time.perf_counter()
        try:
            while self.epoch < config.train.epochs and self.stop_reason is None:
                self.train_epoch()
            final = self.summary()
            for hook in reversed(self.hooks):  # unwinding: model.pth is written before metrics.json
                hook.after_run(self, final)
            distributed.barrier()
        finally:
            self.run_log.close()
        final["seconds"] = time.perf_counter() - start
        return final

    def train_epoch(self) -> EpochRecord:
        """Run steps 1-9 for epoch ``self.epoch`` and advance it."""
        config = self.config
        epoch = self.epoch
        for hook in self.hooks:
            hook.before_epoch(self, epoch)
        seconds: dict[str, float] = {}

        tick = time.perf_counter()
        features = self.extract_train_features()
        seconds["extract"] = time.perf_counter() - tick

        tick = time.perf_counter()
        assignment = self.assign_labels(features)
        seconds["cluster"] = time.perf_counter() - tick
        labels = assignment.labels
        num_clusters = assignment.num_clusters
        num_outliers = int((labels < 0).sum())
        sizes = np.bincount(labels[labels >= 0]) if num_clusters else np.zeros(0)
        log.info("epoch %d: %d clusters, %d outliers of %d images, cluster sizes %s", epoch + 1, num_clusters,
                 num_outliers, len(labels), ", ".join(f"{k} {v:g}" for k, v in quantiles(sizes).items()))
        self.pseudo_labels = labels
        self.initial_neighbours = assignment.initial_neighbours
        guard = assignment.stats.get("guard")
        for hook in self.hooks:
            hook.after_cluster(self, assignment)

        lr = self.optimizer.param_groups[0]["lr"]
        mean_loss, images_per_second = float("nan"), 0.0
        if assignment.decision == "train":
            self.memory = self.build_memory(features, assignment.train_labels, epoch)
            del features
            loader = self.build_train_loader(assignment.train_labels, epoch)
            tick = time.perf_counter()
            mean_loss = distributed.mean_over_ranks(self.train_iterations(loader, epoch), self.device)
            seconds["train"] = time.perf_counter() - tick
            images_per_second = config.train.iters * config.train.batch_size / max(seconds["train"], 1e-9)
            self.trained_epochs += 1
            self.scheduler.step()
        else:
            del features
            kept = ("kept the starting model" if self.trained_epochs == 0
                    else f"stopped adapting after {self.trained_epochs} trained epochs")
            self.stop_reason = f"pseudo-labels too weak on this pool ({'; '.join(assignment.reasons)}): {kept}"
            log.warning("%s", self.stop_reason)
        # Without SyncBN each rank's BatchNorm statistics drift apart: keep rank 0's everywhere.
        distributed.broadcast_buffers(self.model)
        self.epoch = epoch + 1

        record = EpochRecord(epoch=epoch + 1, num_clusters=num_clusters, num_outliers=num_outliers,
                             num_images=len(labels), cluster_size_quantiles=quantiles(sizes), loss=mean_loss, lr=lr,
                             seconds=seconds, train_images_per_second=images_per_second, guard=guard)
        for hook in self.hooks:
            hook.after_epoch(self, record)
        return record

    # -- 1. features ------------------------------------------------------------------------------

    def extract_train_features(self) -> torch.Tensor:
        """``(N, D)`` float32 L2-normalised features of the training set, identical on every rank.

        Under DDP each rank extracts every W-th image and the shards are gathered.
        """
        from hhcl.models import extract_features

        for hook in self.hooks:
            supplied = hook.train_features(self)
            if supplied is not None:
                return supplied
        items = self.dataset.train
        shard = items[self.context.rank::self.context.world_size]
        features = extract_features(self.model, shard, batch_size=self.config.train.extract_batch_size,
                                    device=self.device, height=self.config.dataset.height,
                                    width=self.config.dataset.width, num_workers=self.config.dataset.num_workers,
                                    precision=self.precision, progress=self.progress)
        self.model.train()
        features = distributed.all_gather_sharded_rows(features.to(self.device), len(items))
        return features.cpu()

    # -- 2. pseudo-labels -------------------------------------------------------------------------

    def assign_labels(self, features: torch.Tensor):
        """This epoch's :class:`hhcl.cluster.assign.Assignment`: pseudo-labels, or identities with
        ``train.supervised``. Rank 0 computes, every rank receives it."""
        from hhcl.cluster.assign import Assignment, assign_pseudo_labels, identity_labels

        if self.config.train.supervised:
            labels = identity_labels([pid for _, pid, _ in self.dataset.train])
            return Assignment(labels=labels, train_labels=labels,
                              stats={"num_clusters": int(labels.max()) + 1, "num_outliers": int((labels < 0).sum())})
        assignment = None
        if self.context.is_main:
            assignment = assign_pseudo_labels(
                features, [camid for _, _, camid in self.dataset.train], self.dataset.train_sources(),
                self.config.cluster, self.config.guard, previous_labels=self.pseudo_labels,
                initial_neighbours=self.initial_neighbours, progress=self.progress)
        assignment = distributed.broadcast_object(assignment)
        if assignment.error is not None:
            raise HHCLError(assignment.error)
        return assignment

    # -- 4. memory --------------------------------------------------------------------------------

    def build_memory(self, features: torch.Tensor, labels: np.ndarray, epoch: int) -> ClusterMemory:
        """A fresh memory for this epoch's clusters, initialised from the ``(N, D)`` features."""
        memory_config = self.config.memory
        labels_tensor = torch.from_numpy(labels)
        num_clusters = int(labels.max()) + 1
        memory = build_memory(memory_config.mode, features.shape[1], num_clusters,
                              temperature=memory_config.temperature, momentum=memory_config.momentum,
                              hard_weight=memory_config.hard_weight, loss_form=memory_config.loss_form,
                              num_instances=self.config.train.num_instances)
        generator = torch.Generator().manual_seed(derived_seed(self.config.train.seed, "memory", epoch))
        memory.initialize(cluster_centers(features, labels_tensor, num_clusters), features, labels_tensor, generator)
        return memory.to(self.device)

    # -- 5. loader --------------------------------------------------------------------------------

    def build_train_loader(self, labels: np.ndarray, epoch: int):
        from hhcl.data.loaders import build_train_loader

        clustered = np.flatnonzero(labels >= 0)
        items = [self.dataset.train[i] for i in clustered]
        return build_train_loader(items, labels[clustered].tolist(), batch_size=self.batch_size_per_rank,
                                  num_instances=self.config.train.num_instances, height=self.config.dataset.height,
                                  width=self.config.dataset.width, num_workers=self.config.dataset.num_workers,
                                  seed=derived_seed(self.config.train.seed, "sampler", epoch, self.context.rank),
                                  iters=self.config.train.iters,
                                  keep_singletons=self.config.cluster.outliers == "instances"
                                  and not self.config.train.supervised)

    # -- 6. iterations ----------------------------------------------------------------------------

    def train_iterations(self, loader, epoch: int) -> float:
        """Run the epoch's steps; return the mean loss of this rank."""
        config = self.config
        memory = self.memory
        self.train_model.train()
        total = 0.0
        steps = self.steps_this_epoch = 0
        bar = None
        if self.progress:
            from tqdm import tqdm

            bar = tqdm(total=config.train.iters, desc=f"epoch {epoch + 1}/{config.train.epochs}", leave=False,
                       unit="it", dynamic_ncols=True)
        try:
            for images, targets, _ in loader:
                images = images.to(self.device, non_blocking=True)
                targets = targets.to(self.device, non_blocking=True)
                inputs = self.augmentation(images, generator=self.augmentation_generator)
                if self.channels_last:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                with autocast(self.precision, self.device):
                    features = self.train_model(inputs)
                loss = memory(features, targets)
                if distributed.any_rank(not bool(torch.isfinite(loss)), self.device):
                    raise HHCLError(self._non_finite_message(loss, epoch, steps))
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                with torch.no_grad():
                    gathered_features = distributed.all_gather_rows(features.detach().float())
                    gathered_targets = distributed.all_gather_rows(targets)
                    memory.update(gathered_features, gathered_targets)
                self.iteration += 1
                steps = self.steps_this_epoch = steps + 1
                loss_value = float(loss.detach())
                total += loss_value
                for hook in self.hooks:
                    hook.after_iteration(self, loss_value)
                if bar is not None:
                    bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
        return total / max(steps, 1)

    def _non_finite_message(self, loss: torch.Tensor, epoch: int, step: int) -> str:
        kept = (f"the last good checkpoint, {self.output_dir / CHECKPOINT_FILE} (after epoch {self.epoch}), is kept"
                if self.output_dir is not None and self.epoch > 0 else "no checkpoint was written yet")
        return (f"the loss became {float(loss.detach())} at epoch {epoch + 1}, iteration {step + 1}; training stopped and "
                f"{kept}: lower optim.lr or use train.precision=fp32, then --resume")

    # -- 8. evaluation ----------------------------------------------------------------------------

    def output_model(self) -> nn.Module:
        """The model that is evaluated and saved: the trained one, or with ``model.init_mix`` its
        mixture with the starting weights (a separate copy, refreshed at each call)."""
        if self.initial_weights is None:
            return self.model
        from hhcl.models.weights import interpolate_weights

        if self._output_model is None:
            self._output_model = copy.deepcopy(self.model)
        mixed = interpolate_weights(self.model.state_dict(), self.initial_weights, self.config.model.init_mix)
        self._output_model.load_state_dict(mixed)
        return self._output_model.eval()

    def evaluate(self) -> dict[str, float] | None:
        """Test mAP, rank-1/5/10 and mINP in percent on the query/gallery split (rank 0 computes)."""
        result = None
        if self.context.is_main:
            result = evaluate_model(self.output_model(), self.dataset, self.config, self.device, self.precision,
                                    progress=self.progress)
        self.model.train()
        return distributed.broadcast_object(result)

    def summary(self) -> dict[str, Any]:
        """The run's summary (metrics.json): the final (or, with select_best, the best) metrics and the history."""
        config = self.config
        final = next((record["metrics"] for record in reversed(self.history) if record["metrics"]), None)
        selected_epoch = self.epoch
        if config.evaluation.select_best and self.best.get("epoch") is not None:
            selected_epoch, final = self.best["epoch"], self.best.get("metrics")
        return {
            "dataset": self.dataset.name, "arch": config.model.arch, "memory": config.memory.mode,
            "epochs": self.epoch, "iterations": self.iteration, "selected_epoch": selected_epoch,
            "selected_by_test_labels": bool(config.evaluation.select_best), "trained_epochs": self.trained_epochs,
            "guard": {"enabled": bool(config.guard.enabled), "stop_reason": self.stop_reason},
            "final": final, "history": self.history,
        }


def train(config: Config, output_dir: str | os.PathLike | None = None, **options) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it to the end; ``options`` are the Trainer's keyword arguments."""
    trainer = Trainer(config, output_dir, **options)
    return trainer.fit()


__all__ = ["Hook", "Trainer", "derived_seed", "evaluate_model", "train"]
