"""torch.nn modules over the progan_fast ops: equalized-lr conv and dense layers, pixel norm, minibatch stddev.

Parameters are `weight` (stored unscaled, initialised N(0, 1) / lr_mul) and `bias` (zeros); the runtime scale
gain * lr_mul / sqrt(fan_in) is applied to the layer output by the op (TF official `get_weight`, use_wscale=True).
"""
import math

import torch
from torch import nn

from . import ops


class EqualizedConv2d(nn.Module):
    """k x k 'same' conv with equalized lr, bias, activation, optional pixel norm and fused 2x up/down sampling."""

    def __init__(self, in_channels, out_channels, kernel_size, gain=math.sqrt(2), lr_mul=1.0, activation="lrelu",
                 pixel_norm=False, up=False, down=False, bias=True):
        super().__init__()
        if up and down:
            raise ValueError("up and down cannot both be True")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.gain, self.lr_mul, self.activation = gain, lr_mul, activation
        self.pixel_norm, self.up, self.down = pixel_norm, up, down
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x):
        return ops.eq_conv2d(x, self.weight, self.bias, gain=self.gain, lr_mul=self.lr_mul,
                             activation=self.activation, pixel_norm=self.pixel_norm, up=self.up, down=self.down)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, gain={self.gain:.4g}, "
                f"lr_mul={self.lr_mul}, activation={self.activation}, pixel_norm={self.pixel_norm}, up={self.up}, "
                f"down={self.down}, bias={self.bias is not None}")


class EqualizedLinear(nn.Module):
    """Dense layer with equalized lr, bias, activation and optional pixel norm over features."""

    def __init__(self, in_features, out_features, gain=math.sqrt(2), lr_mul=1.0, activation="lrelu",
                 pixel_norm=False, bias=True):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.gain, self.lr_mul, self.activation, self.pixel_norm = gain, lr_mul, activation, pixel_norm
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        return ops.eq_linear(x, self.weight, self.bias, gain=self.gain, lr_mul=self.lr_mul,
                             activation=self.activation, pixel_norm=self.pixel_norm)

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, gain={self.gain:.4g}, lr_mul={self.lr_mul}, "
                f"activation={self.activation}, pixel_norm={self.pixel_norm}, bias={self.bias is not None}")


class PixelNorm(nn.Module):
    def __init__(self, dim=1, eps=1e-8):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, x):
        return ops.pixel_norm(x, self.dim, self.eps)

    def extra_repr(self):
        return f"dim={self.dim}, eps={self.eps}"


class MinibatchStddev(nn.Module):
    """Appends `num_new_features` channels (one by default); defaults are TF official's (strided groups of 4,
    biased variance)."""

    def __init__(self, group_size=4, grouping="strided", unbiased=False, eps=1e-8, num_new_features=1):
        super().__init__()
        self.group_size, self.grouping, self.unbiased, self.eps = group_size, grouping, unbiased, eps
        self.num_new_features = num_new_features

    def forward(self, x):
        return ops.minibatch_stddev(x, self.group_size, self.grouping, self.unbiased, self.eps, self.num_new_features)

    def extra_repr(self):
        return (f"group_size={self.group_size}, grouping={self.grouping}, unbiased={self.unbiased}, eps={self.eps}, "
                f"num_new_features={self.num_new_features}")
