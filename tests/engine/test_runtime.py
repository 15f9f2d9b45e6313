import os

import pytest
import torch

from hhcl.engine import runtime
from hhcl.engine.runtime import busy_cores, choose_num_threads


@pytest.fixture(autouse=True)
def keep_torch_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_a_pinned_thread_count_is_used_as_given(monkeypatch):
    monkeypatch.setattr(runtime, "busy_cores", lambda: pytest.fail("a pinned count must not sample the load"))
    assert choose_num_threads(3) == (3, "train.num_threads")


@pytest.mark.parametrize("busy, expected", [(0.05, 4), (1.0, 3), (1.6, 2), (3.9, 1), (7.0, 1)])
def test_auto_takes_one_thread_per_idle_core(monkeypatch, busy, expected):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(runtime, "busy_cores", lambda: busy)
    threads, reason = choose_num_threads(0)
    assert threads == expected
    assert f"{busy:.1f} of 4 cores busy" in reason


def test_auto_without_a_load_reading_takes_every_core(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(runtime, "busy_cores", lambda: None)
    assert choose_num_threads(0)[0] == 2


def test_omp_num_threads_wins_over_auto(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    assert choose_num_threads(0) == (1, "OMP_NUM_THREADS")


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="busy_cores reads /proc/stat (Linux)")
def test_busy_cores_reads_a_plausible_figure():
    busy = busy_cores(0.1)
    assert busy is not None and 0.0 <= busy <= (os.cpu_count() or 1) + 0.5
