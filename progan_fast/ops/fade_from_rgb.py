"""fade_from_rgb: D's fade-in at its input as one op — public function, raw ops, fakes and autograd.

  y = lerp(lrelu(scale * W . avg_pool2(images) + bias_gain * b), new, alpha)
with W the old fromRGB's 1x1 weight [C, C_img, 1, 1] (stored unscaled; scale = gain * lr_mul / sqrt(C_img)),
b its bias [C] (bias_gain = lr_mul), `new` the new path's features N x C x H x W and images N x C_img x 2H x 2W.
The pooled image and the old path's feature map are never materialised: each pixel's pool is recomputed from the
images (C_img values) wherever it is needed.

Raw ops (defined in every kernel family's namespace, see _library.py):
  fade_from_rgb_forward(images, new, weight, bias, alpha, scale, bias_gain, negative_slope) -> y
  fade_from_rgb_backward(grad_y, images, weight, bias, alpha, ...) -> (grad_images, grad_new, grad_weight,
      grad_bias) in one pass over grad_y; with dz = (1 - alpha) * grad_y * lrelu'(z):
        grad_new = alpha * grad_y, grad_bias = bias_gain * sum dz, grad_weight = scale * sum dz (x) pool,
        grad_images = nearest_up(scale * W^T dz) / 4.
  fade_from_rgb_double_backward(...)  the backward's gradients, in torch ops (every order; WGAN-GP's penalty)
Saved for backward: images, weight, bias and alpha (never `new` nor anything of feature-map size). The outputs
(y, grad_new, grad_images) are channels_last when `new` (forward) or grad_y (backward) is; images in the other
layout are copied to it (they are C_img / (4 C) of the feature map's size).
Kernels: csrc/cpu/fade_from_rgb.cpp, csrc/ops/fade_from_rgb.h (CUDA device code, also run by the emulated
family), progan_fast/triton/fade.py; the cpu/cuda family's autograd is in C++ (csrc/autograd/fade.cpp).
"""
import math

import torch

from .. import _layout, backends, reference
from .. import _library
from . import _checks
from .blend import alpha_operand, check_4d, check_alpha, check_alpha_value, check_same, differentiable, \
    empty_in_format, no_alpha_gradient

OP = "fade_from_rgb"
backends.register_op(OP, ("cpu", "cuda", "triton"))


def fade_from_rgb(images, new, weight, bias, alpha, *, gain=math.sqrt(2), lr_mul=1.0, negative_slope=0.2):
    """lerp(lrelu(eq_conv1x1(avg_pool2(images), weight, bias)), new, alpha): D's fade between the old path
    (fromRGB of the previous resolution on the pooled images) and the new path's features `new`.

    images: N x C_img x 2H x 2W; new: N x C x H x W; weight: [C, C_img, 1, 1] (unscaled, equalized lr with `gain`
    and `lr_mul`); bias: [C]. See progan_fast.reference.fade_from_rgb for the spec.
    """
    _checks.tensor("images", images, ndims=(4,))
    _checks.tensor("new", new, ndims=(4,))
    _checks.tensor("weight", weight, ndims=(4,), nonempty_batch=False)
    _checks.tensor("bias", bias, ndims=(1,), nonempty_batch=False)
    images, new, weight, bias = _checks.autocast(new.device.type, images, new, weight, bias)
    for name, t in (("images", images), ("weight", weight), ("bias", bias)):
        _checks.same_device_dtype(name, t, "new", new)
    n, c, h, w = new.shape
    c_img = images.shape[1]
    if tuple(images.shape) != (n, c_img, 2 * h, 2 * w):
        raise ValueError(f"images must be N x C_img x 2H x 2W for new of shape {tuple(new.shape)}, i.e. "
                         f"{(n, c_img, 2 * h, 2 * w)}; got {tuple(images.shape)}")
    if tuple(weight.shape) != (c, c_img, 1, 1):
        raise ValueError(f"weight must be a 1x1 conv from the images' {c_img} channels to new's {c}, shape "
                         f"{(c, c_img, 1, 1)}; got {tuple(weight.shape)}")
    if tuple(bias.shape) != (c,):
        raise ValueError(f"bias must have {c} elements (new's channels); got shape {tuple(bias.shape)}")
    gain = _checks.finite_float("gain", gain)
    lr_mul = _checks.finite_float("lr_mul", lr_mul)
    if lr_mul <= 0:
        raise ValueError(f"lr_mul must be > 0; got {lr_mul}")
    negative_slope = _checks.finite_float("negative_slope", negative_slope)
    alpha = _checks.alpha("alpha", alpha, images.device)
    backend = backends.resolve(OP, new.device)
    if backend == "reference" or differentiable(alpha):
        return reference.fade_from_rgb(images, new, weight, bias, alpha, gain, lr_mul, negative_slope)
    return _library.family_ops(backend).fade_from_rgb_forward(
        images, new, weight, bias, alpha_operand(alpha, new), reference.equalized_scale(c_img, gain, lr_mul), lr_mul,
        negative_slope)


# ---- checks (the C++ kernels make the same: csrc/common/fade_operands.h) and fakes ----

