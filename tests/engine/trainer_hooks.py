"""Hooks and checks the trainer tests share."""

import torch

from hhcl.engine import Hook


def model_weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_tensors(first: dict, second: dict):
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


class InterruptAt(Hook):
    """Stands for a killed process: raises after a given optimizer step."""

    def __init__(self, iteration: int):
        self.iteration = iteration

    def after_iteration(self, trainer, loss):
        if trainer.iteration == self.iteration:
            raise KeyboardInterrupt
