"""Fixtures for the data tests (``make_files``, shared with the CLI tests, is in tests/conftest.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Run the data tests on one thread: on a shared, loaded machine OpenMP's spin-waiting
    threads make small tensor work many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def data_warnings(caplog) -> Callable[[], list[str]]:
    """The warning lines logged by ``hhcl.data`` so far."""
    caplog.set_level(logging.WARNING, logger="hhcl.data")

    def messages() -> list[str]:
        return [record.getMessage() for record in caplog.records if record.name == "hhcl.data"]

    return messages
