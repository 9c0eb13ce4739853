"""Fade-in blends of G's output and of the reals: upsample_blend and fade_reals — public functions, raw ops, fakes
and autograd. (D's input fade, whose old path is a layer, is progan_fast/ops/fade_from_rgb.py.)

alpha is the weight of the NEW (higher-resolution) path. Both ops are linear in their tensors, so their
derivatives are blends again:
  upsample_blend_forward(low, high, alpha, factor) -> y        y = lerp(nearest_up(low, factor), high, alpha)
  upsample_blend_backward(grad_y, alpha, factor) -> (grad_low, grad_high)
      grad_high = alpha * grad_y, grad_low = (1 - alpha) * factor x factor sum-pool of grad_y, in one pass;
      its own derivative is upsample_blend_forward (the adjoint of the adjoint), so every order works.
  fade_reals_forward(x, alpha) -> y                            y = lerp(nearest_up(avg_pool2(x)), x, alpha)
      a symmetric operator (avg-pool then nearest-up is an orthogonal projection): its backward is itself.
Nothing is saved for backward but alpha. The raw ops take alpha as a 0-dim tensor (on the CPU or on the inputs'
device), so a scheduled alpha never recompiles a compiled graph; a python float becomes a float64 CPU scalar.
A differentiable alpha (requires_grad) runs the reference: the kernels treat alpha as a constant.
Kernels: csrc/cpu/{upsample_blend,fade_reals}.cpp, csrc/ops/{upsample_blend,fade_reals}.h (CUDA device code, also
run by the emulated family), progan_fast/triton/fade.py; the cpu/cuda family's autograd is in C++
(csrc/autograd/fade.cpp) to keep the per-call overhead of these small RGB tensors low.
"""
import numbers

import torch
from torch._subclasses.fake_tensor import is_fake

from .. import _layout, backends, reference
from .. import _library
from . import _checks

backends.register_op("upsample_blend", ("cpu", "cuda", "triton"))
backends.register_op("fade_reals", ("cpu", "cuda", "triton"))
# used by progan_fast.patch for trainers that pool before their discriminator's blend; no kernel of its own yet
backends.register_op("downsample_blend", ())


def _checked_maps(first_name, first, second_name, second):
    """The checks both blends make of their two N x C x H x W maps, named in argument order; returns them (in that
    order) autocast for the device of the second, the map at the output's resolution."""
    for name, t in ((first_name, first), (second_name, second)):
        _checks.tensor(name, t, ndims=(4,))
    for name, t in ((first_name, first), (second_name, second)):
        _checks.nonempty_maps(name, t)
    first, second = _checks.autocast(second.device.type, first, second)
    _checks.same_device_dtype(first_name, first, second_name, second)
    return first, second


def upsample_blend(low, high, alpha, factor=2):
    """lerp(nearest_up(low, factor), high, alpha): low N x C x H x W (old path), high N x C x factor*H x factor*W
    (new path), factor a power of two; see progan_fast.reference.upsample_blend for the spec."""
    low, high = _checked_maps("low", low, "high", high)
    factor = power_of_two("factor", factor)
    n, c, h, w = low.shape
    if tuple(high.shape) != (n, c, factor * h, factor * w):
        raise ValueError(f"high must be low at {factor} times the resolution, shape {(n, c, factor * h, factor * w)}; "
                         f"got high {tuple(high.shape)} and low {tuple(low.shape)}")
    alpha = _checks.alpha("alpha", alpha, high.device)
    backend = backends.resolve("upsample_blend", high.device)
    if backend == "reference" or differentiable(alpha):
        return reference.upsample_blend(low, high, alpha, factor)
    return _library.family_ops(backend).upsample_blend_forward(low, high, alpha_operand(alpha, high), factor)


