"""Seeded fuzzing of every raw op of every kernel family that runs here (`torch.ops.progan_fast.*` on the CPU,
`torch.ops.progan_fast_emulated.*`, and `torch.ops.progan_fast_triton.*` under TRITON_INTERPRET=1), called
directly, as a caller that bypasses the public functions' checks would: random shapes (empty dimensions
included), layouts (expanded, transposed, sliced, channels_last), dtypes (int and mixed), NaN/Inf values, meta
tensors alone and mixed with CPU ones, operands whose shapes disagree, and scalar arguments out of range.

Each call either raises a clear error (a RuntimeError, ValueError, TypeError or IndexError whose message names
one of the op's arguments) or returns what the float64 reference computes from the same arguments, within the
tolerances of tests/ops/parity.py. An all-meta call must refuse or return the metadata (shape, dtype, strides)
of the same family's real call; a call mixing meta and CPU tensors must refuse (the meta argument would route a
real call to the fake kernel, which returns uninitialised memory).

The raw ops come from the registry (`_library.raw_ops()`): the ops with kernels and the composites (the formulas
of higher derivatives, torch ops behind the same operand checks). Each has a small description below (`SPECS`):
how to build valid operands, and its float64 reference; a composite's is the autograd of its backward's reference
(see `composite_spec`). A raw op without one fails `test_every_raw_op_is_fuzzed`.
"""
import dataclasses
import math
import random
import re
import time
from typing import Callable, Optional

import pytest
import torch

from progan_fast import _layout, _library, reference
from progan_fast.ops import blend as _blend  # noqa: F401 (defines the raw ops)
from progan_fast.ops.scaled_bias_act import reads_saved, saves_input

from ops.parity import FAMILIES, GRAD_TOLERANCES, TOLERANCES

CALLS = {"cpu": 400, "emulated": 400, "triton": 8}
# The composite raw ops (the formulas of higher derivatives) are the same torch code in every namespace, except
# that scaled_bias_act's call their family's kernels: fewer calls outside the cpu family.
COMPOSITE_CALLS = {"cpu": 300, "emulated": 150, "triton": 8}
ERRORS = (TypeError, ValueError, RuntimeError, IndexError)
FLOATS = (torch.float32, torch.float32, torch.float64, torch.float16, torch.bfloat16)
OTHER_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool)


class Invalid(Exception):
    """The reference has no defined result for these arguments: the kernel must refuse them."""


# ---- operand generation ----

class Gen:
    """Random operands for one call: sizes, tensors in random layouts (values drawn first, then laid out, so a
    derived operand keeps its values), and scalars that are sometimes out of range."""

    def __init__(self, rng, dtype, hostile=True):
        self.rng = rng
        self.dtype = dtype
        self.hostile = hostile

    def size(self, low=1):
        if low == 0 and self.rng.random() < 0.08:
            return 0
        return self.rng.choice((1, 1, 2, 2, 3, 4, 5))

    def values(self, shape, dtype=None, special=True):
        """float64 values (sometimes with NaN/Inf) of `shape`; sometimes one value expanded along a dimension."""
        shape = list(shape)
        if shape and self.rng.random() < 0.1:
            d = self.rng.randrange(len(shape))
            base = list(shape)
            base[d] = 1
            v = torch.randn(base, dtype=torch.float64).expand(*shape)
            v = v.to(dtype or self.dtype).double()
            return v, d
        v = torch.randn(shape, dtype=torch.float64)
        if special and self.hostile and v.numel() and self.rng.random() < 0.08:
            flat = v.view(-1)
            flat[self.rng.randrange(flat.numel())] = self.rng.choice((math.nan, math.inf, -math.inf))
        return v.to(dtype or self.dtype).double(), None

    def tensor(self, shape, dtype=None, special=True):
        """A tensor of `shape` and `dtype` (default: the call's) with random values and layout."""
        dtype = dtype or self.dtype
        v, expanded = self.values(shape, dtype, special)
        if expanded is not None and self.rng.random() < 0.7:
            return v[tuple(slice(0, 1) if d == expanded else slice(None) for d in range(v.dim()))].to(dtype).expand(
                v.shape)
        return self.layout(v.to(dtype))

    def layout(self, t):
        """The same values in a random memory layout."""
        kind = self.rng.choice(("contiguous", "contiguous", "channels_last", "transposed", "sliced"))
        if kind == "channels_last" and t.dim() == 4:
            return t.contiguous(memory_format=torch.channels_last)
        if kind == "transposed" and t.dim() >= 2:
            perm = list(range(t.dim()))
            self.rng.shuffle(perm)
            inverse = [perm.index(d) for d in range(t.dim())]
            return t.permute(perm).contiguous().permute(inverse)
        if kind == "sliced" and t.dim() >= 1:
            d = self.rng.randrange(t.dim())
            shape = list(t.shape)
            shape[d] *= 2
            big = torch.zeros(shape, dtype=t.dtype)
            index = [slice(None)] * t.dim()
            index[d] = slice(None, None, 2)
            big[tuple(index)] = t
            return big[tuple(index)]
        return t.clone()

    def pick(self, good, *bad):
        """`good`, or (sometimes) one of the out-of-range values `bad`."""
        if bad and self.hostile and self.rng.random() < 0.12:
            return self.rng.choice(bad)
        return good

    def alpha(self):
        value = self.pick(self.rng.choice((0.0, 0.3, 1.0, 0.7)), 1.5, -0.25, math.nan, math.inf)
        dtype = self.rng.choice((torch.float64, torch.float32, torch.float16, torch.bfloat16))
        shape = self.pick((), (1,))
        dtype = self.pick(dtype, torch.int64)
        return torch.full(shape, value if dtype.is_floating_point else 1, dtype=dtype)


