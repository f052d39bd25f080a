"""The benchmarks' ``main`` set process-wide thread settings for their training processes (``OMP_NUM_THREADS`` in
``os.environ``, ``torch.set_num_threads``); run in the test process, they are put back afterwards so that no later
test's subprocess inherits another thread count (and rounds differently from an in-process reference)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_thread_settings(monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # whatever a benchmark sets is undone at teardown
    yield
    torch.set_num_threads(threads)
