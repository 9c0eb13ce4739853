"""Seeded fuzzing of every public op under every kernel family that runs here: random shapes (empty dimensions
included), strides (expanded, transposed, sliced, channels_last), dtypes, devices (meta, and meta mixed with CPU)
and bad scalars. Each call either matches the float64 reference or raises an error whose message names one of
the op's arguments: never a crash, a hang, an uninitialised result or a torch-internal message."""
import math
import random
import re

import pytest
import torch

import progan_fast
from progan_fast import backends, reference

from ops.parity import TOLERANCES

FAMILIES = [f for f in ("cpu", "emulated", "reference") if backends.available(f)[0]]
CALLS_PER_OP = 120
DTYPES = (torch.float32, torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32)
ERRORS = (TypeError, ValueError, RuntimeError, IndexError)


def _size(rng):
    return 0 if rng.random() < 0.08 else rng.choice((1, 1, 2, 2, 3, 4, 5))


def _tensor(rng, shape, dtype, device):
    """A tensor of `shape` with a random memory layout: contiguous, channels_last, a transposed view, a strided
    slice, or expanded along a dimension."""
    kind = rng.choice(("contiguous", "contiguous", "channels_last", "transposed", "sliced", "expanded"))
    make = (lambda s: torch.randn(s, dtype=torch.float64).to(dtype) if dtype.is_floating_point
            else torch.randint(-3, 4, s, dtype=dtype))
    if kind == "channels_last" and len(shape) == 4:
        t = make(shape).contiguous(memory_format=torch.channels_last)
    elif kind == "transposed" and len(shape) >= 2:
        t = make(shape[::-1]).permute(*reversed(range(len(shape))))
    elif kind == "sliced" and len(shape) >= 1:
        t = make([shape[0] * 2] + list(shape[1:]))[::2]
    elif kind == "expanded" and len(shape) >= 1:
        t = make([1] + list(shape[1:])).expand(*shape)
    else:
        t = make(shape)
    return t.to(device) if device != "cpu" else t


def _devices(rng, count):
    """All on the CPU mostly; sometimes every tensor on meta, sometimes one of them."""
    roll = rng.random()
    if roll < 0.8:
        return ["cpu"] * count
    if roll < 0.9:
        return ["meta"] * count
    devices = ["cpu"] * count
    devices[rng.randrange(count)] = "meta"
    return devices


def _scalar(rng, good, *bad):
    return rng.choice(bad) if bad and rng.random() < 0.1 else good


def _feature_shape(rng, ndim):
    return [_size(rng) for _ in range(ndim)]


def case_pixel_norm(rng):
    ndim = rng.choice((1, 2, 3, 4, 4))
    dtype = rng.choice(DTYPES)
    (dev,) = _devices(rng, 1)
    x = _tensor(rng, _feature_shape(rng, ndim), dtype, dev)
    kwargs = dict(dim=_scalar(rng, rng.randrange(-ndim, ndim), 7, -9, 1.5), eps=_scalar(rng, 1e-8, -1.0, math.nan))
    return progan_fast.pixel_norm, reference.pixel_norm, (x,), kwargs, ("x", "dim", "eps")


def case_scaled_bias_act(rng):
    ndim = rng.choice((2, 3, 4, 4))
    dtype = rng.choice(DTYPES)
    devs = _devices(rng, 2)
    shape = _feature_shape(rng, ndim)
    x = _tensor(rng, shape, dtype, devs[0])
    bias = None if rng.random() < 0.2 else _tensor(rng, [_scalar(rng, shape[1], shape[1] + 1)],
                                                    _scalar(rng, dtype, torch.float64), devs[1])
    kwargs = dict(bias=bias, scale=_scalar(rng, rng.uniform(0.1, 2.0), math.inf),
                  activation=_scalar(rng, rng.choice(reference.ACTIVATIONS), "tanh"),
                  negative_slope=rng.choice((0.2, 0.0, 0.5)), pixel_norm=rng.random() < 0.5)
    return (progan_fast.scaled_bias_act, reference.scaled_bias_act, (x,), kwargs,
            ("x", "bias", "scale", "activation", "negative_slope", "pixel_norm"))


def case_eq_linear(rng):
    dtype = rng.choice(DTYPES)
    devs = _devices(rng, 3)
    n, cin, cout = _size(rng), _size(rng), max(1, _size(rng))
    x = _tensor(rng, [n, cin], dtype, devs[0])
    weight = _tensor(rng, [cout, _scalar(rng, cin, cin + 1)], dtype, devs[1])
    bias = _tensor(rng, [cout], dtype, devs[2]) if rng.random() < 0.8 else None
    kwargs = dict(bias=bias, activation=rng.choice(reference.ACTIVATIONS), pixel_norm=rng.random() < 0.3)
    return progan_fast.eq_linear, reference.eq_linear, (x, weight), kwargs, ("x", "weight", "bias")


def case_eq_conv2d(rng):
    dtype = rng.choice(DTYPES)
    devs = _devices(rng, 3)
    n, cin, cout, h, w = _size(rng), _size(rng), max(1, _size(rng)), _size(rng), _size(rng)
    k = rng.choice((1, 3, 3, 2))
    x = _tensor(rng, [n, cin, h, w], dtype, devs[0])
    weight = _tensor(rng, [cout, cin, k, k], dtype, devs[1])
    bias = _tensor(rng, [cout], dtype, devs[2]) if rng.random() < 0.8 else None
    resample = rng.choice(({}, {}, {"up": True}, {"down": True}))
    kwargs = dict(bias=bias, activation=rng.choice(reference.ACTIVATIONS), pixel_norm=rng.random() < 0.3,
                  **resample)
    return progan_fast.eq_conv2d, reference.eq_conv2d, (x, weight), kwargs, ("x", "weight", "bias", "up", "down")