def _check_operands(main_name, main, images, weight, bias, alpha):
    check_4d(main_name, main)
    check_4d("images", images)
    check_4d("weight", weight)
    if bias.dim() != 1:
        raise RuntimeError(f"bias must be 1-D; got shape {tuple(bias.shape)}")
    for name, t in (("images", images), ("weight", weight), ("bias", bias)):
        check_same(name, t, main_name, main)
    check_alpha(alpha, main)
    n, c, h, w = main.shape
    c_img = images.shape[1]
    if tuple(images.shape) != (n, c_img, 2 * h, 2 * w):
        raise RuntimeError(f"images must have shape {(n, c_img, 2 * h, 2 * w)} for {main_name} of shape "
                           f"{tuple(main.shape)}; got {tuple(images.shape)}")
    if tuple(weight.shape) != (c, c_img, 1, 1):
        raise RuntimeError(f"weight must have shape {(c, c_img, 1, 1)}; got {tuple(weight.shape)}")
    if tuple(bias.shape) != (c,):
        raise RuntimeError(f"bias must have shape {(c,)}; got {tuple(bias.shape)}")


def _check_forward(images, new, weight, bias, alpha, scale, bias_gain, negative_slope):
    _check_operands("new", new, images, weight, bias, alpha)


def _fake_forward(images, new, weight, bias, alpha, scale, bias_gain, negative_slope):
    return empty_in_format(new.shape, new)


def _check_backward(grad_y, images, weight, bias, alpha, scale, bias_gain, negative_slope):
    _check_operands("grad_y", grad_y, images, weight, bias, alpha)


def _check_double_backward(gg_images, gg_new, gg_weight, gg_bias, grad_y, images, weight, bias, alpha, scale,
                           bias_gain, negative_slope):
    """The backward's operands as the backward kernels check them, alpha's value included (the formula has no
    kernel to refuse one outside [0, 1]), and each gradient placed, typed and shaped like the backward output it
    is the gradient of (the formula would broadcast a misshaped one into a wrong result): gg_images like
    grad_images (images' shape), gg_new like grad_new (grad_y's), gg_weight like weight, gg_bias like bias."""
    _check_backward(grad_y, images, weight, bias, alpha, scale, bias_gain, negative_slope)
    check_alpha_value(alpha, grad_y)
    for name, gg, primal_name, primal in (("gg_images", gg_images, "images", images),
                                          ("gg_new", gg_new, "grad_y", grad_y),
                                          ("gg_weight", gg_weight, "weight", weight),
                                          ("gg_bias", gg_bias, "bias", bias)):
        if gg is None:
            continue
        check_same(name, gg, "grad_y", grad_y)
        if gg.shape != primal.shape:
            owner = primal_name + ("'" if primal_name.endswith("s") else "'s")
            raise RuntimeError(f"{name} must have {owner} shape {tuple(primal.shape)}; got {tuple(gg.shape)}")


def _fake_backward(grad_y, images, weight, bias, alpha, scale, bias_gain, negative_slope):
    grad_images = torch.empty(images.shape, dtype=images.dtype, device=images.device,
                              memory_format=_layout.memory_format(grad_y))
    return (grad_images, empty_in_format(grad_y.shape, grad_y), torch.empty_like(weight, memory_format=torch.contiguous_format),
            torch.empty_like(bias))


# ---- autograd (Python; the cpu/cuda family has the same in C++) ----

def _save_forward(ctx, inputs, output):
    images, _, weight, bias, alpha, *params = inputs
    ctx.save_for_backward(images, weight, bias, alpha)
    ctx.params = params


def _backward(ops, ctx, grad_y):
    no_alpha_gradient(ctx, 4)
    images, weight, bias, alpha = ctx.saved_tensors
    grads = ops.fade_from_rgb_backward(grad_y, images, weight, bias, alpha, *ctx.params)
    return (*grads, None, None, None, None)


def _save_backward(ctx, inputs, output):
    grad_y, images, weight, bias, alpha, *params = inputs
    ctx.save_for_backward(grad_y, images, weight, bias, alpha)
    ctx.params = params


def _double_backward(ops, ctx, gg_images, gg_new, gg_weight, gg_bias):
    no_alpha_gradient(ctx, 4)
    grad_y, images, weight, bias, alpha = ctx.saved_tensors
    grads = ops.fade_from_rgb_double_backward(gg_images, gg_new, gg_weight, gg_bias, grad_y, images, weight, bias,
                                              alpha, *ctx.params)
    return (*grads, None, None, None, None)


