"""Argument checks shared by the public op functions: each error names the argument and what was expected."""
import math
import numbers

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def tensor(name, value, *, ndims=None, nonempty_batch=True):
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64; got {value.dtype}")
    if ndims is not None and value.dim() not in ndims:
        expected = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {expected}; got a {value.dim()}-D tensor of shape {tuple(value.shape)}")
    if nonempty_batch and value.dim() > 0 and value.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (shape {tuple(value.shape)}); at least one sample is needed")
    return value


def nonempty_maps(name, value):
    """Convolutions and 2x resampling have no defined result on an empty feature map (channels, height or width 0)."""
    if 0 in value.shape[1:]:
        raise ValueError(f"{name} must have at least one channel and a non-empty height and width; got shape "
                         f"{tuple(value.shape)}")


def same_device_dtype(name, value, ref_name, ref):
    if value.device != ref.device:
        raise ValueError(f"{name} is on {value.device} but {ref_name} is on {ref.device}")
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} has dtype {value.dtype} but {ref_name} has dtype {ref.dtype}")


def placed_like(name, value, ref_name, ref):
    """A raw op's operand that must match another's device, dtype and shape (a gradient and its primal)."""
    if value.device != ref.device:
        raise RuntimeError(f"{name} must be on {ref.device} like {ref_name}; got {value.device}")
    if value.dtype != ref.dtype:
        raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}; got {value.dtype}")
    if value.shape != ref.shape:
        raise RuntimeError(f"{name} must have {ref_name}'s shape {tuple(ref.shape)}; got {tuple(value.shape)}")


def dim(name, value, ndim):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if not -ndim <= value < ndim:
        raise ValueError(f"{name} must be in [{-ndim}, {ndim - 1}] for a {ndim}-D tensor; got {value}")
    return int(value) % ndim


def finite_float(name, value, *, minimum=None):
    # `type(...) is` first: isinstance against the numbers ABCs costs ~0.5 us a call (D calls these ops at 4x4)
    if type(value) is not float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{name} must be a float; got {type(value).__name__}")
        value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return value


def alpha(name, value, device=None):
    """A fade-in weight: a python real or a 0-dim floating tensor, finite and in [0, 1]. Returns it unchanged (a
    tensor stays a tensor, so a scheduled alpha is a graph input that never recompiles). A CPU tensor is checked
    on the host; a device tensor, and any tensor while torch.compile traces, by an asynchronous assert with the
    same message (no host sync: CUDA graphs and compiled graphs keep alpha as an input). `device`: where the
    blended tensors are; a meta alpha (no value to check) is accepted only with meta tensors."""
    if isinstance(value, torch.Tensor):
        if value.dim() != 0:
            raise ValueError(f"{name} must be a float or a 0-dim tensor; got a tensor of shape {tuple(value.shape)}")
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor; got {value.dtype}")
        if value.device.type == "meta":
            if device is not None and torch.device(device).type != "meta":
                raise ValueError(f"{name} is a meta tensor but the blended tensors are on {device}")
            return value
        if value.device.type != "cpu" or torch.compiler.is_compiling():
            torch._assert_async((value >= 0) & (value <= 1), f"{name} must be finite and in [0, 1]")
            return value
        v = float(value.detach())
    elif isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a float or a 0-dim tensor; got {type(value).__name__}")
    else:
        v = float(value)
        value = v
    if not math.isfinite(v) or not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be finite and in [0, 1]; got {v}")
    return value


def flag(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool; got {type(value).__name__}")
    return value


def positive_int(name, value):
    if type(value) is not int:  # bool is not int here; an int subclass or another Integral takes the slow path
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}")
        value = int(value)
    if value < 1:
        raise ValueError(f"{name} must be >= 1; got {value}")
    return value


def choice(name, value, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {', '.join(repr(o) for o in options)}; got {value!r}")
    return value


def autocast(device, *values):
    """Under torch.autocast the ops run in the autocast dtype (their math stays in fp32 inside), like the convs
    around them: float32/half tensor arguments are cast to it; float64 and non-tensors pass through. `device`: the
    tensors' torch.device or its type ("cpu"); a device's type is read only under autocast (reading it costs
    ~0.5 us, and D calls these ops at 4x4)."""
    if not torch._C._is_any_autocast_enabled():
        return values
    device_type = getattr(device, "type", device)
    if device_type not in ("cpu", "cuda") or not torch.is_autocast_enabled(device_type):
        return values  # meta tensors (shape propagation) have no autocast state
    target = torch.get_autocast_dtype(device_type)
    return tuple(v.to(target) if isinstance(v, torch.Tensor) and v.dtype in (torch.float32, torch.float16,
                                                                              torch.bfloat16) else v
                 for v in values)