@dataclasses.dataclass
class Call:
    """A raw op's arguments and the float64 reference: `reference(args)` returns the expected outputs as
    (float64 values, dtype, is_gradient) triples or raises Invalid (or any error) for arguments without a result."""
    args: list
    reference: Callable


def d(t):
    """A float64 copy of a floating tensor (the reference's inputs); anything else has no reference."""
    if not isinstance(t, torch.Tensor):
        return t
    if not t.is_floating_point():
        raise Invalid(f"a {t.dtype} operand")
    return t.detach().double()


def avg_pool2(x):
    """2x2 box filter (an odd last row or column dropped), defined on empty maps too."""
    n, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2]
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean((3, 5))


def nearest_up(x, factor=2):
    return x.repeat_interleave(factor, 2).repeat_interleave(factor, 3)


def stat(dtype):
    return _layout.stat_dtype(dtype)


def lrelu(v, slope):
    return torch.where(v > 0, v, v * slope)


def vjp(fn, inputs, grads):
    """Gradients of <fn(*inputs), grads> w.r.t. inputs, in float64. A None grad leaves its output out (no gradient
    flows from it), as does an output that depends on no input."""
    leaves = [t.detach().double().requires_grad_() for t in inputs]
    outs = fn(*leaves)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    pairs = []
    for o, g in zip(outs, grads):
        if g is None:
            continue
        if o.shape != g.shape:
            raise Invalid(f"gradient of shape {tuple(g.shape)} for an output of shape {tuple(o.shape)}")
        if o.requires_grad:
            pairs.append((o, g))
    if not pairs:
        return tuple(torch.zeros_like(t) for t in leaves)
    return torch.autograd.grad([o for o, _ in pairs], leaves, [g for _, g in pairs], allow_unused=True,
                               materialize_grads=True)


def dvjp(fn, inputs, grads):
    """vjp kept differentiable (create_graph): a backward as a function of its operands, whose own vjp is then the
    double backward's reference. `inputs` require grad (the outer vjp's leaves, or tensors computed from them)."""
    outs = fn(*inputs)
    outs = outs if isinstance(outs, (tuple, list)) else (outs,)
    for o, g in zip(outs, grads):
        if o.shape != g.shape:
            raise Invalid(f"gradient of shape {tuple(g.shape)} for an output of shape {tuple(o.shape)}")
    return torch.autograd.grad(outs, inputs, grads, create_graph=True, allow_unused=True, materialize_grads=True)


def pinned_rsqrt(a, r, dim):
    """r = rsqrt(mean over dim of a^2 + eps) as a function of a whose value is the given r (what a backward reads)
    and whose derivative is that of the rsqrt, -r^3 a / C, whatever eps was."""
    half_mean_sq = (a * a).sum(dim, keepdim=True) / (2 * a.shape[dim])
    return r - r ** 3 * (half_mean_sq - half_mean_sq.detach())


def pinned_norm(a, r, dim, eps):
    """a * rsqrt(mean over dim of a^2 + eps) as a function of a whose value is a * r (what a backward reads) and whose
    derivative is pixel norm's at r. With one element per vector that is eps r^3 exactly, the form the kernels
    write (csrc/common/pixel_norm_math.h): r (1 - r^2 a^2), the general form, is it only for an exact r, and from
    the r a backward reads, rounded to its dtype, mostly that rounding. A non-finite a has no derivative (NaN), as
    with more elements."""
    if a.shape[dim] == 1:
        return (a * r).detach() + (eps * r ** 3 + 0 * a.detach()) * (a - a.detach())
    return a * pinned_rsqrt(a, r, dim)


def tracked_rsqrt(a, r, dim):
    """rsqrt(mean over dim of a^2 + c) with the constant c that gives it the value r (what a double backward reads):
    every derivative is the rsqrt's, at any order (pinned_rsqrt has only the first). It is r / sqrt(1 + r^2 dm) with
    dm the change of the mean square, which stays exact where r^-2 - mean(a^2) would cancel."""
    mean_sq = (a * a).mean(dim, keepdim=True)
    return r * torch.rsqrt(1 + r * r * (mean_sq - mean_sq.detach()))


def stat_view(r, x, dim):
    shape = list(x.shape)
    shape[dim] = 1
    if r.numel() != math.prod(shape):
        raise Invalid(f"rsqrt has {r.numel()} values for {math.prod(shape)} vectors")
    return d(r).reshape(shape)


# ---- one description per raw op ----

SPECS = {}


def spec(fn):
    SPECS[fn.__name__] = fn
    return fn


