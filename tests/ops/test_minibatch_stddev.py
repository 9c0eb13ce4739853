import math

import pytest
import torch

from progan_fast import backends
from progan_fast.nn import MinibatchStddev
from progan_fast.ops import minibatch_stddev

from .parity import assert_close

LAYOUTS = [torch.contiguous_format, torch.channels_last]


def group_stat(x, members, unbiased, eps=1e-8):
    """mean over c, h, w of sqrt(var over the group's samples + eps), by explicit loops over positions."""
    n, c, h, w = x.shape
    total = 0.0
    for ci in range(c):
        for hi in range(h):
            for wi in range(w):
                values = [float(x[m, ci, hi, wi]) for m in members]
                mean = sum(values) / len(values)
                ss = sum((v - mean) ** 2 for v in values)
                total += math.sqrt(ss / (len(values) - (1 if unbiased else 0)) + eps)
    return total / (c * h * w)


def strided_loop(x, group_size, unbiased=False):
    """TF official: G = min(group_size, N), M = N / G, group of sample n = {n mod M + k M}."""
    n = x.shape[0]
    g = min(group_size, n)
    m = n // g
    stats = [group_stat(x, [j + k * m for k in range(g)], unbiased) for j in range(m)]
    return torch.tensor([stats[i % m] for i in range(n)], dtype=torch.float64)


def contiguous_loop(x, group_size, unbiased=True):
    """pytorch_GAN_zoo: G = min(group_size, N), G = N if N mod G != 0, zeros if G == 1, groups {jG .. jG+G-1}."""
    n = x.shape[0]
    g = min(group_size, n)
    if n % g:
        g = n
    if g == 1:
        return torch.zeros(n, dtype=torch.float64)
    return torch.tensor([group_stat(x, range(i // g * g, i // g * g + g), unbiased) for i in range(n)],
                        dtype=torch.float64)


def check_output(y, x, per_sample):
    n, c, h, w = x.shape
    assert y.shape == (n, c + 1, h, w)
    assert torch.equal(y[:, :c], x)
    torch.testing.assert_close(y[:, c].double(), per_sample.view(n, 1, 1).expand(n, h, w), rtol=1e-12, atol=1e-12)


def test_registered_without_kernels():
    assert backends.resolve("minibatch_stddev", torch.device("cpu")) == "reference"


STRIDED_CASES = [(1, 4), (2, 4), (3, 4), (4, 4), (8, 4), (12, 4), (6, 2), (6, 3), (5, 1), (4, 16)]


@pytest.mark.parametrize("n,group_size,unbiased", [(n, g, False) for n, g in STRIDED_CASES] +
                         [(n, g, True) for n, g in STRIDED_CASES if min(n, g) > 1])  # groups of 1: see bad args
def test_strided_against_loops(n, group_size, unbiased):
    x = torch.randn(n, 3, 2, 3, dtype=torch.float64)
    check_output(minibatch_stddev(x, group_size, "strided", unbiased), x, strided_loop(x, group_size, unbiased))


def test_strided_groups_are_not_contiguous():
    # samples 0 and 1 identical, 2 and 3 identical: strided pairs {0,2}, {1,3} differ, contiguous pairs {0,1} do not
    a, b = torch.randn(1, 2, 2, 2, dtype=torch.float64), torch.randn(1, 2, 2, 2, dtype=torch.float64)
    x = torch.cat([a, a, b, b])
    strided = minibatch_stddev(x, 2, "strided")[:, 2, 0, 0]
    contiguous = minibatch_stddev(x, 2, "contiguous", unbiased=False)[:, 2, 0, 0]
    assert (strided > 0.01).all()
    torch.testing.assert_close(contiguous, torch.full((4,), 1e-4, dtype=torch.float64))


@pytest.mark.parametrize("n,group_size", [(1, 4), (2, 4), (3, 4), (4, 4), (8, 4), (6, 4), (7, 4), (6, 2), (5, 1)])
@pytest.mark.parametrize("unbiased", [True, False])
def test_contiguous_against_loops(n, group_size, unbiased):
    x = torch.randn(n, 2, 3, 2, dtype=torch.float64)
    check_output(minibatch_stddev(x, group_size, "contiguous", unbiased), x, contiguous_loop(x, group_size, unbiased))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("grouping,unbiased", [("strided", False), ("contiguous", True)])
def test_low_precision_statistics_in_float32(dtype, grouping, unbiased):
    # squares of ~300 overflow float16 (max 65504); float32 statistics do not
    x = (300 * torch.randn(8, 4, 3, 3)).to(dtype)
    y = minibatch_stddev(x, 4, grouping, unbiased)
    assert y.dtype == dtype and torch.isfinite(y).all()
    expected = minibatch_stddev(x.double(), 4, grouping, unbiased)
    assert_close(y, expected, dtype)


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=["nchw", "channels_last"])
@pytest.mark.parametrize("n,grouping", [(8, "strided"), (6, "contiguous"), (1, "contiguous")])
def test_keeps_memory_format(memory_format, n, grouping):
    x = torch.randn(n, 5, 4, 3)
    y = minibatch_stddev(x.contiguous(memory_format=memory_format), 4, grouping)
    assert y.is_contiguous(memory_format=memory_format)
    torch.testing.assert_close(y, minibatch_stddev(x, 4, grouping))


@pytest.mark.parametrize("n,grouping,unbiased", [(4, "strided", False), (8, "strided", False),
                                                 (6, "contiguous", True), (3, "strided", True)])
def test_gradcheck_gradgradcheck(n, grouping, unbiased):
    x = torch.randn(n, 2, 2, 2, dtype=torch.float64, requires_grad=True)

    def fn(x):
        return minibatch_stddev(x, 4, grouping, unbiased)

    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,), fast_mode=True)


def test_module_defaults_are_tf_official():
    x = torch.randn(8, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(MinibatchStddev()(x), minibatch_stddev(x, 4, "strided", False))
    check_output(MinibatchStddev()(x), x, strided_loop(x, 4))


X = torch.randn(8, 3, 4, 4)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(x=torch.randn(6, 3, 4, 4)), ValueError, "group_size"),
    (dict(x=torch.randn(5, 3, 4, 4), group_size=2), ValueError, "group_size"),
    (dict(group_size=0), ValueError, "group_size"),
    (dict(group_size=2.0), TypeError, "group_size"),
    (dict(grouping="random"), ValueError, "grouping"),
    (dict(unbiased=1), TypeError, "unbiased"),
    (dict(x=torch.randn(1, 3, 4, 4), unbiased=True), ValueError, "unbiased"),
    (dict(group_size=1, unbiased=True), ValueError, "unbiased"),
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(eps=math.nan), ValueError, "eps"),
    (dict(x=torch.randn(8, 3, 4)), ValueError, "x"),
    (dict(x=torch.randn(0, 3, 4, 4)), ValueError, "x"),
    (dict(x=torch.ones(8, 3, 4, 4, dtype=torch.int64)), TypeError, "x"),
], ids=lambda v: str(v)[:40] if not isinstance(v, type) else v.__name__)
def test_bad_arguments(kwargs, exc, name):
    args = dict(x=X)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        minibatch_stddev(**args)
