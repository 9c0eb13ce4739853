import pytest
import torch

import progan_fast
from progan_fast.patch import _common


@pytest.fixture(autouse=True)
def _one_thread():
    """These networks are tiny: intra-op parallelism only adds a parallel region per op, and on a loaded machine
    every region waits for a scheduler tick (benchmarks/RESULTS.md), which made a float64 step take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _class_level_reset():
    """Class-level patching is process-wide: every test starts and ends with every library class unpatched."""
    progan_fast.unpatch()
    yield
    progan_fast.unpatch()
    assert not _common._class_level