def composite_spec(fn):
    """A composite raw op's description (a formula of a higher derivative). Its reference is the autograd of the
    backward's float64 reference, as above, when every floating operand is finite. With a NaN or Inf operand the
    derivative has no defined value and where the Infs cancel depends on how the sum is arranged, so the reference
    is then the formula itself evaluated in float64 on the same operands (the cpu family's op): the non-finite
    values must propagate as the formula propagates them, and the dtypes be handled as in float64."""
    def described(g):
        call = fn(g)

        def reference(args):
            expected = call.reference(args)  # raises for arguments without a result
            if all(torch.isfinite(a).all() for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()):
                return expected
            formula = getattr(torch.ops.progan_fast, fn.__name__)
            out = _outputs(formula(*[d(a) if isinstance(a, torch.Tensor) else a for a in args]))
            return [(o, dtype, grad) for o, (_, dtype, grad) in zip(out, expected)]
        return Call(call.args, reference)
    described.__name__ = fn.__name__
    return spec(described)


@spec
def pixel_norm_forward(g):
    ndim = g.rng.choice((1, 2, 3, 4, 4))
    x = g.tensor([g.size(0) for _ in range(ndim)])
    dim = g.pick(g.rng.randrange(-ndim, ndim), ndim, -ndim - 1, 64)
    eps = g.pick(g.rng.choice((1e-8, 1e-4)), -1.0, 0.0, math.nan, math.inf)

    def ref(args):
        x, dim, eps = args
        xd = d(x)
        r = torch.rsqrt(xd.square().mean(dim, keepdim=True) + eps)
        return [(xd * r, x.dtype, False), (r, stat(x.dtype), False)]
    return Call([x, dim, eps], ref)


@spec
def pixel_norm_backward(g):
    ndim = g.rng.choice((1, 2, 3, 4, 4))
    shape = [g.size(0) for _ in range(ndim)]
    dim = g.pick(g.rng.randrange(-ndim, ndim), ndim, -ndim - 1)
    x = g.tensor(shape)
    eps = g.pick(1e-8, -1.0, math.nan)
    if -ndim <= dim < ndim:
        r = torch.rsqrt(d(x).square().mean(dim, keepdim=True) + eps).to(stat(x.dtype))
    else:
        r = torch.rand(shape[:-1] + [1], dtype=torch.float64).to(stat(x.dtype))
    rsqrt = g.layout(r)
    grad_y = g.tensor(shape)

    def ref(args):
        grad_y, x, rsqrt, dim, eps = args
        if x.dim() == 0 or not -x.dim() <= dim < x.dim():
            raise Invalid("dim")
        r = stat_view(rsqrt, x, dim % x.dim())
        (dx,) = vjp(lambda x: pinned_norm(x, r, dim, eps), [d(x)], [d(grad_y)])
        return [(dx, x.dtype, True)]
    return Call([grad_y, x, rsqrt, dim, eps], ref)


def _sba_forward_ref(x, bias, scale, slope, pixel_norm, eps, r=None):
    v = x * scale
    if bias is not None:
        v = v + bias.reshape([1, -1] + [1] * (x.dim() - 2))
    a = lrelu(v, slope)
    if not pixel_norm:
        return a, None
    if r is None:
        r = torch.rsqrt(a.square().mean(1, keepdim=True) + eps)
        return a * r, r
    return pinned_norm(a, r, 1, eps), r


def _sba_operands(g):
    ndim = g.rng.choice((2, 3, 4, 4))
    shape = [g.size(0) for _ in range(ndim)]
    x = g.tensor(shape)
    bias = None if g.rng.random() < 0.2 else g.tensor([shape[1]])
    scale = g.pick(g.rng.uniform(0.1, 2.0), 0.0, -1.5, math.inf, math.nan)
    slope = g.pick(g.rng.choice((0.2, 0.0, 1.0, 0.5, -0.3, 1.5)), math.inf, math.nan)
    pixel_norm = g.rng.random() < 0.5
    eps = g.pick(g.rng.choice((1e-8, 1e-4)), -1.0, 0.0, math.nan)
    return x, bias, scale, slope, pixel_norm, eps


def _check_bias_ref(bias, x):
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != x.shape[1]):
        raise Invalid("bias shape")


@spec
def scaled_bias_act_forward(g):
    x, bias, scale, slope, pixel_norm, eps = _sba_operands(g)

    def ref(args):
        x, bias, scale, slope, pixel_norm, eps = args
        if x.dim() < 2:
            raise Invalid("x rank")
        _check_bias_ref(bias, x)
        y, r = _sba_forward_ref(d(x), d(bias), scale, slope, pixel_norm, eps)
        if r is None:
            r = torch.empty(0, dtype=torch.float64)
        return [(y, x.dtype, False), (r, stat(x.dtype), False)]
    return Call([x, bias, scale, slope, pixel_norm, eps], ref)


def _sba_backward_operands(g):
    """The forward's x and bias, and the backward's arguments computed from them."""
    x, bias, scale, slope, pixel_norm, eps = _sba_operands(g)
    saved_is_input = g.pick(saves_input(slope), not saves_input(slope))
    bias_grad = g.rng.random() < 0.5
    y, r = _sba_forward_ref(d(x), d(bias), scale, slope, pixel_norm, eps)
    if saved_is_input:
        saved = x
    elif reads_saved(slope, pixel_norm) or g.rng.random() < 0.5:
        saved = g.layout(y.to(x.dtype))
    else:
        saved = None
    rsqrt = g.layout(r.to(stat(x.dtype))) if pixel_norm else g.rng.choice((None, torch.empty(0)))
    bias_arg = bias if saved_is_input or g.rng.random() < 0.5 else None
    grad_y = g.tensor(x.shape)
    return x, bias, [grad_y, saved, rsqrt, bias_arg, scale, slope, pixel_norm, eps, saved_is_input, bias_grad]


