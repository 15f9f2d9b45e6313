"""The HHCL epoch loop: features -> pseudo-labels -> memory -> P x K batches -> loss -> update.

Each epoch extracts the training features (test transform), asks
:func:`hhcl.cluster.assign.assign_pseudo_labels` for the pseudo-labels (every labelling policy,
the guard's decision to hold an epoch back included, on rank 0 under DDP), fills a fresh memory
from the cluster means, and runs ``iters`` steps of forward, loss, backward, optimizer step and
memory update. The memory is given each batch's rows in the training set (``image_ids``), from
which the clustering ensemble's and the camera proxies' terms look up their own targets.
Everything else hooks into the loop (:mod:`hhcl.engine.hooks`): evaluation, the run log and
TensorBoard, the progress bar, the user's hooks, and the checkpoint at the end of every epoch,
from which ``--resume`` continues bit-identically on CPU (same seed and thread count).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hhcl.config import Config
from hhcl.engine import distributed
from hhcl.cluster.guard import hold_message
from hhcl.engine.checkpoint import load_checkpoint, restore_trainer_state
from hhcl.engine.hooks import CHECKPOINT_FILE, Hook, run_summary, with_default_hooks
from hhcl.engine.run_log import EpochRecord, RunLog
from hhcl.engine.runtime import derived_seed
from hhcl.engine.setup import (
    build_optimization,
    build_training_model,
    checkpoint_to_resume,
    load_training_dataset,
    start_runtime,
)
from hhcl.errors import HHCLError
from hhcl.evaluation.model import evaluate_model
from hhcl.files import write_bytes_atomically
from hhcl.memory import (
    CameraProxyMemory,
    ClusterMemory,
    EpochMemory,
    PartMemory,
    build_memory,
    camera_proxy_index,
    cluster_centers,
)
from hhcl.models.head import global_features
from hhcl.models.inference import autocast
from hhcl.models.weights import OutputWeights

log = logging.getLogger("hhcl")

CONFIG_FILE = "config.yaml"


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
        from hhcl.data.transforms import TrainAugmentation

        self.config = config
        self.output_dir = Path(output_dir) if output_dir is not None else None
        runtime = start_runtime(config, progress)
        self.hooks = with_default_hooks(hooks, progress=runtime.progress)
        self.context, self.device, self.precision = runtime.context, runtime.device, runtime.precision
        self.progress, self.batch_size_per_rank = runtime.progress, runtime.batch_size_per_rank
        self.num_threads = runtime.num_threads
        checkpoint_path = checkpoint_to_resume(self.output_dir, resume)
        self.run_log = RunLog(self.output_dir, enabled=self.context.is_main)
        if self.device.type == "cpu":
            log.info("CPU threads: %d (%s)", self.num_threads, runtime.threads_reason)
        try:
            self.dataset = load_training_dataset(config, self.context, dataset)
            self.model, self.train_model, self.channels_last = build_training_model(config, runtime)
            self.output_weights = OutputWeights(self.model, config.model.init_mix, config.model.ema_decay)
            self.optimizer, self.scheduler, self.scaler = build_optimization(config, self.model, runtime)
            self.augmentation = TrainAugmentation(config.dataset.height, config.dataset.width).to(self.device)
            self.augmentation_generator = torch.Generator(device=self.device)
            self.augmentation_generator.manual_seed(derived_seed(config.train.seed, "augmentation", self.context.rank))
        except BaseException:
            self.run_log.close()
            raise
        self.epoch = self.iteration = self.steps_this_epoch = 0  # completed epochs, optimizer steps
        self.memory: ClusterMemory | EpochMemory | None = None
        self.pseudo_labels: np.ndarray | None = None
        self.initial_neighbours: np.ndarray | None = None  # the guard's reference: the starting model's kNN
        self.trained_epochs = 0  # epochs whose updates the model keeps (the guard may hold one back and undo one)
        # With the guard: the weights whose features last passed it, as they were before that epoch's update
        self.passed_weights: dict[str, Any] | None = None
        self.stop_reason: str | None = None  # why the guard ended the adaptation early
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {"mAP": None, "epoch": None}
        if checkpoint_path is not None:
            restore_trainer_state(self, load_checkpoint(checkpoint_path))
            log.info("resumed from %s after epoch %d (iteration %d)", checkpoint_path, self.epoch, self.iteration)
        elif self.context.is_main and self.output_dir is not None:
            write_bytes_atomically(self.output_dir / CONFIG_FILE, config.to_yaml())

    def fit(self) -> dict[str, Any]:
        """Train until ``train.epochs``; write model.pth and metrics.json; return the final metrics."""
        start = time.perf_counter()
        for hook in self.hooks:
            hook.before_run(self)
        try:
            while self.epoch < self.config.train.epochs and self.stop_reason is None:
                self.train_epoch()
            final = run_summary(self)
            for hook in reversed(self.hooks):  # unwinding: model.pth is written before metrics.json
                hook.after_run(self, final)
            distributed.barrier()
        finally:
            self.run_log.close()
        final["seconds"] = time.perf_counter() - start
        return final

    def train_epoch(self) -> EpochRecord:
        """Epoch ``self.epoch``: features, pseudo-labels, memory, batches, steps (unless the guard holds), hooks."""
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
        self.pseudo_labels = assignment.labels
        self.initial_neighbours = assignment.initial_neighbours
        for hook in self.hooks:
            hook.after_cluster(self, assignment)

        lr = self.optimizer.param_groups[0]["lr"]
        mean_loss, images_per_second = float("nan"), 0.0
        if assignment.decision == "train":
            if config.guard.enabled:
                self.passed_weights = self.weights_snapshot()
            self.memory = self.build_memory(features, assignment.train_labels, epoch, assignment.ensemble_labels,
                                            assignment.ensemble_nested)
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
            self.hold(assignment.reasons)
        # Without SyncBN each rank's BatchNorm statistics drift apart: keep rank 0's everywhere.
        distributed.broadcast_buffers(self.model)
        self.epoch = epoch + 1
        final_guard = None
        if (assignment.decision == "train" and self.epoch == config.train.epochs and config.guard.enabled
                and config.guard.check_final and not config.train.supervised):
            tick = time.perf_counter()
            final_guard = self.judge_last_update()
            seconds["check_final"] = time.perf_counter() - tick

        record = EpochRecord.of_labels(epoch + 1, assignment.labels, loss=mean_loss, lr=lr, seconds=seconds,
                                       train_images_per_second=images_per_second, guard=assignment.stats.get("guard"),
                                       ensemble=assignment.stats.get("ensemble"), final_guard=final_guard)
        for hook in self.hooks:
            hook.after_epoch(self, record)
        return record

    def judge_last_update(self) -> dict[str, Any] | None:
        """``guard.check_final``: judge the features of the last epoch's update as a next epoch would,
        and undo that update when the guard holds. Returns the guard's statistics and decision."""
        assignment = self.assign_labels(self.extract_train_features())
        if assignment.decision != "train":
            self.hold(assignment.reasons)
        return assignment.stats.get("guard")

    def hold(self, reasons: list[str]) -> None:
        """The guard held: undo the update whose features failed, end the adaptation, and say why."""
        undone = self.undo_last_update()
        self.stop_reason = hold_message(reasons, self.trained_epochs, undone)
        log.warning("%s", self.stop_reason)

    def weights_snapshot(self) -> dict[str, Any]:
        """CPU copies of the trained weights and of their average (``model.ema_decay``)."""
        def copied(state):
            return None if state is None else {k: v.detach().to("cpu", copy=True) for k, v in state.items()}

        return {"model": copied(self.model.state_dict()), "weight_average": copied(self.output_weights.state_dict())}

    def undo_last_update(self) -> int | None:
        """When the guard holds an epoch, the features it judged are those of the last update's model:
        go back to the weights before that update, the last whose own features passed. Returns the
        undone epoch (1-based), or None when no update ran."""
        if self.passed_weights is None or self.trained_epochs == 0:
            return None
        self.model.load_state_dict(self.passed_weights["model"])
        self.output_weights.load_state_dict(self.passed_weights["weight_average"], self.model)
        self.passed_weights = None
        self.trained_epochs -= 1
        return self.epoch

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
                                    precision=self.precision, progress=self.progress, compile=self.config.train.compile)
        self.model.train()
        features = distributed.all_gather_sharded_rows(features.to(self.device), len(items))
        return features.cpu()

    def assign_labels(self, features: torch.Tensor):
        """This epoch's :class:`hhcl.cluster.assign.Assignment`: pseudo-labels, or identities with
        ``train.supervised``. Rank 0 computes, every rank receives it."""
        from hhcl.cluster.assign import Assignment, assign_pseudo_labels, identity_labels

        features = global_features(features, self.config.model.parts)  # stripes serve the loss, not the clusters
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

    def build_memory(self, features: torch.Tensor, labels: np.ndarray, epoch: int,
                     ensemble_labels: np.ndarray | None = None, ensemble_nested: np.ndarray | None = None
                     ) -> ClusterMemory | EpochMemory:
        """A fresh memory for this epoch's clusters, initialised from the ``(N, D)`` features.

        With ``model.parts``, the mode's memory on the global piece inside a :class:`PartMemory`.
        With the clustering ensemble (``(G, N)`` ``ensemble_labels`` and ``(N,)`` ``ensemble_nested``)
        or ``memory.camera_proxies``, an :class:`hhcl.memory.EpochMemory` around it, whose terms
        read the global piece.
        """
        memory_config = self.config.memory
        num_parts = self.config.model.parts
        global_piece = global_features(features, num_parts)
        generator = torch.Generator().manual_seed(derived_seed(self.config.train.seed, "memory", epoch))

        def filled(memory_labels: np.ndarray, with_parts: bool = False) -> ClusterMemory:
            labels_tensor = torch.from_numpy(memory_labels)
            num_clusters = int(memory_labels.max()) + 1
            memory = build_memory(memory_config.mode, global_piece.shape[1], num_clusters,
                                  temperature=memory_config.temperature, momentum=memory_config.momentum,
                                  hard_weight=memory_config.hard_weight, loss_form=memory_config.loss_form,
                                  num_instances=self.config.train.num_instances)
            source = global_piece
            if with_parts and num_parts:
                memory, source = PartMemory(memory, num_parts, memory_config.part_weight), features
            memory.initialize(cluster_centers(source, labels_tensor, num_clusters), source, labels_tensor,
                              generator)
            return memory

        memory = filled(labels, with_parts=True)
        parts: dict[str, Any] = {}
        if ensemble_labels is not None:
            # rows from every member of a granularity's clusters; only the images that nest train them
            present = [granularity for granularity in ensemble_labels if (granularity >= 0).any()]
            parts["granularities"] = [filled(granularity) for granularity in present]
            targets = np.where(ensemble_nested, np.stack(present), -1) if present else np.zeros((0, len(labels)))
            parts["granularity_targets"] = torch.from_numpy(targets.astype(np.int64))
        if memory_config.camera_proxies:
            cameras = [camid for _, _, camid in self.dataset.train]
            proxy_targets, proxy_identities, proxy_cameras = camera_proxy_index(
                labels, cameras, cross_camera_only=memory_config.camera_proxy_scope == "cross_camera")
            proxies = CameraProxyMemory(global_piece.shape[1], proxy_identities, proxy_cameras,
                                        temperature=memory_config.temperature, momentum=memory_config.momentum)
            proxies.initialize(cluster_centers(global_piece, proxy_targets, len(proxy_identities)))
            parts.update(camera_proxies=proxies, proxy_targets=proxy_targets)
        if parts:
            memory = EpochMemory(memory, **parts)
        return memory.to(self.device)

    def build_train_loader(self, labels: np.ndarray, epoch: int):
        from hhcl.data.loaders import build_train_loader

        clustered = np.flatnonzero(labels >= 0)
        items = [self.dataset.train[i] for i in clustered]
        return build_train_loader(items, labels[clustered].tolist(), image_ids=clustered,
                                  batch_size=self.batch_size_per_rank, num_instances=self.config.train.num_instances,
                                  height=self.config.dataset.height, width=self.config.dataset.width,
                                  num_workers=self.config.dataset.num_workers,
                                  seed=derived_seed(self.config.train.seed, "sampler", epoch, self.context.rank),
                                  iters=self.config.train.iters,
                                  keep_singletons=self.config.cluster.outliers == "instances"
                                  and not self.config.train.supervised)

    def train_iterations(self, loader, epoch: int) -> float:
        """Run the epoch's steps; return the mean loss of this rank."""
        memory = self.memory
        self.train_model.train()
        total = 0.0
        steps = self.steps_this_epoch = 0
        for images, targets, image_ids in loader:  # image_ids: the batch's rows in the training set
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            image_ids = image_ids.to(self.device, non_blocking=True)
            inputs = self.augmentation(images, generator=self.augmentation_generator)
            if self.channels_last:
                inputs = inputs.contiguous(memory_format=torch.channels_last)
            with autocast(self.precision, self.device):
                features = self.train_model(inputs)
            loss = memory(features, targets, image_ids)
            if distributed.any_rank(not bool(torch.isfinite(loss)), self.device):
                raise HHCLError(self._non_finite_message(loss, epoch, steps))
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.output_weights.after_step(self.model)
            with torch.no_grad():
                memory.update(distributed.all_gather_rows(features.detach().float()),
                              distributed.all_gather_rows(targets), distributed.all_gather_rows(image_ids))
            self.iteration += 1
            steps = self.steps_this_epoch = steps + 1
            loss_value = float(loss.detach())
            total += loss_value
            for hook in self.hooks:
                hook.after_iteration(self, loss_value)
        return total / max(steps, 1)

    def _non_finite_message(self, loss: torch.Tensor, epoch: int, step: int) -> str:
        kept = (f"the last good checkpoint, {self.output_dir / CHECKPOINT_FILE} (after epoch {self.epoch}), is kept"
                if self.output_dir is not None and self.epoch > 0 else "no checkpoint was written yet")
        return (f"the loss became {float(loss.detach())} at epoch {epoch + 1}, iteration {step + 1}; training stopped and "
                f"{kept}: lower optim.lr or use train.precision=fp32, then --resume")

    def output_model(self) -> nn.Module:
        """The model that is evaluated and saved: the trained one, or its average over the steps
        (``model.ema_decay``), mixed with the starting weights by ``model.init_mix``."""
        return self.output_weights.model(self.model)

    def evaluate(self) -> dict[str, float] | None:
        """Test mAP, rank-1/5/10 and mINP in percent on the query/gallery split (rank 0 computes)."""
        result = None
        if self.context.is_main:
            result = evaluate_model(self.output_model(), self.dataset, self.config, self.device, self.precision,
                                    progress=self.progress)
        self.model.train()
        return distributed.broadcast_object(result)


def train(config: Config, output_dir: str | os.PathLike | None = None, **options) -> dict[str, Any]:
    """Build a :class:`Trainer` and run it to the end; ``options`` are the Trainer's keyword arguments."""
    trainer = Trainer(config, output_dir, **options)
    return trainer.fit()


__all__ = ["Hook", "Trainer", "derived_seed", "evaluate_model", "train"]
