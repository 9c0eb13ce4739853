import math

import pytest
import torch

import progan_fast
from progan_fast import backends, reference
from progan_fast.ops import scaled_bias_act

from .parity import assert_close

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def explicit(x, bias, scale, activation, slope, pixel_norm, eps=1e-8):
    """Elementwise formula written independently of the reference (TF official: lrelu = max(v, slope * v))."""
    y = x.double() * scale
    if bias is not None:
        y = y + bias.double().view([1, -1] + [1] * (x.dim() - 2))
    if activation == "lrelu":
        y = torch.maximum(y, slope * y)
    elif activation == "relu":
        y = torch.where(y > 0, y, torch.zeros_like(y))
    if pixel_norm:
        y = y / torch.sqrt((y * y).sum(1, keepdim=True) / y.shape[1] + eps)
    return y


def test_registered_without_kernels():
    assert "scaled_bias_act" in backends.ops()
    assert backends.resolve("scaled_bias_act", torch.device("cpu")) == "reference"


@pytest.mark.parametrize("activation", ["lrelu", "relu", "linear"])
@pytest.mark.parametrize("pixel_norm", [False, True])
@pytest.mark.parametrize("shape", [(3, 5, 4, 7), (2, 1, 3, 3), (4, 9), (2, 3, 1, 1)], ids=str)
def test_matches_formula_float64(activation, pixel_norm, shape):
    x = torch.randn(shape, dtype=torch.float64)
    bias = torch.randn(shape[1], dtype=torch.float64)
    for b in (bias, None):
        y = scaled_bias_act(x, b, 0.37, activation, 0.1, pixel_norm)
        torch.testing.assert_close(y, explicit(x, b, 0.37, activation, 0.1, pixel_norm), rtol=1e-12, atol=1e-12)


def test_defaults_are_tf_lrelu_without_norm():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(scaled_bias_act(x), explicit(x, None, 1.0, "lrelu", 0.2, False))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_against_float64(dtype):
    x = torch.randn(4, 16, 5, 5).to(dtype)
    bias = torch.randn(16).to(dtype)
    y = scaled_bias_act(x, bias, 0.05, pixel_norm=True)
    assert y.dtype == dtype
    assert_close(y, explicit(x, bias, 0.05, "lrelu", 0.2, True), dtype)


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
def test_keeps_memory_format(memory_format):
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64)
    bias = torch.randn(6, dtype=torch.float64)
    y = scaled_bias_act(x.contiguous(memory_format=memory_format), bias, 0.5, pixel_norm=True)
    assert y.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(y, explicit(x, bias, 0.5, "lrelu", 0.2, True), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", ["lrelu", "relu", "linear"])
@pytest.mark.parametrize("pixel_norm", [False, True])
def test_gradcheck_gradgradcheck(activation, pixel_norm):
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def fn(x, bias):
        return scaled_bias_act(x, bias, 0.7, activation, 0.2, pixel_norm)

    assert torch.autograd.gradcheck(fn, (x, bias))
    assert torch.autograd.gradgradcheck(fn, (x, bias))


def test_forced_reference_backend_runs():
    x = torch.randn(2, 3, 4, 4)
    with progan_fast.use_backend("reference"):
        y = scaled_bias_act(x, None, 2.0, "linear")
    torch.testing.assert_close(y, 2 * x)


X = torch.randn(2, 3, 4, 4)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(x=[1.0]), TypeError, "x"),
    (dict(x=torch.ones(2, 3, dtype=torch.int32)), TypeError, "x"),
    (dict(x=torch.ones(3)), ValueError, "x"),
    (dict(x=torch.ones(0, 3, 2, 2)), ValueError, "x"),
    (dict(bias=torch.ones(4)), ValueError, "bias"),
    (dict(bias=torch.ones(3, 1)), ValueError, "bias"),
    (dict(bias=torch.ones(3, dtype=torch.float64)), TypeError, "bias"),
    (dict(bias=torch.ones(3, device="meta")), ValueError, "bias"),
    (dict(scale=math.nan), ValueError, "scale"),
    (dict(scale="2"), TypeError, "scale"),
    (dict(activation="tanh"), ValueError, "activation"),
    (dict(negative_slope=math.inf), ValueError, "negative_slope"),
    (dict(pixel_norm=1), TypeError, "pixel_norm"),
    (dict(eps=-1e-8), ValueError, "eps"),
], ids=lambda v: str(v)[:40] if not isinstance(v, type) else v.__name__)
def test_bad_arguments(kwargs, exc, name):
    args = dict(x=X)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        scaled_bias_act(**args)
