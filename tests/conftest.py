import os

# Triton picks the interpreter when a kernel is decorated, so this must happen before anything imports the
# Triton kernels. With it, the triton backend runs on CPU tensors (numerics only; see tests/gpu).
os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