def case_minibatch_stddev(rng):
    dtype = rng.choice(DTYPES)
    (dev,) = _devices(rng, 1)
    x = _tensor(rng, [rng.choice((1, 2, 3, 4, 8)), _size(rng), _size(rng), _size(rng)], dtype, dev)
    grouping = rng.choice(("strided", "contiguous"))
    kwargs = dict(group_size=_scalar(rng, rng.choice((1, 2, 4)), 0, 2.5), grouping=grouping,
                  unbiased=grouping == "contiguous")
    return (progan_fast.minibatch_stddev, reference.minibatch_stddev, (x,), kwargs,
            ("x", "group_size", "grouping", "unbiased"))


def _alpha(rng, device):
    value = _scalar(rng, rng.choice((0.0, 0.3, 1.0)), 1.5, math.nan)
    return torch.tensor(value, device=device) if rng.random() < 0.3 else value


def case_upsample_blend(rng):
    dtype = rng.choice(DTYPES)
    devs = _devices(rng, 3)
    n, c, h, w = _size(rng), _size(rng), _size(rng), _size(rng)
    low = _tensor(rng, [n, c, h, w], dtype, devs[0])
    high = _tensor(rng, [n, c, _scalar(rng, 2 * h, 2 * h + 1), 2 * w], dtype, devs[1])
    return (progan_fast.upsample_blend, reference.upsample_blend, (low, high, _alpha(rng, devs[2])), {},
            ("low", "high", "alpha"))


def case_downsample_blend(rng):
    dtype = rng.choice(DTYPES)
    devs = _devices(rng, 3)
    n, c, h, w = _size(rng), _size(rng), _size(rng), _size(rng)
    high = _tensor(rng, [n, c, _scalar(rng, 2 * h, 2 * h + 2), 2 * w], dtype, devs[0])
    low = _tensor(rng, [n, c, h, w], dtype, devs[1])
    return (progan_fast.downsample_blend, reference.downsample_blend, (high, low, _alpha(rng, devs[2])), {},
            ("high", "low", "alpha"))


def case_fade_reals(rng):
    dtype = rng.choice(DTYPES)
    devs = _devices(rng, 2)
    x = _tensor(rng, [_size(rng), _size(rng), 2 * _size(rng), _scalar(rng, 2 * _size(rng), 3)], dtype, devs[0])
    return progan_fast.fade_reals, reference.fade_reals, (x, _alpha(rng, devs[1])), {}, ("x", "alpha")


CASES = [case_pixel_norm, case_scaled_bias_act, case_eq_linear, case_eq_conv2d, case_minibatch_stddev,
         case_upsample_blend, case_downsample_blend, case_fade_reals]


def _to_reference(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.device.type == "cpu":
        return value.double()
    return value


def _check_call(op, ref, args, kwargs, names, family):
    try:
        with progan_fast.use_backend(family):
            out = op(*args, **kwargs)
    except ERRORS as e:
        message = str(e)
        assert any(re.search(rf"\b{name}\b", message) for name in names), \
            f"error names no argument of {names}: {message!r}"
        assert "\n" not in message.strip() or len(message) < 400, f"not a one-line error: {message!r}"
        return "error"
    tensors = [v for v in list(args) + list(kwargs.values()) if isinstance(v, torch.Tensor)]
    assert all(t.dtype.is_floating_point for t in tensors if t.dim() > 0), "an int tensor was accepted"
    if any(t.device.type == "meta" for t in tensors):
        # only all-meta calls may succeed (a 0-dim CPU alpha goes with any device, as torch's CPU scalars do);
        # their outputs must have the reference's metadata
        assert all(t.device.type == "meta" or t.dim() == 0 for t in tensors), "mixed meta/cpu arguments accepted"
        expected = ref(*args, **kwargs)
        assert out.device.type == "meta" and out.shape == expected.shape and out.dtype == expected.dtype
        return "meta"
    expected = ref(*[_to_reference(a) for a in args], **{k: _to_reference(v) for k, v in kwargs.items()})
    assert out.shape == expected.shape and out.dtype == args[0].dtype
    rtol, atol = TOLERANCES[out.dtype]
    torch.testing.assert_close(out.double(), expected.double(), rtol=rtol * 4, atol=atol * 4, equal_nan=True)
    return "ok"


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[5:])
def test_fuzz(case, family):
    rng = random.Random(f"{case.__name__}-{family}")
    outcomes = {}
    for i in range(CALLS_PER_OP):
        torch.manual_seed(i)
        op, ref, args, kwargs, names = case(rng)
        try:
            outcome = _check_call(op, ref, args, kwargs, names, family)
        except AssertionError as e:
            shapes = [(tuple(a.shape), tuple(a.stride()), a.dtype, a.device.type) if isinstance(a, torch.Tensor)
                      else a for a in list(args) + list(kwargs.values())]
            raise AssertionError(f"call {i}: {case.__name__[5:]} {shapes} {kwargs.keys()}: {e}") from None
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    # the generator must reach valid calls and refused ones alike, or the test checks little
    assert outcomes.get("ok", 0) >= CALLS_PER_OP // 5 and outcomes.get("error", 0) >= 5, outcomes
