"""pytorch_GAN_zoo's layer conventions: ConstrainedLayer scales the wrapped module's output (bias included) by the
python float `weight` = sqrt(2 / fan_in) * lrMul."""
import math

import torch
from torch import nn


class NormalizationLayer(nn.Module):
    def forward(self, x, epsilon=1e-8):
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + epsilon)


def Upscale2d(x, factor=2):  # noqa: N802  (the repository's name)
    """Nearest-neighbour upscale by an integer factor through a broadcast view."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    return x.view(n, c, h, 1, w, 1).expand(n, c, h, factor, w, factor).reshape(n, c, h * factor, w * factor)


def getLayerNormalizationFactor(module):  # noqa: N802
    """He's constant sqrt(2 / fan_in), fan_in = the product of the weight's dimensions after the first."""
    return math.sqrt(2.0 / math.prod(module.weight.shape[1:]))


class ConstrainedLayer(nn.Module):
    def __init__(self, module, equalized=True, lrMul=1.0, initBiasToZero=True):  # noqa: N803
        super().__init__()
        self.module = module
        self.equalized = equalized
        if initBiasToZero:
            self.module.bias.data.zero_()
        if equalized:
            self.module.weight.data.normal_(0, 1).div_(lrMul)
            self.weight = getLayerNormalizationFactor(self.module) * lrMul

    def forward(self, x):
        x = self.module(x)
        if self.equalized:
            x *= self.weight
        return x


class EqualizedConv2d(ConstrainedLayer):
    def __init__(self, nChannelsPrevious, nChannels, kernelSize, padding=0, bias=True, **kwargs):  # noqa: N803
        super().__init__(nn.Conv2d(nChannelsPrevious, nChannels, kernelSize, padding=padding, bias=bias), **kwargs)


class EqualizedLinear(ConstrainedLayer):
    def __init__(self, nChannelsPrevious, nChannels, bias=True, **kwargs):  # noqa: N803
        super().__init__(nn.Linear(nChannelsPrevious, nChannels, bias=bias), **kwargs)
