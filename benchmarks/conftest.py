import pytest
import torch

from . import common

# One static compilation per shape and layout of every reference, for every benchmark module: the default
# recompile limit would silently fall back to eager after a few shapes.
torch._dynamo.config.recompile_limit = 256
torch._dynamo.config.accumulated_recompile_limit = 4096


def pytest_addoption(parser):
    parser.addoption("--benchmark-default-malloc", action="store_true", default=False,
                     help="keep glibc's default malloc thresholds (large outputs are page-faulted in on every call)")
    parser.addoption("--benchmark-threads", type=int, default=None,
                     help="torch.set_num_threads for the whole session (default: torch's default, all cores)")


def pytest_configure(config):
    threads = config.getoption("--benchmark-threads")
    if threads:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def bench_session(request):
    config = request.config
    smoke = bool(config.getoption("benchmark_disable", default=False))
    tuned = False if config.getoption("--benchmark-default-malloc") else common.tune_malloc()
    return common.Session(smoke=smoke, malloc_tuned=tuned)


_compiled = {}


@pytest.fixture(scope="session")
def compiled():
    """compiled(key, fn): torch.compile(fn, dynamic=False), one compiled wrapper per key (op, direction, shape,
    layout), kept for the session so each case compiles once."""
    def get(key, fn):
        if key not in _compiled:
            _compiled[key] = torch.compile(fn, dynamic=False)
        return _compiled[key]
    return get