def downsample_blend(high, low, alpha):
    """lerp(low, avg_pool2(high), alpha): high N x C x 2H x 2W (new path before its pool), low N x C x H x W (old
    path); see progan_fast.reference.downsample_blend for the spec."""
    high, low = _checked_maps("high", high, "low", low)
    n, c, h, w = low.shape
    if tuple(high.shape[:2]) != (n, c) or high.shape[2] // 2 != h or high.shape[3] // 2 != w:
        raise ValueError(f"high must be low at twice the resolution, shape {(n, c, 2 * h, 2 * w)}; got high "
                         f"{tuple(high.shape)} and low {tuple(low.shape)}")
    alpha = _checks.alpha("alpha", alpha, low.device)
    backends.resolve("downsample_blend", low.device)
    return reference.downsample_blend(high, low, alpha)


def fade_reals(x, alpha):
    """lerp(nearest_up(avg_pool2(x)), x, alpha) for N x C x H x W reals with even H and W; see
    progan_fast.reference.fade_reals for the spec."""
    _checks.tensor("x", x, ndims=(4,))
    _checks.nonempty_maps("x", x)
    (x,) = _checks.autocast(x.device.type, x)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"x must have even height and width (it is 2x2 box-filtered); got shape {tuple(x.shape)}")
    alpha = _checks.alpha("alpha", alpha, x.device)
    backend = backends.resolve("fade_reals", x.device)
    if backend == "reference" or differentiable(alpha):
        return reference.fade_reals(x, alpha)
    return _library.family_ops(backend).fade_reals_forward(x, alpha_operand(alpha, x))


# ---- alpha, shared with fade_from_rgb ----

def power_of_two(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    if value < 1 or value & (value - 1):
        raise ValueError(f"{name} must be a power of two (1, 2, 4, ...); got {value}")
    return int(value)


def differentiable(alpha):
    return isinstance(alpha, torch.Tensor) and alpha.requires_grad


def alpha_operand(alpha, like):
    """alpha as the raw ops take it: a 0-dim tensor on the CPU or on like's device (a python float becomes an
    exact float64 CPU scalar)."""
    if not isinstance(alpha, torch.Tensor):
        return torch.tensor(alpha, dtype=torch.float64)
    if alpha.device.type != "cpu" and alpha.device != like.device:
        raise ValueError(f"alpha must be on the CPU or on {like.device} like the tensors it blends; got {alpha.device}")
    return alpha


def check_alpha(alpha, like):
    """What every kernel checks of its alpha operand (the value itself is checked by the kernels and
    _checks.alpha: a meta or traced tensor has none)."""
    if alpha.dim() != 0 or not alpha.is_floating_point():
        raise RuntimeError(f"alpha must be a 0-dim floating tensor; got shape {tuple(alpha.shape)} and {alpha.dtype}")
    if alpha.device.type != "cpu" and alpha.device != like.device:
        raise RuntimeError(f"alpha must be on the CPU or on {like.device}; got {alpha.device}")


def check_alpha_value(alpha, like):
    """alpha's value, for the composites (which have no kernel to read it): finite and in [0, 1] as the kernels
    require (csrc/common/fade_operands.h: fade_alpha_value), by _checks.alpha (a device alpha by an asynchronous
    assert, no host sync). A traced (fake) alpha has no value to read."""
    if not is_fake(alpha):
        _checks.alpha("alpha", alpha, like.device)


def check_same(name, t, ref_name, ref):
    if t.device != ref.device:
        raise RuntimeError(f"{name} must be on {ref.device} like {ref_name}; got {t.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{name} must have {ref_name}'s dtype {ref.dtype}; got {t.dtype}")


def check_4d(name, t):
    if t.dim() != 4:
        raise RuntimeError(f"{name} must be 4-D (N x C x H x W); got shape {tuple(t.shape)}")


def empty_in_format(shape, like):
    """A new tensor laid out as the kernels lay out their outputs: channels_last when `like` is, else contiguous."""
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_layout.memory_format(like))


def no_alpha_gradient(ctx, alpha_index):
    if ctx.needs_input_grad[alpha_index]:
        raise RuntimeError("alpha must not require grad in the fused blend kernels (they treat it as a constant); "
                           "the public ops run the reference for a differentiable alpha")


# ---- upsample_blend raw ops ----