def _sba_check_backward_ref(grad_y, saved, bias_arg, slope, pixel_norm):
    if grad_y.dim() < 2:
        raise Invalid("grad_y rank")
    _check_bias_ref(bias_arg, grad_y)
    if saved is not None and saved.shape != grad_y.shape:
        raise Invalid("saved shape")
    if reads_saved(slope, pixel_norm) and saved is None:
        raise Invalid("saved missing")
    if saved is not None:
        d(saved)


def _sba_linearization(x, bias, grad_y, saved, bias_arg, slope, pixel_norm, saved_is_input):
    """The (x, bias) at which the backward kernel takes the derivative."""
    if not reads_saved(slope, pixel_norm):  # linear: the derivative is scale wherever it is taken
        return torch.zeros(grad_y.shape), None
    if saved_is_input:  # the kernel recomputes the pre-activation from x = saved and bias_arg
        return saved, bias_arg
    return x, bias  # the kernel reads y; its derivative is the one at the x and bias that gave y


@spec
def scaled_bias_act_backward(g):
    x, bias, args = _sba_backward_operands(g)

    def ref(args):
        grad_y, saved, rsqrt, bias_arg, scale, slope, pixel_norm, eps, saved_is_input, bias_grad = args
        _sba_check_backward_ref(grad_y, saved, bias_arg, slope, pixel_norm)
        x_ref, b_ref = _sba_linearization(x, bias, grad_y, saved, bias_arg, slope, pixel_norm, saved_is_input)
        rr = stat_view(rsqrt, grad_y, 1) if pixel_norm else None
        b = torch.zeros(grad_y.shape[1], dtype=torch.float64) if b_ref is None else d(b_ref)
        grad_x, grad_b = vjp(lambda x, b: _sba_forward_ref(x, b, scale, slope, pixel_norm, eps, rr)[0],
                             [d(x_ref), b], [d(grad_y)])
        if not bias_grad:
            grad_b = torch.empty(0, dtype=torch.float64)
        return [(grad_x, grad_y.dtype, True), (grad_b, grad_y.dtype, True)]
    return Call(args, ref)


def _sum_channels(t):
    return t.sum([k for k in range(t.dim()) if k != 1])


def _restored_norm(y, r, eps):
    """The constant factor that gives y the norm of the forward's output, mean_c(y^2) = 1 - eps * r^2 (1 where y is
    all zero): the backward with pixel norm reads y so (progan_fast/ops/scaled_bias_act.py), and the derivatives
    along the forward's y(x), r(x) are the same with the factor held constant (it is 1 there)."""
    with torch.no_grad():
        mean_sq = (y * y).mean(1, keepdim=True)
        return torch.where(mean_sq > 0, (1 - eps * r * r) / mean_sq, torch.ones_like(mean_sq)).sqrt()


def _act_grad(v, slope):
    return torch.where(v > 0, 1.0, torch.tensor(slope, dtype=torch.float64))


def _sba_pixel_norm_backward(grad_y, saved, r, bias, scale, slope, eps, saved_is_input):
    """The backward with pixel norm as a differentiable function of its operands, r an operand of its own (one value
    per pixel, shaped [N, 1, ...]; its dependence on x is the forward's rsqrt output, differentiated apart):
    pixel norm's vjp at a = y / r, r grad_y - r^3 a mean_c(grad_y a), with y = act(scale * x + bias) * r
    recomputed from x or read (saved) at its restored norm; then act' (piecewise constant) and the chain to x and
    bias."""
    if saved_is_input:
        v = saved * scale + bias.reshape([1, -1] + [1] * (saved.dim() - 2))
        y = lrelu(v, slope) * r
    else:
        v = y = saved
    a = y * _restored_norm(y, r, eps) / r
    grad_a = r * grad_y - r ** 3 * a * (grad_y * a).mean(1, keepdim=True)
    if grad_y.shape[1] == 1:  # one channel: the exact form (pinned_norm), a function of grad_y and r alone
        grad_a = eps * r ** 3 * grad_y
    grad_v = _act_grad(v.detach(), slope) * grad_a
    return grad_v * scale, _sum_channels(grad_v)


