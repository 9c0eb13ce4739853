"""Which backend runs each op: `cpu` (C++), `cuda` (CUDA C++), `triton`, or `reference` (pure PyTorch).

Automatic choice, per call, from the tensor's device:
  CPU tensors  -> cpu if the extension is built, else reference;
  CUDA tensors -> cuda if the CUDA kernels are built, else triton if importable, else reference.
An automatic choice that cannot be served falls back once, with one warning; availability is decided once per
process and never retried per call.

`PROGAN_FAST_BACKEND=<name>`, `set_backend(name)` or `with use_backend(name):` force a backend. Tests can also
force `emulated`: the CUDA kernels' device code run on the CPU thread by thread (slow; small tensors only). A forced backend
that is unavailable, or that cannot run on the tensor's device, raises BackendUnavailable naming what is
missing. An op that has no kernel in the forced backend yet runs its reference (`python -m progan_fast.env`
lists which).
"""
import contextlib
import importlib.util
import os
import warnings

import torch

from . import _extension

BACKENDS = ("cpu", "cuda", "triton", "reference")
KERNEL_BACKENDS = ("cpu", "cuda", "triton")
# What set_backend accepts: the backends plus the test-only emulated family (it has a kernel wherever cuda has).
FORCEABLE = BACKENDS + ("emulated",)
ENV_VAR = "PROGAN_FAST_BACKEND"


class BackendUnavailable(RuntimeError):
    pass


# op name -> backends that have a kernel for it; each progan_fast/ops/<op>.py registers itself.
_op_kernels = {}


def register_op(name, kernels):
    unknown = set(kernels) - set(KERNEL_BACKENDS)
    if unknown:
        raise ValueError(f"register_op({name!r}): unknown backends {sorted(unknown)}")
    _op_kernels[name] = frozenset(kernels)


def ops():
    return sorted(_op_kernels)


def _triton_interpreted():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _triton_installed():
    try:
        return importlib.util.find_spec("triton") is not None
    except ValueError:  # a module entry of None in sys.modules: deliberately hidden
        return False


def _probe():
    ext_loaded, ext_cuda, ext_reason = _extension.load()
    triton_found = _triton_installed()
    gpu = torch.cuda.is_available()
    reasons = {"reference": None}
    reasons["cpu"] = None if ext_loaded else ext_reason
    reasons["emulated"] = reasons["cpu"]
    if not ext_loaded:
        reasons["cuda"] = ext_reason
    elif not ext_cuda:
        reasons["cuda"] = ("progan_fast._C was built without CUDA kernels (CPU-only torch, no CUDA toolkit, or "
                           "PROGAN_FAST_NO_CUDA=1)")
    elif not gpu:
        reasons["cuda"] = "no CUDA device is visible"
    else:
        reasons["cuda"] = None
    if not triton_found:
        reasons["triton"] = "triton is not installed"
    elif not gpu and not _triton_interpreted():
        reasons["triton"] = "no CUDA device is visible (set TRITON_INTERPRET=1 to run Triton kernels on the CPU)"
    else:
        reasons["triton"] = None
    return reasons


_unavailable_reason = _probe()
if _unavailable_reason["cpu"] is not None:
    warnings.warn(f"progan_fast: using the reference backend: {_unavailable_reason['cpu']}", stacklevel=2)


def available(backend):
    """(True, None) or (False, why) for one backend in this process."""
    _check_name(backend)
    reason = _unavailable_reason[backend]
    return reason is None, reason


def _check_name(backend):
    if backend not in FORCEABLE:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")


def _from_env():
    value = os.environ.get(ENV_VAR, "").strip()
    if not value or value == "auto":
        return None
    if value not in BACKENDS:
        raise ValueError(f"{ENV_VAR} must be one of {', '.join(BACKENDS)} or auto; got {value!r}")
    return value


_forced = _from_env()


def set_backend(backend):
    """Force `backend` for every op (None or "auto" restores the automatic choice)."""
    global _forced
    if backend in (None, "auto"):
        _forced = None
        return
    _check_name(backend)
    ok, reason = available(backend)
    if not ok:
        raise BackendUnavailable(f"backend {backend!r} is unavailable: {reason}")
    _forced = backend


def get_backend():
    """The forced backend, or None when the choice is automatic."""
    return _forced


@contextlib.contextmanager
def use_backend(backend):
    previous = _forced
    set_backend(backend)
    try:
        yield
    finally:
        set_backend(previous)


_warned = set()


def _fall_back_once(op, device_type, wanted):
    key = (device_type, wanted)
    if key not in _warned:
        _warned.add(key)
        warnings.warn(f"progan_fast: {wanted} backend unavailable for {device_type} tensors "
                      f"({_unavailable_reason[wanted]}); using the reference backend", stacklevel=3)
    return "reference"


def _device_can_run(backend, device_type):
    if backend == "reference" or device_type == "meta":
        return True  # meta tensors run every family's fake functions (shape propagation)
    if backend in ("cpu", "emulated"):
        return device_type == "cpu"
    if backend == "cuda":
        return device_type == "cuda"
    return device_type == "cuda" or (device_type == "cpu" and _triton_interpreted())


def resolve(op, device, warn=True):
    """The backend that runs `op` on a tensor on `device`."""
    kernels = _op_kernels[op]
    device_type = device.type
    if _forced is not None:
        if _unavailable_reason[_forced] is not None:
            raise BackendUnavailable(f"backend {_forced!r} is unavailable: {_unavailable_reason[_forced]}")
        if not _device_can_run(_forced, device_type):
            raise BackendUnavailable(f"backend {_forced!r} cannot run {op} on {device_type} tensors")
        family_kernel = "cuda" if _forced == "emulated" else _forced
        return _forced if family_kernel in kernels else "reference"
    if device_type == "cpu":
        if "cpu" not in kernels:
            return "reference"
        return "cpu" if _unavailable_reason["cpu"] is None else "reference"
    if device_type == "cuda":
        if "cuda" in kernels and _unavailable_reason["cuda"] is None:
            return "cuda"
        if "triton" in kernels and _unavailable_reason["triton"] is None:
            return "triton"
        if "cuda" in kernels or "triton" in kernels:
            wanted = "cuda" if "cuda" in kernels else "triton"
            return _fall_back_once(op, device_type, wanted) if warn else "reference"
    return "reference"


def describe():
    """Rows of (op, backend for CPU tensors, backend for CUDA tensors) under the current settings."""
    rows = []
    for op in ops():
        row = [op]
        for device_type in ("cpu", "cuda"):
            try:
                row.append(resolve(op, torch.device(device_type), warn=False))
            except BackendUnavailable as e:
                row.append(f"unavailable: {e}")
        rows.append(tuple(row))
    return rows
