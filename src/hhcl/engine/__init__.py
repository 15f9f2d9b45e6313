"""The training engine: the HHCL epoch loop, checkpoints, distributed helpers and the run log."""

from hhcl.engine.hooks import Hook
from hhcl.engine.trainer import Trainer, evaluate_model, train

__all__ = ["Hook", "Trainer", "evaluate_model", "train"]