@composite_spec
def scaled_bias_act_double_backward(g):
    x, bias, backward_args = _sba_backward_operands(g)
    grad_grad_x = None if g.rng.random() < 0.25 else g.tensor(x.shape)
    grad_grad_bias = g.rng.choice((None, torch.empty(0, dtype=x.dtype), [x.shape[1]], [x.shape[1]]))
    if isinstance(grad_grad_bias, list):
        grad_grad_bias = g.tensor(grad_grad_bias)

    def ref(args):
        grad_grad_x, grad_grad_bias, grad_y, saved, rsqrt, bias_arg, scale, slope, pixel_norm, eps, saved_is_input = \
            args
        _sba_check_backward_ref(grad_y, saved, bias_arg, slope, pixel_norm)
        if grad_grad_bias is not None and tuple(grad_grad_bias.shape) == (0,):  # the backward had no bias gradient
            grad_grad_bias = None
        grads = [None if t is None else d(t) for t in (grad_grad_x, grad_grad_bias)]
        empty = (torch.empty(0, dtype=torch.float64), grad_y.dtype, True)
        if grads == [None, None]:
            return [empty] * 4
        if not pixel_norm:  # the backward is linear in grad_y, and only grad_y has a gradient
            x_ref, b_ref = _sba_linearization(x, bias, grad_y, saved, bias_arg, slope, pixel_norm, saved_is_input)
            x_ref = d(x_ref).requires_grad_()
            b_ref = (torch.zeros(grad_y.shape[1], dtype=torch.float64) if b_ref is None else d(b_ref)).requires_grad_()

            def backward(grad_y):
                return dvjp(lambda x, b: _sba_forward_ref(x, b, scale, slope, False, eps)[0], [x_ref, b_ref], [grad_y])
            (grad_grad_y,) = vjp(backward, [d(grad_y)], grads)
            return [(grad_grad_y, grad_y.dtype, True), empty, empty, empty]
        r = stat_view(rsqrt, grad_y, 1)
        with_bias = saved_is_input and bias_arg is not None
        b = d(bias_arg) if with_bias else torch.zeros(grad_y.shape[1], dtype=torch.float64)
        g_grad_y, g_saved, g_r, g_b = vjp(
            lambda gy, s, r, b: _sba_pixel_norm_backward(gy, s, r, b, scale, slope, eps, saved_is_input),
            [d(grad_y), d(saved), r, b], grads)
        return [(g_grad_y, grad_y.dtype, True), (g_saved, saved.dtype, True),
                (g_r.reshape(rsqrt.shape), rsqrt.dtype, True), (g_b, bias_arg.dtype, True) if with_bias else empty]
    return Call([grad_grad_x, grad_grad_bias, *backward_args[:-1]], ref)  # all but bias_grad


@composite_spec
def scaled_bias_act_rsqrt_backward(g):
    x, bias, scale, slope, _, eps = _sba_operands(g)
    saved_is_input = g.pick(saves_input(slope), not saves_input(slope))
    bias_grad = g.rng.random() < 0.5
    y, r = _sba_forward_ref(d(x), d(bias), scale, slope, True, eps)
    saved = y_saved = x if saved_is_input else g.layout(y.to(x.dtype))
    rsqrt = g.layout(r.to(stat(x.dtype)))
    bias_arg = bias if saved_is_input or g.rng.random() < 0.5 else None
    grad_rsqrt = g.tensor(r.shape, dtype=stat(x.dtype))

    def ref(args):
        grad_rsqrt, saved, rsqrt, bias_arg, scale, slope, saved_is_input, bias_grad = args
        if saved.dim() < 2:
            raise Invalid("saved rank")
        _check_bias_ref(bias_arg, saved)
        if grad_rsqrt.shape != rsqrt.shape:
            raise Invalid("grad_rsqrt shape")
        r = stat_view(rsqrt, saved, 1)
        gr = d(grad_rsqrt).reshape(r.shape)
        # the gradient through the forward's rsqrt output alone: r as a function of the activation a, pinned to its
        # value, with a recomputed from x = saved and bias_arg, or from the x and bias that gave y = saved; for
        # another y (a mutated one the op accepts), dr/da = -r^3 a / C written with y = a r
        if saved_is_input or saved is y_saved:
            x_ref, b_ref = (saved, bias_arg) if saved_is_input else (x, bias)
            b = torch.zeros(saved.shape[1], dtype=torch.float64) if b_ref is None else d(b_ref)
            grad_x, grad_b = vjp(lambda x, b: pinned_rsqrt(_sba_forward_ref(x, b, scale, slope, False, eps)[0], r, 1),
                                 [d(x_ref), b], [gr])
        else:
            grad_a = -gr * r * r * d(saved) / saved.shape[1]
            grad_v = _act_grad(d(saved), slope) * grad_a
            grad_x, grad_b = grad_v * scale, _sum_channels(grad_v)
        if not bias_grad:
            grad_b = torch.empty(0, dtype=torch.float64)
        return [(grad_x, saved.dtype, True), (grad_b, saved.dtype, True)]
    return Call([grad_rsqrt, saved, rsqrt, bias_arg, scale, slope, saved_is_input, bias_grad], ref)


def _mbstd_operands(g):
    n = g.pick(g.rng.choice((1, 2, 3, 4, 8)), 0)
    c = g.rng.choice((1, 2, 3, 4, 6))
    x = g.tensor([n, c, g.size(0), g.size(0)])
    group_size = g.pick(g.rng.choice([k for k in (1, 2, 4, 8) if n % k == 0 or k >= n] or [1]), 0, -1, 3, 100)
    grouping = g.pick(g.rng.choice(("strided", "contiguous")), "bogus", "")
    unbiased = g.rng.random() < 0.5
    eps = g.pick(1e-8, -1.0, math.nan, 0.0)
    features = g.pick(g.rng.choice([f for f in (1, 2, 3) if c % f == 0]), 0, -1, c + 1)
    return x, group_size, grouping, unbiased, eps, features


