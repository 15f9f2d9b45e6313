"""Hooks the trainer tests share."""

from hhcl.engine import Hook


class InterruptAt(Hook):
    """Stands for a killed process: raises after a given optimizer step."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_iteration(self, trainer, loss):
        if trainer.iteration == self.iteration:
            raise KeyboardInterrupt
