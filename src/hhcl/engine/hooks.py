"""What happens around the epoch loop: the trainer emits events, hooks act on them.

    trainer = Trainer(config, run_dir, hooks=[MyHook()])

Events: ``before_run`` once, then in the order of an epoch: ``before_epoch``, ``train_features`` (a hook may supply the
epoch's features), ``after_cluster`` (the epoch's :class:`hhcl.cluster.assign.Assignment`, before
any update), ``after_iteration`` (each optimizer step), ``after_epoch`` (the
:class:`hhcl.engine.run_log.EpochRecord`), and once at the end ``after_run`` (the run's summary).

The trainer's own duties are hooks too, around the user's: evaluation first (it fills the
record's metrics), then the run log (history, the epoch line, TensorBoard), the user's hooks,
and the checkpoint last, so that a checkpoint holds everything the epoch produced. At the end the
model file is written, then metrics.json. This is the layout of fast-reid's ``engine/hooks.py``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from hhcl.engine.checkpoint import model_file_state, save_atomically, trainer_state
from hhcl.engine.run_log import EpochRecord
from hhcl.evaluation.model import has_labelled_test_split

if TYPE_CHECKING:
    import torch

    from hhcl.engine.trainer import Trainer

log = logging.getLogger("hhcl")

CHECKPOINT_FILE = "checkpoint.pth"
MODEL_FILE = "model.pth"
BEST_MODEL_FILE = "model_best.pth"


class Hook:
    """Called by the trainer at fixed points of the loop; override what you need."""

    def before_run(self, trainer: "Trainer") -> None: ...

    def before_epoch(self, trainer: "Trainer", epoch: int) -> None: ...

    def train_features(self, trainer: "Trainer") -> "torch.Tensor | None":
        """The epoch's ``(N, D)`` training features when this hook already has them (extracted with the
        current weights, e.g. by its own evaluation pass), or None to let the trainer extract them."""
        return None

    def after_cluster(self, trainer: "Trainer", assignment) -> None:
        """The epoch's :class:`hhcl.cluster.assign.Assignment`, before any update."""

    def after_iteration(self, trainer: "Trainer", loss: float) -> None: ...

    def after_epoch(self, trainer: "Trainer", record: EpochRecord) -> None: ...

    def after_run(self, trainer: "Trainer", summary: dict[str, Any]) -> None: ...


class EvaluationHook(Hook):
    """Test metrics every ``evaluation.eval_every`` epochs and after the last one (also when the guard
    ends the run early), when the dataset has a labelled split; with ``evaluation.select_best`` the
    best epoch's model is kept as model_best.pth (this reads test labels: a supervised diagnosis)."""

    def before_run(self, trainer: "Trainer") -> None:
        if trainer.config.evaluation.select_best:
            import warnings

            message = ("evaluation.select_best keeps the epoch with the best test mAP: this uses the test labels, "
                       "so the reported figures are optimistic and not an unsupervised result")
            warnings.warn(message, stacklevel=3)
            log.warning("warning: %s", message)

    def after_epoch(self, trainer: "Trainer", record: EpochRecord) -> None:
        import time

        if not self.due(trainer):
            return
        tick = time.perf_counter()
        record.metrics = trainer.evaluate()
        record.seconds["evaluate"] = time.perf_counter() - tick
        if record.metrics is not None and trainer.config.evaluation.select_best:
            self.keep_if_best(trainer, record.metrics)

    @staticmethod
    def due(trainer: "Trainer") -> bool:
        if not has_labelled_test_split(trainer.dataset):
            return False
        every = trainer.config.evaluation.eval_every
        last = trainer.epoch == trainer.config.train.epochs or trainer.stop_reason is not None
        return last or (every > 0 and trainer.epoch % every == 0)

    @staticmethod
    def keep_if_best(trainer: "Trainer", metrics: dict[str, float]) -> None:
        if trainer.best["mAP"] is not None and metrics["mAP"] <= trainer.best["mAP"]:
            return
        trainer.best = {"mAP": metrics["mAP"], "epoch": trainer.epoch, "metrics": metrics}
        if trainer.context.is_main and trainer.output_dir is not None:
            save_atomically(model_file_state(trainer, metrics), trainer.output_dir / BEST_MODEL_FILE)


