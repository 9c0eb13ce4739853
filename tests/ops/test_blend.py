import math

import pytest
import torch

from progan_fast import backends
from progan_fast.ops import downsample_blend, fade_reals, upsample_blend

from .parity import assert_close

LAYOUTS = [torch.contiguous_format, torch.channels_last]
ALPHAS = [0.0, 0.25, 0.7, 1.0]


def up_loop(x):
    n, c, h, w = x.shape
    out = x.new_empty(n, c, 2 * h, 2 * w)
    for i in range(2 * h):
        for j in range(2 * w):
            out[:, :, i, j] = x[:, :, i // 2, j // 2]
    return out


def down_loop(x):
    n, c, h, w = x.shape
    out = x.new_empty(n, c, h // 2, w // 2)
    for i in range(h // 2):
        for j in range(w // 2):
            out[:, :, i, j] = x[:, :, 2 * i:2 * i + 2, 2 * j:2 * j + 2].sum((2, 3)) / 4
    return out


def as_alpha(value, kind):
    return torch.tensor(value, dtype=torch.float64) if kind == "tensor" else value


def test_registered_without_kernels():
    for op in ("upsample_blend", "downsample_blend", "fade_reals"):
        assert backends.resolve(op, torch.device("cpu")) == "reference"


@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("kind", ["float", "tensor"])
@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (1, 1, 1, 1), (3, 2, 3, 5)], ids=str)
def test_formulas_float64(alpha, kind, shape):
    n, c, h, w = shape
    low = torch.randn(n, c, h, w, dtype=torch.float64)
    high = torch.randn(n, c, 2 * h, 2 * w, dtype=torch.float64)
    a = as_alpha(alpha, kind)
    torch.testing.assert_close(upsample_blend(low, high, a), up_loop(low) + (high - up_loop(low)) * alpha)
    torch.testing.assert_close(downsample_blend(high, low, a), low + (down_loop(high) - low) * alpha)
    torch.testing.assert_close(fade_reals(high, a), up_loop(down_loop(high)) + (high - up_loop(down_loop(high))) * alpha)


def test_endpoints_are_exact():
    low, high = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)
    assert torch.equal(upsample_blend(low, high, 1.0), high)
    assert torch.equal(upsample_blend(low, high, 0.0), up_loop(low))
    assert torch.equal(downsample_blend(high, low, 0.0), low)
    assert torch.equal(fade_reals(high, 1.0), high)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_low_precision_against_float64(dtype):
    low, high = torch.randn(2, 3, 4, 4).to(dtype), torch.randn(2, 3, 8, 8).to(dtype)
    l64, h64 = low.double(), high.double()
    for got, expected in [(upsample_blend(low, high, 0.3), up_loop(l64) + (h64 - up_loop(l64)) * 0.3),
                          (downsample_blend(high, low, 0.3), l64 + (down_loop(h64) - l64) * 0.3),
                          (fade_reals(high, 0.3), up_loop(down_loop(h64)) * 0.7 + h64 * 0.3)]:
        assert got.dtype == dtype
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
def test_keeps_memory_format(memory_format):
    low = torch.randn(2, 3, 4, 4).contiguous(memory_format=memory_format)
    high = torch.randn(2, 3, 8, 8).contiguous(memory_format=memory_format)
    assert upsample_blend(low, high, 0.5).is_contiguous(memory_format=memory_format)
    assert downsample_blend(high, low, 0.5).is_contiguous(memory_format=memory_format)
    assert fade_reals(high, 0.5).is_contiguous(memory_format=memory_format)


def test_gradcheck_gradgradcheck():
    low = torch.randn(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    high = torch.randn(2, 2, 4, 6, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    for fn, args in [(upsample_blend, (low, high, alpha)), (lambda h, l, a: downsample_blend(h, l, a), (high, low, alpha)),
                     (fade_reals, (high, alpha))]:
        # fast mode (random projections): the exact Jacobian of the pooling paths takes seconds on this CPU
        assert torch.autograd.gradcheck(fn, args, fast_mode=True)
        assert torch.autograd.gradgradcheck(fn, args, fast_mode=True)


LOW, HIGH = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 8, 8)


@pytest.mark.parametrize("alpha,exc", [
    (math.nan, ValueError), (math.inf, ValueError), (-0.1, ValueError), (1.5, ValueError), (True, TypeError),
    ("0.5", TypeError), (torch.tensor([0.5]), ValueError), (torch.tensor(1), TypeError),
    (torch.tensor(math.nan), ValueError), (torch.tensor(2.0), ValueError)], ids=repr)
def test_bad_alpha(alpha, exc):
    for call in (lambda: upsample_blend(LOW, HIGH, alpha), lambda: downsample_blend(HIGH, LOW, alpha),
                 lambda: fade_reals(HIGH, alpha)):
        with pytest.raises(exc, match="alpha"):
            call()


@pytest.mark.parametrize("low,high,exc,name", [
    (LOW, torch.randn(2, 3, 8, 7), ValueError, "high"),
    (LOW, torch.randn(2, 4, 8, 8), ValueError, "high"),
    (LOW, torch.randn(3, 3, 8, 8), ValueError, "high"),
    (LOW[0], HIGH, ValueError, "low"),
    (LOW, HIGH[0], ValueError, "high"),
    (LOW.double(), HIGH, TypeError, "low"),
    (LOW.to("meta"), HIGH, ValueError, "low"),
    (LOW[:0], HIGH[:0], ValueError, "low"),
    (LOW.int(), HIGH, TypeError, "low"),
])
def test_bad_pairs(low, high, exc, name):
    with pytest.raises(exc, match=name):
        upsample_blend(low, high, 0.5)
    with pytest.raises(exc, match=name):
        downsample_blend(high, low, 0.5)


@pytest.mark.parametrize("x,exc", [(torch.randn(2, 3, 5, 4), ValueError), (torch.randn(2, 3, 4, 3), ValueError),
                                   (torch.randn(3, 4, 4), ValueError), (torch.randn(0, 3, 4, 4), ValueError),
                                   (torch.ones(1, 3, 4, 4, dtype=torch.uint8), TypeError)])
def test_fade_reals_bad_x(x, exc):
    with pytest.raises(exc, match="x"):
        fade_reals(x, 0.5)
