import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The models here run on tiny batches, where syncing threads costs more than it saves, and
    far more when other processes share the CPU (30x measured on a busy 2-core machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
