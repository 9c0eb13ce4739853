import math

import pytest
import torch
import torch.nn.functional as F

from progan_fast import backends, reference
from progan_fast.ops import eq_conv2d, eq_linear

LAYOUTS = [torch.contiguous_format, torch.channels_last]
SIZES = [(4, 4), (5, 7), (1, 1), (6, 3), (2, 9)]


def nearest_up2(x):
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def box_down2(x):
    h, w = x.shape[2] // 2 * 2, x.shape[3] // 2 * 2
    x = x[:, :, :h, :w]
    return (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) / 4


def unfused(x, weight, bias, gain, lr_mul, activation, slope, pixel_norm, up, down):
    """The layer as TF official writes it unfused: scaled weight copy, nearest-up / conv / box-down, bias, act."""
    k = weight.shape[-1]
    w = weight * (gain * lr_mul / math.sqrt(weight.shape[1] * k * k))
    if up:
        x = nearest_up2(x)
    y = F.conv2d(x, w, padding=k // 2)
    if down:
        y = box_down2(y)
    if bias is not None:
        y = y + (bias * lr_mul).view(1, -1, 1, 1)
    if activation == "lrelu":
        y = torch.maximum(y, slope * y)
    elif activation == "relu":
        y = y.clamp_min(0)
    if pixel_norm:
        y = y * torch.rsqrt(y.square().mean(1, keepdim=True) + 1e-8)
    return y


def test_registered_without_kernels():
    for op in ("eq_conv2d", "eq_linear"):
        assert op in backends.ops()
        assert backends.resolve(op, torch.device("cpu")) == "reference"


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("size", SIZES, ids=str)
def test_fused_resample_conv_equals_unfused_pair_float64(k, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    w = torch.randn(4, 3, k, k, dtype=torch.float64)
    up = reference.conv2d_resample(x, w, up=True)
    torch.testing.assert_close(up, F.conv2d(nearest_up2(x), w, padding=k // 2), rtol=0, atol=1e-12)
    if min(size) >= 2:
        down = reference.conv2d_resample(x, w, down=True)
        torch.testing.assert_close(down, box_down2(F.conv2d(x, w, padding=k // 2)), rtol=0, atol=1e-12)


def test_resample_kernel_is_sum_of_shifts():
    w = torch.randn(2, 3, 3, 3, dtype=torch.float64)
    k = reference.resample_kernel(w)
    expected = torch.zeros(2, 3, 4, 4, dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            expected[:, :, dy:dy + 3, dx:dx + 3] += w
    torch.testing.assert_close(k, expected, rtol=0, atol=1e-14)  # summation order differs


@pytest.mark.parametrize("up,down", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("activation,pixel_norm", [("lrelu", False), ("lrelu", True), ("linear", False),
                                                   ("relu", True)])
@pytest.mark.parametrize("gain,lr_mul", [(math.sqrt(2), 1.0), (1.0, 0.01), (math.sqrt(2) / 4, 3.0)])
def test_eq_conv2d_equals_scaled_weight_conv(up, down, activation, pixel_norm, gain, lr_mul):
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64)
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64)
    for bias in (b, None):
        y = eq_conv2d(x, w, bias, gain=gain, lr_mul=lr_mul, activation=activation, negative_slope=0.2,
                      pixel_norm=pixel_norm, up=up, down=down)
        expected = unfused(x, w, bias, gain, lr_mul, activation, 0.2, pixel_norm, up, down)
        torch.testing.assert_close(y, expected, rtol=1e-11, atol=1e-12)


def test_fan_in_of_fused_up_conv_is_the_3x3_one():
    x = torch.randn(1, 8, 2, 2, dtype=torch.float64)
    w = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    y = eq_conv2d(x, w, gain=1.0, activation="linear", up=True)
    torch.testing.assert_close(y, F.conv2d(nearest_up2(x), w, padding=1) / math.sqrt(8 * 9))


@pytest.mark.parametrize("activation,pixel_norm", [("lrelu", False), ("linear", False), ("lrelu", True)])
@pytest.mark.parametrize("lr_mul", [1.0, 0.01])
def test_eq_linear_equals_scaled_weight_linear(activation, pixel_norm, lr_mul):
    x = torch.randn(5, 12, dtype=torch.float64)
    w = torch.randn(7, 12, dtype=torch.float64)
    b = torch.randn(7, dtype=torch.float64)
    y = eq_linear(x, w, b, gain=0.5, lr_mul=lr_mul, activation=activation, pixel_norm=pixel_norm)
    e = F.linear(x, w * (0.5 * lr_mul / math.sqrt(12))) + b * lr_mul
    if activation == "lrelu":
        e = torch.maximum(e, 0.2 * e)
    if pixel_norm:
        e = e * torch.rsqrt(e.square().mean(1, keepdim=True) + 1e-8)
    torch.testing.assert_close(y, e, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("up,down", [(False, False), (True, False), (False, True)])
def test_gradcheck_gradgradcheck_eq_conv2d(up, down):
    # N=2 so that pixel norm couples channels, odd H/W for the fused kernels' borders; small for runtime.
    x = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
    w = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return eq_conv2d(x, w, b, lr_mul=0.5, pixel_norm=True, up=up, down=down)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b), fast_mode=True)


def test_gradcheck_gradgradcheck_eq_linear():
    x = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)

    def fn(x, w, b):
        return eq_linear(x, w, b, gain=1.3, pixel_norm=True)

    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("up,down", [(False, False), (True, False), (False, True)])
def test_keeps_memory_format(memory_format, up, down):
    x = torch.randn(2, 4, 6, 6)
    w = torch.randn(5, 4, 3, 3)
    b = torch.randn(5)
    y = eq_conv2d(x.contiguous(memory_format=memory_format), w, b, pixel_norm=True, up=up, down=down)
    assert y.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(y, eq_conv2d(x, w, b, pixel_norm=True, up=up, down=down), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_low_precision_against_float64(dtype):
    x = torch.randn(2, 8, 5, 5)
    w = torch.randn(6, 8, 3, 3)
    b = torch.randn(6)
    y = eq_conv2d(x.to(dtype), w.to(dtype), b.to(dtype), up=True)
    assert y.dtype == dtype
    e = unfused(*(t.to(dtype).double() for t in (x, w, b)), math.sqrt(2), 1.0, "lrelu", 0.2, False, True, False)
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2}[dtype]
    torch.testing.assert_close(y.double(), e, rtol=tol, atol=tol)


X = torch.randn(2, 3, 4, 4)
W = torch.randn(5, 3, 3, 3)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(x=torch.randn(3, 4, 4)), ValueError, "x"),
    (dict(x=torch.randn(0, 3, 4, 4)), ValueError, "x"),
    (dict(x=X.int()), TypeError, "x"),
    (dict(weight=torch.randn(5, 3, 3)), ValueError, "weight"),
    (dict(weight=torch.randn(5, 4, 3, 3)), ValueError, "weight"),
    (dict(weight=torch.randn(5, 3, 2, 2)), ValueError, "weight"),
    (dict(weight=torch.randn(5, 3, 3, 1)), ValueError, "weight"),
    (dict(weight=W.double()), TypeError, "weight"),
    (dict(weight=W.to("meta")), ValueError, "weight"),
    (dict(bias=torch.randn(3)), ValueError, "bias"),
    (dict(bias=torch.randn(5).double()), TypeError, "bias"),
    (dict(gain=math.nan), ValueError, "gain"),
    (dict(lr_mul=0.0), ValueError, "lr_mul"),
    (dict(lr_mul=math.inf), ValueError, "lr_mul"),
    (dict(activation="elu"), ValueError, "activation"),
    (dict(negative_slope=None), TypeError, "negative_slope"),
    (dict(pixel_norm="yes"), TypeError, "pixel_norm"),
    (dict(up=1), TypeError, "up"),
    (dict(down=None), TypeError, "down"),
    (dict(up=True, down=True), ValueError, "up and down"),
    (dict(x=torch.randn(2, 3, 1, 4), down=True), ValueError, "x"),
], ids=lambda v: str(v)[:40] if not isinstance(v, type) else v.__name__)
def test_eq_conv2d_bad_arguments(kwargs, exc, name):
    args = dict(x=X, weight=W, bias=None)
    args.update(kwargs)
    x, w, b = args.pop("x"), args.pop("weight"), args.pop("bias")
    with pytest.raises(exc, match=name):
        eq_conv2d(x, w, b, **args)


@pytest.mark.parametrize("x,w,b,exc,name", [
    (torch.randn(2, 3, 1), torch.randn(4, 3), None, ValueError, "x"),
    (torch.randn(2, 3), torch.randn(4, 5), None, ValueError, "weight"),
    (torch.randn(2, 3), torch.randn(4, 3, 1), None, ValueError, "weight"),
    (torch.randn(2, 3), torch.randn(4, 3), torch.randn(3), ValueError, "bias"),
    (torch.randn(2, 3), torch.randn(4, 3).half(), None, TypeError, "weight"),
    (torch.randn(0, 3), torch.randn(4, 3), None, ValueError, "x"),
])
def test_eq_linear_bad_arguments(x, w, b, exc, name):
    with pytest.raises(exc, match=name):
        eq_linear(x, w, b)
