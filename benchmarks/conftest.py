import pytest
import torch

from . import common

common.allow_recompiles()  # for every benchmark module


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu",
                     help="device every group runs on: cpu (default) or cuda[:N] (timed with CUDA events)")
    parser.addoption("--benchmark-default-malloc", action="store_true", default=False,
                     help="keep glibc's default malloc thresholds (large outputs are page-faulted in on every call)")
    parser.addoption("--cold", action="store_true", default=False,
                     help="op groups: flush the last-level cache (CPU L3, GPU L2) before every timed call, untimed "
                          "(cold numbers; default: warm, calls back to back)")
    parser.addoption("--benchmark-threads", type=int, default=None,
                     help="torch.set_num_threads for the whole session (default: torch's default, all cores)")
    parser.addoption("--compile-mode", default="default", choices=("default", "reduce-overhead", "max-autotune"),
                     help="torch.compile mode of the train-step's compiled G (reduce-overhead: CUDA graphs on a GPU)")
    parser.addoption("--train-step-rounds", type=int, default=None,
                     help="interleaved rounds per resolution of the train-step groups (default: by resolution)")


def _device(config):
    device = torch.device(config.getoption("--device"))
    if device.type not in ("cpu", "cuda"):
        raise pytest.UsageError(f"--device must be cpu or cuda[:N]; got {device}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda: no CUDA device is visible to torch")
    return device


def pytest_configure(config):
    threads = config.getoption("--benchmark-threads")
    if threads:
        torch.set_num_threads(threads)
    config._progan_fast_device = _device(config)


def pytest_collection_modifyitems(config, items):
    if config._progan_fast_device.type == "cuda":
        # pytest-benchmark times with CUDA events on the device, synchronised around each timed call
        torch.cuda.set_device(config._progan_fast_device)
        for item in items:
            item.add_marker(pytest.mark.benchmark(timer=common.cuda_event_clock))


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["progan_fast"] = common.device_info(config._progan_fast_device)


@pytest.fixture(scope="session")
def bench_session(request):
    config = request.config
    smoke = bool(config.getoption("benchmark_disable", default=False))
    tuned = False if config.getoption("--benchmark-default-malloc") else common.set_glibc_thresholds(True)
    return common.Session(smoke=smoke, malloc_tuned=tuned, device=config._progan_fast_device,
                          cold=config.getoption("--cold"))


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