def _check_upsample_forward(low, high, alpha, factor):
    check_4d("low", low)
    check_4d("high", high)
    check_same("low", low, "high", high)
    check_alpha(alpha, high)
    if factor < 1 or factor & (factor - 1):
        raise RuntimeError(f"factor must be a power of two; got {factor}")
    n, c, h, w = low.shape
    if tuple(high.shape) != (n, c, factor * h, factor * w):
        raise RuntimeError(f"high must have shape {(n, c, factor * h, factor * w)} (low at {factor}x); got "
                           f"{tuple(high.shape)}")


def _fake_upsample_forward(low, high, alpha, factor):
    return empty_in_format(high.shape, high)


def _check_upsample_backward(grad_y, alpha, factor):
    check_4d("grad_y", grad_y)
    check_alpha(alpha, grad_y)
    if factor < 1 or factor & (factor - 1):
        raise RuntimeError(f"factor must be a power of two; got {factor}")
    if grad_y.shape[2] % factor or grad_y.shape[3] % factor:
        raise RuntimeError(f"grad_y's height and width must be multiples of factor {factor}; got shape "
                           f"{tuple(grad_y.shape)}")


def _fake_upsample_backward(grad_y, alpha, factor):
    n, c, h, w = grad_y.shape
    return empty_in_format((n, c, h // factor, w // factor), grad_y), empty_in_format(grad_y.shape, grad_y)


def _save_upsample(ctx, inputs, output):
    ctx.save_for_backward(inputs[2])
    ctx.factor = inputs[3]


def _upsample_backward(ops, ctx, grad_y):
    no_alpha_gradient(ctx, 2)
    (alpha,) = ctx.saved_tensors
    grad_low, grad_high = ops.upsample_blend_backward(grad_y, alpha, ctx.factor)
    return grad_low, grad_high, None, None


def _save_upsample_backward(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])
    ctx.factor = inputs[2]
    ctx.shapes = output[0].shape, output[1].shape


def _upsample_double_backward(ops, ctx, grad_grad_low, grad_grad_high):
    """The backward is linear in grad_y with the forward as its adjoint."""
    no_alpha_gradient(ctx, 1)
    (alpha,) = ctx.saved_tensors
    low_shape, high_shape = ctx.shapes
    if grad_grad_low is None:
        grad_grad_low = grad_grad_high.new_zeros(low_shape)
    if grad_grad_high is None:
        grad_grad_high = grad_grad_low.new_zeros(high_shape)
    return ops.upsample_blend_forward(grad_grad_low, grad_grad_high, alpha, ctx.factor), None, None


# ---- fade_reals raw op ----

def _check_fade_reals(x, alpha):
    check_4d("x", x)
    check_alpha(alpha, x)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise RuntimeError(f"x must have even height and width; got shape {tuple(x.shape)}")


def _fake_fade_reals(x, alpha):
    return empty_in_format(x.shape, x)


def _save_fade_reals(ctx, inputs, output):
    ctx.save_for_backward(inputs[1])


def _fade_reals_backward(ops, ctx, grad_y):
    """Symmetric: the backward is the op itself, differentiable again through this same autograd."""
    no_alpha_gradient(ctx, 1)
    (alpha,) = ctx.saved_tensors
    return ops.fade_reals_forward(grad_y, alpha), None


_CPP_AUTOGRAD = ("progan_fast",)  # csrc/autograd/fade.cpp

_library.define(
    _library.RawOp("upsample_blend_forward", "(Tensor low, Tensor high, Tensor alpha, int factor) -> Tensor",
                   check=_check_upsample_forward, fake=_fake_upsample_forward, backward=_upsample_backward,
                   setup_context=_save_upsample, cpp_autograd=_CPP_AUTOGRAD),
    _library.RawOp("upsample_blend_backward", "(Tensor grad_y, Tensor alpha, int factor) -> (Tensor, Tensor)",
                   check=_check_upsample_backward, fake=_fake_upsample_backward, backward=_upsample_double_backward,
                   setup_context=_save_upsample_backward, cpp_autograd=_CPP_AUTOGRAD),
    _library.RawOp("fade_reals_forward", "(Tensor x, Tensor alpha) -> Tensor",
                   check=_check_fade_reals, fake=_fake_fade_reals, backward=_fade_reals_backward,
                   setup_context=_save_fade_reals, cpp_autograd=_CPP_AUTOGRAD),
)