def _pool(x):
    """avg_pool2 (reference.avg_pool2), also of an empty tensor (avg_pool2d refuses a dimension of size 0)."""
    if x.numel() == 0:
        n, c, h, w = x.shape
        return x.new_zeros(n, c, h // 2, w // 2)
    return reference.avg_pool2(x)


def _up(x):
    """reference.nearest_up, also of an empty tensor."""
    if x.numel() == 0:
        n, c, h, w = x.shape
        return x.new_zeros(n, c, 2 * h, 2 * w)
    return reference.nearest_up(x)


def _conv(x, w, b=None):
    """The 1x1 conv of x by w [C_out, C_in, 1, 1] (plus b): oneDNN's kernel in x's own memory format; over zero
    input channels (or of an empty x) a sum of nothing, b alone."""
    if x.numel() == 0 or w.numel() == 0:
        out = x.new_zeros(x.shape[0], w.shape[0], x.shape[2], x.shape[3])
        return out if b is None else out + b.view(1, -1, 1, 1)
    return torch.nn.functional.conv2d(x, w, b)


def _double_backward_formula(gg_images, gg_new, gg_weight, gg_bias, grad_y, images, weight, bias, alpha, scale,
                             bias_gain, negative_slope):
    """Gradients of <gg_images, grad_images> + <gg_new, grad_new> + <gg_weight, grad_weight> + <gg_bias, grad_bias>
    with respect to grad_y, images, weight and bias, for the backward's outputs above.

    With pool = avg_pool2(images), z = scale * W . pool + bias_gain * b, m = lrelu'(z) (1 or negative_slope,
    piecewise constant, so it contributes no derivative), dz = (1 - alpha) * grad_y * m and
    h = bias_gain * gg_bias + scale * gg_weight . pool + scale * W . avg_pool2(gg_images):
      d/d grad_y  = alpha * gg_new + (1 - alpha) * m * h
      d/d images  = nearest_up(scale * gg_weight^T dz) / 4
      d/d weight  = scale * sum over pixels of dz (x) avg_pool2(gg_images)
      d/d bias    = 0
    A None gradient contributes nothing (not a zero times the other operands, which would turn their Inf into
    NaN). Written in differentiable torch ops of every input, so the derivatives of this are right too. The
    feature-map outputs are laid out as the backward's (grad_y's memory format)."""
    acc = _layout.stat_dtype(grad_y.dtype)
    fmt = _layout.memory_format(grad_y)
    a = alpha.to(device=grad_y.device, dtype=acc)
    w = weight.to(acc)
    pooled = _pool(images.to(acc))
    z = _conv(pooled, w * scale, bias.to(acc) * bias_gain)
    coef = torch.where(z > 0, 1 - a, (1 - a) * negative_slope)  # dz / grad_y = (1 - alpha) * lrelu'(z)
    h = None
    if gg_weight is not None:
        h = _conv(pooled, gg_weight.to(acc) * scale)
    if gg_bias is not None:
        term = (gg_bias.to(acc) * bias_gain).view(1, -1, 1, 1)
        h = term if h is None else h + term
    gg_pooled = None
    if gg_images is not None:
        gg_pooled = _pool(gg_images.to(acc))
        term = _conv(gg_pooled, w * scale)
        h = term if h is None else h + term
    grad_grad_y = torch.zeros_like(z) if h is None else coef * h
    if gg_new is not None:
        grad_grad_y = grad_grad_y + a * gg_new.to(acc)
    if gg_weight is not None or gg_pooled is not None:
        dz = coef * grad_y.to(acc)
    if gg_weight is not None:
        gg_w_t = gg_weight.to(acc).flatten(1).t().reshape(images.shape[1], weight.shape[0], 1, 1)
        grad_images = _up(_conv(dz, gg_w_t * scale)) * 0.25
    else:
        grad_images = images.new_zeros(images.shape, dtype=acc)
    if gg_pooled is not None:
        grad_weight = (scale * torch.einsum("nchw,nkhw->ck", dz, gg_pooled)).reshape(weight.shape)
    else:
        grad_weight = weight.new_zeros(weight.shape, dtype=acc)
    return (grad_grad_y.expand(grad_y.shape).to(grad_y.dtype).contiguous(memory_format=fmt),
            grad_images.to(images.dtype).contiguous(memory_format=fmt), grad_weight.to(weight.dtype).contiguous(),
            bias.new_zeros(bias.shape))


_FLOATS = "float scale, float bias_gain, float negative_slope"
_library.define(
    _library.RawOp("fade_from_rgb_forward",
                   f"(Tensor images, Tensor new, Tensor weight, Tensor bias, Tensor alpha, {_FLOATS}) -> Tensor",
                   check=_check_forward, fake=_fake_forward, backward=_backward, setup_context=_save_forward,
                   cpp_autograd=("progan_fast",)),
    _library.RawOp("fade_from_rgb_backward",
                   f"(Tensor grad_y, Tensor images, Tensor weight, Tensor bias, Tensor alpha, {_FLOATS}) -> "
                   "(Tensor, Tensor, Tensor, Tensor)",
                   check=_check_backward, fake=_fake_backward, backward=_double_backward,
                   setup_context=_save_backward, cpp_autograd=("progan_fast",)),
    _library.RawOp("fade_from_rgb_double_backward",
                   "(Tensor? gg_images, Tensor? gg_new, Tensor? gg_weight, Tensor? gg_bias, Tensor grad_y, "
                   f"Tensor images, Tensor weight, Tensor bias, Tensor alpha, {_FLOATS}) -> "
                   "(Tensor, Tensor, Tensor, Tensor)",
                   check=_check_double_backward, composite=_double_backward_formula),
)