def _mbstd_ref(x, group_size, grouping, unbiased, eps, features):
    n = x.shape[0]
    if x.dim() != 4 or n == 0 or group_size < 1 or grouping not in ("strided", "contiguous") or features < 1:
        raise Invalid("minibatch stddev arguments")
    gs, _, zero = _layout.minibatch_groups(n, group_size, grouping)
    if unbiased and gs == 1 and not zero:
        raise Invalid("unbiased groups of one")
    return reference.minibatch_stddev(x, group_size, grouping, unbiased, eps, features)


@spec
def minibatch_stddev_forward(g):
    params = _mbstd_operands(g)

    def ref(args):
        x, *params = args
        return [(_mbstd_ref(d(x), *params), x.dtype, False)]
    return Call(list(params), ref)


@spec
def minibatch_stddev_backward(g):
    x, *params = _mbstd_operands(g)
    n, c, h, w = x.shape
    features = params[-1]
    grad_y = g.tensor([n, c + max(features, 0), h, w])

    def ref(args):
        grad_y, x, *params = args
        (dx,) = vjp(lambda x: _mbstd_ref(x, *params), [d(x)], [d(grad_y)])
        return [(dx, x.dtype, True)]
    return Call([grad_y, x, *params], ref)


def _check_alpha_ref(alpha):
    if alpha.dim() != 0:
        raise Invalid("alpha shape")
    a = float(d(alpha))
    if not 0.0 <= a <= 1.0:
        raise Invalid("alpha value")
    return a


def _upsample_ref(low, high, alpha, factor):
    if low.dim() != 4 or high.dim() != 4 or factor < 1 or factor & (factor - 1):
        raise Invalid("upsample_blend arguments")
    n, c, h, w = low.shape
    if tuple(high.shape) != (n, c, h * factor, w * factor):
        raise Invalid("high shape")
    a = _check_alpha_ref(alpha)
    up = nearest_up(low, factor)
    return torch.lerp(up, high, a)


@spec
def upsample_blend_forward(g):
    factor = g.pick(g.rng.choice((1, 2, 2, 4)), 0, 3, -2)
    n, c, h, w = g.size(0), g.size(0), g.size(0), g.size(0)
    low = g.tensor([n, c, h, w])
    high = g.tensor([n, c, h * abs(factor), w * abs(factor)])

    def ref(args):
        low, high, alpha, factor = args
        return [(_upsample_ref(d(low), d(high), alpha, factor), high.dtype, False)]
    return Call([low, high, g.alpha(), factor], ref)