class RunLogHook(Hook):
    """The epoch into the run's history, the one-line summary, TensorBoard; metrics.json at the end."""

    def before_run(self, trainer: "Trainer") -> None:
        config = trainer.config
        log.info("training %s on %s (%d training images) for %d epochs x %d iterations, batch %d = %d x %d, "
                 "%s memory, device %s, precision %s%s", config.model.arch, trainer.dataset.name,
                 len(trainer.dataset.train), config.train.epochs, config.train.iters, config.train.batch_size,
                 config.train.batch_size // config.train.num_instances, config.train.num_instances,
                 config.memory.mode, trainer.device, trainer.precision,
                 f", {trainer.context.world_size} processes" if trainer.context.enabled else "")

    def after_cluster(self, trainer: "Trainer", assignment) -> None:
        from hhcl.engine.run_log import quantiles

        labels = assignment.labels
        sizes = np.bincount(labels[labels >= 0]) if assignment.num_clusters else np.zeros(0)
        log.info("epoch %d: %d clusters, %d outliers of %d images, cluster sizes %s", trainer.epoch + 1,
                 assignment.num_clusters, int((labels < 0).sum()), len(labels),
                 ", ".join(f"{k} {v:g}" for k, v in quantiles(sizes).items()))

    def after_iteration(self, trainer: "Trainer", loss: float) -> None:
        every = max(trainer.config.train.log_every, 1)
        if trainer.iteration % every == 0 or trainer.steps_this_epoch == trainer.config.train.iters:
            trainer.run_log.scalar("train/loss", loss, trainer.iteration)
            trainer.run_log.scalar("train/lr", trainer.optimizer.param_groups[0]["lr"], trainer.iteration)

    def after_epoch(self, trainer: "Trainer", record: EpochRecord) -> None:
        trainer.history.append(record.to_dict())
        trainer.run_log.epoch(record, trainer.config.train.epochs, trainer.iteration)

    def after_run(self, trainer: "Trainer", summary: dict[str, Any]) -> None:
        if not trainer.context.is_main or trainer.output_dir is None:
            return
        trainer.run_log.write_metrics(summary)
        final = summary["final"]
        if final:
            log.info("final (epoch %d): mAP %.1f%%, rank-1 %.1f%%, rank-5 %.1f%%, rank-10 %.1f%%%s",
                     summary["selected_epoch"], final["mAP"], final["rank1"], final["rank5"], final["rank10"],
                     " (epoch chosen on the test labels)" if summary["selected_by_test_labels"] else "")
        log.info("model written to %s", trainer.output_dir / MODEL_FILE)


class CheckpointHook(Hook):
    """checkpoint.pth after every epoch (``--resume`` continues from it exactly); model.pth at the end."""

    def after_epoch(self, trainer: "Trainer", record: EpochRecord) -> None:
        state = trainer_state(trainer)  # collective under DDP: every rank takes part
        if trainer.context.is_main and trainer.output_dir is not None:
            save_atomically(state, trainer.output_dir / CHECKPOINT_FILE)

    def after_run(self, trainer: "Trainer", summary: dict[str, Any]) -> None:
        if not trainer.context.is_main or trainer.output_dir is None:
            return
        best = trainer.output_dir / BEST_MODEL_FILE
        if summary["selected_by_test_labels"] and best.is_file():
            from hhcl.models.weights import read_checkpoint

            save_atomically(read_checkpoint(best), trainer.output_dir / MODEL_FILE)  # checksum verified
        else:
            save_atomically(model_file_state(trainer, summary["final"]), trainer.output_dir / MODEL_FILE)


class ProgressHook(Hook):
    """A progress bar over each epoch's iterations, with the last loss."""

    def __init__(self) -> None:
        self.bar = None

    def after_iteration(self, trainer: "Trainer", loss: float) -> None:
        if self.bar is None:
            from tqdm import tqdm

            train = trainer.config.train
            self.bar = tqdm(total=train.iters, desc=f"epoch {trainer.epoch + 1}/{train.epochs}", leave=False, unit="it",
                            dynamic_ncols=True)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        self.bar.update(1)

    def after_epoch(self, trainer: "Trainer", record: EpochRecord) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    after_run = after_epoch


def run_summary(trainer: "Trainer") -> dict[str, Any]:
    """The run's summary (metrics.json): the final (or, with select_best, the best) metrics, the guard, the history."""
    config = trainer.config
    final = next((record["metrics"] for record in reversed(trainer.history) if record["metrics"]), None)
    selected_epoch = trainer.epoch
    if config.evaluation.select_best and trainer.best.get("epoch") is not None:
        selected_epoch, final = trainer.best["epoch"], trainer.best.get("metrics")
    return {
        "dataset": trainer.dataset.name, "arch": config.model.arch, "memory": config.memory.mode,
        "epochs": trainer.epoch, "iterations": trainer.iteration, "selected_epoch": selected_epoch,
        "num_threads": trainer.num_threads,
        "selected_by_test_labels": bool(config.evaluation.select_best), "trained_epochs": trainer.trained_epochs,
        "guard": {"enabled": bool(config.guard.enabled), "stop_reason": trainer.stop_reason},
        "final": final, "history": trainer.history,
    }


def with_default_hooks(user_hooks, progress: bool = False) -> list[Hook]:
    """The trainer's hooks in calling order: progress bar (when shown), evaluation, run log, the user's, checkpoint."""
    return [*([ProgressHook()] if progress else []), EvaluationHook(), RunLogHook(), *user_hooks, CheckpointHook()]


__all__ = ["BEST_MODEL_FILE", "CHECKPOINT_FILE", "CheckpointHook", "EvaluationHook", "Hook", "MODEL_FILE",
           "ProgressHook", "RunLogHook", "run_summary", "with_default_hooks"]
