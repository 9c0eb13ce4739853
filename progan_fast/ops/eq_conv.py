"""eq_conv2d / eq_linear: equalized-learning-rate layers as composites.

The conv or matmul runs with the UNSCALED stored weight (torch's own convolution kernels; the fused up/down
variants are one stride-2 conv with the summed 4x4 kernel, see progan_fast.reference.conv2d_resample, built by
_resample_kernel with the reference's values and a cheaper autograd, and rebuilt in backward instead of saved,
_resample_conv), then the runtime scale gain * lr_mul / sqrt(fan_in), the bias and the activation (and pixel
norm) are applied to the output by the scaled_bias_act op: one pass each way on the kernel backends, saving only
its output (and one float per pixel with pixel norm) for backward. No scaled weight copy is ever made.
"""
import math

import torch
import torch.nn.functional as F

from .. import backends, reference
from . import _checks, _resample_conv, winograd
from . import scaled_bias_act as _sba

backends.register_op("eq_conv2d", ())
backends.register_op("eq_linear", ())


def _scaled_bias(bias, lr_mul):
    """bias * lr_mul; lr_mul is 1 in ProGAN, where the product would only add an op (and an autograd node)."""
    if bias is None or lr_mul == 1.0:
        return bias
    return bias * lr_mul


def _layer_args(gain, lr_mul, activation, negative_slope, pixel_norm):
    gain = _checks.finite_float("gain", gain)
    lr_mul = _checks.finite_float("lr_mul", lr_mul)
    if lr_mul <= 0:
        raise ValueError(f"lr_mul must be > 0; got {lr_mul}")
    activation = _checks.choice("activation", activation, reference.ACTIVATIONS)
    negative_slope = _checks.finite_float("negative_slope", negative_slope)
    pixel_norm = _checks.flag("pixel_norm", pixel_norm)
    return gain, lr_mul, activation, negative_slope, pixel_norm


def _check_fan_in(fan_in, weight):
    if fan_in == 0:
        raise ValueError(f"weight has no inputs (shape {tuple(weight.shape)}): the equalized-lr scale "
                         f"1/sqrt(fan_in) needs at least one input channel in x and weight")


def _conv2d_resample(x, weight, up, down):
    """reference.conv2d_resample(x, weight, up, down), the same convs on the same values, with the summed kernel
    from _resample_kernel instead of the reference's pad + slices (and, for up, its flip and transpose), rebuilt
    in backward rather than saved (_resample_conv)."""
    if up or down:
        return _resample_conv.conv2d_resample(x, weight, transposed=up)
    if winograd.applies(x, weight):
        return winograd.conv3x3_winograd(x, weight)
    return F.conv2d(x, weight, padding=(weight.shape[-1] - 1) // 2)


def eq_conv2d(x, weight, bias=None, *, gain=math.sqrt(2), lr_mul=1.0, activation="lrelu", negative_slope=0.2,
              pixel_norm=False, up=False, down=False):
    """Equalized-lr 'same' conv + bias + activation (+ pixel norm), optionally fused with a 2x up/down sample.

    x: N x Cin x H x W; weight: [Cout, Cin, k, k] unscaled, k odd; bias: None or [Cout].
    up: nearest-up x2 then the conv (output 2H x 2W); down: the conv then 2x2 avg-pool (output H//2 x W//2).
    See progan_fast.reference.eq_conv2d for the spec.
    """
    _checks.tensor("x", x, ndims=(4,))
    _checks.nonempty_maps("x", x)
    _checks.tensor("weight", weight, ndims=(4,), nonempty_batch=False)
    x, weight, bias = _checks.autocast(x.device.type, x, weight, bias)
    _checks.same_device_dtype("weight", weight, "x", x)
    cout, cin, kh, kw = weight.shape
    if kh != kw or kh % 2 == 0:
        raise ValueError(f"weight must have a square odd kernel (k x k, k odd, for 'same' padding); "
                         f"got shape {tuple(weight.shape)}")
    if cin != x.shape[1]:
        raise ValueError(f"weight has {cin} input channels (shape {tuple(weight.shape)}) but x has {x.shape[1]} "
                         f"(shape {tuple(x.shape)})")
    _check_fan_in(cin * kh * kw, weight)
    _sba.check_bias("bias", bias, x, cout, "weight.shape[0]")
    gain, lr_mul, activation, negative_slope, pixel_norm = _layer_args(gain, lr_mul, activation, negative_slope,
                                                                       pixel_norm)
    up = _checks.flag("up", up)
    down = _checks.flag("down", down)
    if up and down:
        raise ValueError("up and down cannot both be True")
    if down and min(x.shape[2], x.shape[3]) < 2:
        raise ValueError(f"x must be at least 2x2 spatially for down=True; got shape {tuple(x.shape)}")
    backends.resolve("eq_conv2d", x.device)
    y = _conv2d_resample(x, weight, up, down)
    return _sba.dispatch(y, _scaled_bias(bias, lr_mul), reference.equalized_scale(cin * kh * kw, gain, lr_mul),
                         activation, negative_slope, pixel_norm)


def eq_linear(x, weight, bias=None, *, gain=math.sqrt(2), lr_mul=1.0, activation="lrelu", negative_slope=0.2,
              pixel_norm=False):
    """Equalized-lr dense layer + bias + activation (+ pixel norm over features).

    x: N x in; weight: [out, in] unscaled; bias: None or [out]. See progan_fast.reference.eq_linear.
    """
    _checks.tensor("x", x, ndims=(2,))
    _checks.tensor("weight", weight, ndims=(2,), nonempty_batch=False)
    x, weight, bias = _checks.autocast(x.device.type, x, weight, bias)
    _checks.same_device_dtype("weight", weight, "x", x)
    if weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight has {weight.shape[1]} input features (shape {tuple(weight.shape)}) but x has "
                         f"{x.shape[1]} (shape {tuple(x.shape)})")
    _check_fan_in(weight.shape[1], weight)
    _sba.check_bias("bias", bias, x, weight.shape[0], "weight.shape[0]")
    gain, lr_mul, activation, negative_slope, pixel_norm = _layer_args(gain, lr_mul, activation, negative_slope,
                                                                       pixel_norm)
    backends.resolve("eq_linear", x.device)
    y = torch.nn.functional.linear(x, weight)
    return _sba.dispatch(y, _scaled_bias(bias, lr_mul), reference.equalized_scale(weight.shape[1], gain, lr_mul),
                         activation, negative_slope, pixel_norm)