@spec
def upsample_blend_backward(g):
    factor = g.pick(g.rng.choice((1, 2, 2, 4)), 0, 3, -2)
    f = max(abs(factor), 1)
    grad_y = g.tensor([g.size(0), g.size(0), g.size(0) * f, g.pick(g.size(0) * f, 3)])

    def ref(args):
        grad_y, alpha, factor = args
        if grad_y.dim() != 4 or factor < 1 or grad_y.shape[2] % factor or grad_y.shape[3] % factor:
            raise Invalid("grad_y shape or factor")
        n, c, h, w = grad_y.shape
        low = torch.zeros(n, c, h // factor, w // factor)
        grads = vjp(lambda lo, hi: _upsample_ref(lo, hi, alpha, factor), [low, torch.zeros(grad_y.shape)],
                    [d(grad_y)])
        return [(grads[0], grad_y.dtype, True), (grads[1], grad_y.dtype, True)]
    return Call([grad_y, g.alpha(), factor], ref)


@spec
def fade_reals_forward(g):
    x = g.tensor([g.size(0), g.size(0), 2 * g.size(0), g.pick(2 * g.size(0), 3)])

    def ref(args):
        x, alpha = args
        xd = d(x)
        if xd.dim() != 4 or xd.shape[2] % 2 or xd.shape[3] % 2:
            raise Invalid("x shape")
        a = _check_alpha_ref(alpha)
        return [(torch.lerp(nearest_up(avg_pool2(xd)), xd, a), x.dtype, False)]
    return Call([x, g.alpha()], ref)


def _from_rgb_operands(g):
    n, c, h, w, c_img = g.size(0), g.size(0), g.size(0), g.size(0), g.pick(g.rng.choice((1, 3, 3, 4, 5)), 0)
    images = g.tensor([n, c_img, 2 * h, 2 * w])
    weight = g.tensor([c, c_img, 1, 1])
    bias = g.tensor([c])
    scale = g.pick(g.rng.uniform(0.1, 1.5), math.inf, math.nan, -1.0)
    bias_gain = g.pick(g.rng.choice((1.0, 0.5)), math.nan, 0.0)
    slope = g.pick(g.rng.choice((0.2, 0.0, 1.0)), -0.5, math.inf, math.nan)
    return (n, c, h, w), images, weight, bias, scale, bias_gain, slope


def _from_rgb_ref(images, new, weight, bias, alpha, scale, bias_gain, slope):
    if new.dim() != 4 or images.dim() != 4 or weight.dim() != 4 or bias.dim() != 1:
        raise Invalid("fade_from_rgb ranks")
    n, c, h, w = new.shape
    c_img = images.shape[1]
    if (tuple(images.shape) != (n, c_img, 2 * h, 2 * w) or tuple(weight.shape) != (c, c_img, 1, 1)
            or tuple(bias.shape) != (c,)):
        raise Invalid("fade_from_rgb shapes")
    a = _check_alpha_ref(alpha)
    pooled = avg_pool2(images)
    z = torch.einsum("nkhw,ck->nchw", pooled, weight.reshape(c, c_img)) * scale + bias.reshape(1, -1, 1, 1) * bias_gain
    return torch.lerp(lrelu(z, slope), new, a)


@spec
def fade_from_rgb_forward(g):
    shape, images, weight, bias, *floats = _from_rgb_operands(g)
    new = g.tensor(shape)

    def ref(args):
        images, new, weight, bias, alpha, *floats = args
        return [(_from_rgb_ref(d(images), d(new), d(weight), d(bias), alpha, *floats), new.dtype, False)]
    return Call([images, new, weight, bias, g.alpha(), *floats], ref)


@spec
def fade_from_rgb_backward(g):
    shape, images, weight, bias, *floats = _from_rgb_operands(g)
    grad_y = g.tensor(shape)

    def ref(args):
        grad_y, images, weight, bias, alpha, *floats = args
        for t in (images, weight, bias):
            d(t)
        grads = vjp(lambda i, nw, wt, b: _from_rgb_ref(i, nw, wt, b, alpha, *floats),
                    [images, torch.zeros(grad_y.shape), weight, bias], [d(grad_y)])
        dtypes = (images.dtype, grad_y.dtype, weight.dtype, bias.dtype)
        return [(gr, dt, True) for gr, dt in zip(grads, dtypes)]
    return Call([grad_y, images, weight, bias, g.alpha(), *floats], ref)


@composite_spec
def fade_from_rgb_double_backward(g):
    shape, images, weight, bias, *floats = _from_rgb_operands(g)
    grad_y = g.tensor(shape)
    alpha = g.alpha()
    ggs = [None if g.rng.random() < 0.25 else g.tensor(s) for s in (images.shape, shape, weight.shape, bias.shape)]

    def ref(args):
        *ggs, grad_y, images, weight, bias, alpha, scale, bias_gain, slope = args
        for t in (images, weight, bias):
            d(t)

        def backward(gy, i, w, b):
            new = torch.zeros(gy.shape, dtype=torch.float64, requires_grad=True)
            return dvjp(lambda i, nw, w, b: _from_rgb_ref(i, nw, w, b, alpha, scale, bias_gain, slope),
                        [i, new, w, b], [gy])
        grads = vjp(backward, [d(grad_y), images, weight, bias], [None if t is None else d(t) for t in ggs])
        dtypes = (grad_y.dtype, images.dtype, weight.dtype, bias.dtype)
        return [(gr, dt, True) for gr, dt in zip(grads, dtypes)]
    return Call([*ggs, grad_y, images, weight, bias, alpha, *floats], ref)


@composite_spec
def pixel_norm_double_backward(g):
    grad_y, x, rsqrt, dim, eps = pixel_norm_backward(g).args
    gg = g.tensor(x.shape)

    def ref(args):
        gg, grad_y, x, rsqrt, dim, eps = args
        if x.dim() == 0 or not -x.dim() <= dim < x.dim():
            raise Invalid("dim")
        dim %= x.dim()
        r = stat_view(rsqrt, x, dim)

        def backward(grad_y, x):
            if x.shape[dim] == 1:  # one element per vector: the exact form (pinned_norm), every order of it
                return (eps * tracked_rsqrt(x, r, dim) ** 3 * grad_y,)
            return dvjp(lambda x: x * tracked_rsqrt(x, r, dim), [x], [grad_y])
        grad_grad_y, grad_x = vjp(backward, [d(grad_y), d(x)], [d(gg)])
        return [(grad_grad_y, x.dtype, True), (grad_x, x.dtype, True)]
    return Call([gg, grad_y, x, rsqrt, dim, eps], ref)


@composite_spec
def minibatch_stddev_double_backward(g):
    grad_y, x, *params = minibatch_stddev_backward(g).args
    gg = g.tensor(x.shape)

    def ref(args):
        gg, grad_y, x, *params = args

        def backward(grad_y, x):
            return dvjp(lambda x: _mbstd_ref(x, *params), [x], [grad_y])
        grad_grad_y, grad_x = vjp(backward, [d(grad_y), d(x)], [d(gg)])
        return [(grad_grad_y, x.dtype, True), (grad_x, x.dtype, True)]
    return Call([gg, grad_y, x, *params], ref)


# ---- hostile mutations of a call's tensors ----

def _tensor_slots(args):
    return [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]


def mutate(rng, args):
    """One hostile change to the call, or none: a tensor on meta (or all of them), another dtype, another shape."""
    args = list(args)
    slots = _tensor_slots(args)
    roll = rng.random()
    if not slots or roll < 0.5:
        return args, "none"
    if roll < 0.6:
        for i in slots:
            args[i] = args[i].to("meta")
        return args, "all meta"
    i = rng.choice(slots)
    t = args[i]
    if roll < 0.7:
        args[i] = t.to("meta")
        return args, f"arg {i} meta"
    if roll < 0.85:
        args[i] = t.to(rng.choice([dt for dt in OTHER_DTYPES if dt != t.dtype]))
        return args, f"arg {i} dtype"
    shape = list(t.shape)
    if shape and rng.random() < 0.7:
        k = rng.randrange(len(shape))
        shape[k] = rng.choice([s for s in (0, 1, 2, 3, shape[k] + 1) if s != shape[k]])
    elif rng.random() < 0.5 and shape:
        shape = shape[:-1]
    else:
        shape = shape + [1]
    if math.prod(shape) == t.numel():  # the same values in another shape (a derived operand stays consistent)
        args[i] = t.reshape(shape)
    else:
        args[i] = torch.randn(shape, dtype=torch.float64).to(t.dtype) if t.is_floating_point() else torch.zeros(
            shape, dtype=t.dtype)
    return args, f"arg {i} shape"


# ---- the check of one call ----

def _arg_names(op):
    return [a.name for a in op.default._schema.arguments]


def _outputs(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def _describe(args):
    return [(tuple(a.shape), tuple(a.stride()), str(a.dtype)[6:], a.device.type) if isinstance(a, torch.Tensor)
            else a for a in args]


def _is_meta(a):
    return isinstance(a, torch.Tensor) and a.device.type == "meta"


def _check_error(e, names):
    message = str(e)
    assert any(re.search(rf"\b{re.escape(name)}\b", message) for name in names), \
        f"{type(e).__name__} names no argument of {names}: {message!r}"
    assert len(message) < 600 and "Traceback" not in message, f"not a one-line error: {message!r}"


def _same_layout(a, b):
    """Equal strides wherever they matter (not along dimensions of size 1, nor in an empty tensor)."""
    if a.numel() == 0:
        return True
    return all(sa == sb for sa, sb, n in zip(a.stride(), b.stride(), a.shape) if n > 1)


def check_call(op, args, cpu_args, call):
    """'error', 'meta' or 'ok' for a call that behaved; an AssertionError otherwise."""
    names = _arg_names(op)
    try:
        out = op(*args)
    except ERRORS as e:
        _check_error(e, names)
        return "error"
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if any(_is_meta(a) for a in args):
        # All-meta (a 0-dim CPU alpha goes with any device, as torch's CPU scalars do): the same metadata as the
        # real call; anything mixing meta and real tensors must have been refused.
        assert all(t.device.type == "meta" or (t.dim() == 0 and t.device.type == "cpu") for t in tensors), \
            "meta mixed with CPU tensors was accepted"
        try:
            real = _outputs(op(*cpu_args))
        except ERRORS:
            # the fake cannot see values (a CPU alpha's is checked by the real kernels only)
            real = None
        if real is not None:
            for o, r in zip(_outputs(out), real):
                assert o.device.type == "meta"
                assert (o.shape, o.dtype) == (r.shape, r.dtype) and _same_layout(o, r), \
                    f"meta output {(o.shape, o.dtype, o.stride())} but the real one is {(r.shape, r.dtype, r.stride())}"
        else:
            value_checks = [a for a in cpu_args if isinstance(a, torch.Tensor) and a.dim() == 0]
            assert value_checks, "a meta call succeeded where the real one raises"
        return "meta"
    try:
        expected = call.reference(args)
    except Exception as e:  # noqa: BLE001 - the reference has no result: the kernel had to refuse
        raise AssertionError(f"accepted arguments the reference refuses ({type(e).__name__}: {e})") from None
    outs = _outputs(out)
    assert len(outs) == len(expected)
    for k, (o, (value, dtype, grad)) in enumerate(zip(outs, expected)):
        assert o.device.type == "cpu", f"output {k} on {o.device}"
        assert o.shape == value.shape and o.dtype == dtype, \
            f"output {k}: {tuple(o.shape)} {o.dtype}, expected {tuple(value.shape)} {dtype}"
        rtol, atol = (GRAD_TOLERANCES if grad else TOLERANCES)[dtype]
        torch.testing.assert_close(o.double(), value.to(dtype).double(), rtol=rtol, atol=atol, equal_nan=True,
                                   msg=lambda m, k=k: f"output {k}: {m}")
    return "ok"


# ---- the tests ----

def test_every_raw_op_is_fuzzed():
    assert sorted(_library.raw_ops()) == sorted(SPECS), \
        "every raw op (kernels and composites) needs a description in tests/test_fuzz_raw_ops.py (SPECS)"


def _calls(name, family):
    return (CALLS if name in _library.kernel_ops() else COMPOSITE_CALLS)[family]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(_library.raw_ops()))
def test_fuzz_raw_op(name, family):
    op = getattr(_library.family_ops(family), name)
    rng = random.Random(f"{name}-{family}")
    outcomes = {}
    calls = _calls(name, family)
    start = time.perf_counter()
    failures = []
    for i in range(calls):
        torch.manual_seed(i)
        g = Gen(rng, rng.choice(FLOATS), hostile=family != "triton" or i > 0)
        call = SPECS[name](g)
        args, how = mutate(rng, call.args) if g.hostile else (call.args, "none")
        try:
            outcome = check_call(op, args, call.args, call)
        except AssertionError as e:
            failures.append(f"call {i} ({how}): {name}{_describe(args)}: {str(e)[:300]}")
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert not failures, "\n".join(failures)
    # the generator must reach valid calls and refused ones alike, or the test checks little
    if family != "triton":
        assert outcomes.get("ok", 0) >= calls // 5 and outcomes.get("error", 0) >= calls // 10, outcomes
        assert outcomes.get("meta", 0) >= 3, outcomes
    else:
        assert outcomes.get("ok", 0) >= 1, outcomes
    print(f"{name} {family}: {outcomes} in {time.perf_counter() - start:.1f}s")
