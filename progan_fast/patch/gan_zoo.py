"""pytorch_GAN_zoo's PGAN (facebookresearch, archived; not on PyPI) on progan_fast's ops.

Found by layout, in modules already imported: `<package>.networks.custom_layers` (ConstrainedLayer,
EqualizedConv2d, EqualizedLinear, NormalizationLayer, Upscale2d), `<package>.networks.mini_batch_stddev_module`
(miniBatchStdDev) and `<package>.networks.progressive_conv_net` (GNet, DNet). Its top package is called `models`
in the repository, too common a name to import on speculation, so class-level patching needs those modules
imported first.

Its conventions, kept by every replacement: ConstrainedLayer multiplies the wrapped module's OUTPUT by the python
float `self.weight` = c = sqrt(2 / fan_in) * lrMul, so the bias is scaled by c too (c = 1 with equalized=False);
the gain is sqrt(2) everywhere; NormalizationLayer x * rsqrt(mean_c x^2 + 1e-8); miniBatchStdDev with contiguous
groups of min(4, N) (one group when N is not a multiple; a zero map for groups of 1) and unbiased variance;
`alpha` is the OLD path's weight (1 -> 0); GNet: PN(z), format dense + lrelu, view to 4x4, PN, then per scale
nearest-up, (conv + lrelu + PN) x 2; DNet: fromRGB + lrelu, per scale (conv + lrelu) x 2 then 2x2 pool, the fade
blended after the pool of the newest scale only when there are at least two scales (the 4 -> 8 transition has
no fade in D: the library's issue #98, kept).

What runs faster (scale applied once to the output, equal up to rounding): ConstrainedLayer -> eq_conv2d /
eq_linear with the bias pre-scaled by c; NormalizationLayer -> pixel_norm; GNet's nearest-up + conv -> the fused
stride-2 transposed conv (`resample`), conv + lrelu + PN in one eq_conv2d, the output blend -> upsample_blend with
alpha flipped to the new path's weight; DNet's conv + lrelu in one eq_conv2d (the pool follows the lrelu: no
exact fused down conv), the blend -> downsample_blend with the pool folded in, minibatch_stddev (contiguous,
unbiased).
"""
import math
import sys

import torch.nn.functional as F
from torch import nn

from .. import ops
from . import _common
from ._common import Library, Replacement, plain_alpha, plain_lrelu, runs_library_code

NAME = "pytorch_GAN_zoo"
_SUFFIXES = ("networks.custom_layers", "networks.mini_batch_stddev_module", "networks.progressive_conv_net")
_REQUIRED = {
    "networks.custom_layers": ("ConstrainedLayer", "EqualizedConv2d", "EqualizedLinear", "NormalizationLayer",
                               "Upscale2d"),
    "networks.mini_batch_stddev_module": ("miniBatchStdDev",),
    "networks.progressive_conv_net": ("GNet", "DNet"),
}
_GNET_METHODS = ("addScale", "setNewAlpha", "initFormatLayer", "forward")
_DNET_METHODS = ("addScale", "setNewAlpha", "initDecisionLayer", "forward")


def imported_packages():
    """Package prefixes (e.g. 'models') under which a progressive_conv_net module has been imported."""
    suffix = "." + _SUFFIXES[-1]
    return sorted({name[:-len(suffix)] for name in list(sys.modules) if name.endswith(suffix)})


def package_of(cls):
    for suffix in _SUFFIXES:
        if cls.__module__.endswith("." + suffix):
            return cls.__module__[:-len(suffix) - 1]
    return None


def load(package):
    """The Library for the GAN zoo layout under `package`; UnsupportedLibraryVersion if it is not that layout."""
    found = {}
    for suffix in _SUFFIXES:
        module = sys.modules.get(f"{package}.{suffix}")
        if module is None:
            try:
                module = __import__(f"{package}.{suffix}", fromlist=["_"])
            except ImportError as error:
                raise _common.UnsupportedLibraryVersion(
                    f"{NAME} layout under '{package}': {package}.{suffix} cannot be imported ({error})") from error
        missing = [name for name in _REQUIRED[suffix] if not hasattr(module, name)]
        if missing:
            raise _common.UnsupportedLibraryVersion(
                f"{NAME} layout under '{package}': {module.__name__} has no {', '.join(missing)}; progan_fast.patch "
                f"supports the layout of the archived repository's last release")
        found[suffix] = module
    net = found["networks.progressive_conv_net"]
    for cls, methods in ((net.GNet, _GNET_METHODS), (net.DNet, _DNET_METHODS)):
        missing = [m for m in methods if not hasattr(cls, m)]
        if missing:
            raise _common.UnsupportedLibraryVersion(
                f"{NAME} layout under '{package}': {cls.__name__} has no {', '.join(missing)}")
    layers = found["networks.custom_layers"]
    return Library(NAME, f"layout at {package}.networks", tuple(found.values()),
                   tuple(_replacements(layers, net)))


# ---- layers -----------------------------------------------------------------------------------------------------

def _factor(layer):
    """The runtime factor c the layer multiplies its output by (the python float `weight`; 1 unequalized)."""
    return float(layer.weight) if layer.equalized else 1.0


def _conv(layer, x, activation="linear", negative_slope=0.2, pixel_norm=False, up=False):
    """c * (conv(x) + b) (+ act, PN) through the public ops: eq_conv2d for 'same' convs, else the module's own
    conv with the scaled_bias_act epilogue."""
    conv, c = layer.module, _factor(layer)
    bias = None if conv.bias is None else conv.bias * c
    if up or _common.same_padding_conv(conv):
        return ops.eq_conv2d(x, conv.weight, bias, gain=_common.eq_gain(c, conv.weight), activation=activation,
                             negative_slope=negative_slope, pixel_norm=pixel_norm, up=up)
    y = conv._conv_forward(x, conv.weight, None)
    return ops.scaled_bias_act(y, bias, c, activation, negative_slope, pixel_norm)


def _linear(layer, x, activation="linear", negative_slope=0.2):
    lin, c = layer.module, _factor(layer)
    bias = None if lin.bias is None else lin.bias * c
    return ops.eq_linear(x, lin.weight, bias, gain=_common.eq_gain(c, lin.weight), activation=activation,
                         negative_slope=negative_slope)


def _wraps(layer, module_type, x, ndim):
    return type(layer.module) is module_type and not _common.has_hooks(layer.module) and x.dim() == ndim


def _make_constrained_forward(options, original):
    def forward(self, x):
        if _wraps(self, nn.Conv2d, x, 4):
            return _conv(self, x)
        if _wraps(self, nn.Linear, x, 2):
            return _linear(self, x)
        return original(self, x)
    return forward


def _make_normalization_forward(options, original):
    def forward(self, x, epsilon=1e-8):
        if x.dim() < 2 or _common.plain_eps(epsilon) is None:
            return original(self, x, epsilon)
        return ops.pixel_norm(x, 1, epsilon)
    return forward


# ---- networks ---------------------------------------------------------------------------------------------------

class _Kit:
    """The library's classes and the options, for GNet / DNet."""

    def __init__(self, options, layers, net):
        self.options, self.net = options, net
        self.constrained_cls = layers.ConstrainedLayer
        self.norm_cls = layers.NormalizationLayer

    def _fusable(self, layer, module_type, lrelu):
        return self.options.eq_conv and runs_library_code(layer, self.constrained_cls) and \
            type(layer.module) is module_type and not _common.has_hooks(layer.module) and \
            (lrelu is None or plain_lrelu(lrelu))

    def conv_act(self, layer, x, lrelu, norm=None, up=False):
        """norm(lrelu(layer(up(x)))) with the parts that are None left out, up = the library's Upscale2d."""
        if not self._fusable(layer, nn.Conv2d, lrelu):
            if up:
                x = self.net.Upscale2d(x)
            y = layer(x) if lrelu is None else lrelu(layer(x))
            return y if norm is None else norm(y)
        fuse_norm = norm is not None and self.options.pixel_norm and runs_library_code(norm, self.norm_cls)
        fuse_up = up and self.options.resample and _common.same_padding_conv(layer.module)
        if up and not fuse_up:
            x = self.net.Upscale2d(x)
        y = _conv(layer, x, "linear" if lrelu is None else "lrelu", 0.2 if lrelu is None else lrelu.negative_slope,
                  fuse_norm, fuse_up)
        return norm(y) if norm is not None and not fuse_norm else y

    def linear_act(self, layer, x, lrelu):
        if not self._fusable(layer, nn.Linear, lrelu) or x.dim() != 2:
            return layer(x) if lrelu is None else lrelu(layer(x))
        return _linear(layer, x, "linear" if lrelu is None else "lrelu", 0.2 if lrelu is None else lrelu.negative_slope)

    def normalize(self, norm, x):
        if self.options.pixel_norm and runs_library_code(norm, self.norm_cls):
            return ops.pixel_norm(x, 1)
        return norm(x)


def _flat(x):
    return x.view(-1, math.prod(x.shape[1:]))


def _gnet_forward(kit, original):
    def forward(self, x):
        a = plain_alpha(self.alpha)
        norm = self.normalizationLayer
        # the library's own forward for what it does not define (or fails on): no normalization layer (it calls
        # it unconditionally after the format layer), a fade without a previous scale, alpha outside [0, 1]
        if a is None or norm is None or (a > 0 and not self.scaleLayers) or \
                not isinstance(self.leakyRelu, nn.LeakyReLU):
            return original(self, x)
        lrelu = self.leakyRelu
        x = _flat(kit.normalize(norm, x))
        x = kit.linear_act(self.formatLayer, x, lrelu)
        x = kit.normalize(norm, x.view(x.size()[0], -1, 4, 4))
        for layer in self.groupScale0:
            x = kit.conv_act(layer, x, lrelu, norm)
        previous = None
        for scale, group in enumerate(self.scaleLayers):
            if scale == len(self.scaleLayers) - 1:
                previous = x
            for i, layer in enumerate(group):
                x = kit.conv_act(layer, x, lrelu, norm, up=i == 0)
        out = kit.conv_act(self.toRGBLayers[-1], x, None)
        if a > 0:
            old = kit.conv_act(self.toRGBLayers[-2], previous, None)
            if kit.options.fade:
                out = ops.upsample_blend(old, out, 1.0 - a)  # the op's alpha weights the new path
            else:
                out = a * kit.net.Upscale2d(old) + (1.0 - a) * out
        if self.generationActivation is not None:
            out = self.generationActivation(out)
        return out
    return forward


def _dnet_forward(kit, original):
    def forward(self, x, getFeature=False):
        a = plain_alpha(self.alpha)
        if a is None or not isinstance(self.leakyRelu, nn.LeakyReLU) or x.dim() != 4:
            return original(self, x, getFeature)
        lrelu = self.leakyRelu
        # the library blends only with two or more scales (no fade in D at 4 -> 8, its issue #98)
        merge = a > 0 and len(self.scaleLayers) > 1
        if merge:
            old = kit.conv_act(self.fromRGBLayers[-2], F.avg_pool2d(x, (2, 2)), lrelu)
        x = kit.conv_act(self.fromRGBLayers[-1], x, lrelu)
        for group in reversed(self.scaleLayers):
            for layer in group:
                x = kit.conv_act(layer, x, lrelu)
            if merge and kit.options.fade and x.shape[2:] == tuple(2 * s for s in old.shape[2:]):
                x = ops.downsample_blend(x, old, 1.0 - a)  # the op's alpha weights the new path
            else:
                x = F.avg_pool2d(x, (2, 2))
                if merge:
                    x = a * old + (1.0 - a) * x
            merge = False
        if self.miniBatchNormalization:
            if kit.options.mbstd:
                x = ops.minibatch_stddev(x, group_size=4, grouping="contiguous", unbiased=True, eps=1e-8)
            else:
                x = kit.net.miniBatchStdDev(x)
        x = kit.conv_act(self.groupScaleZero[0], x, lrelu)
        x = kit.linear_act(self.groupScaleZero[1], _flat(x), lrelu)
        out = kit.linear_act(self.decisionLayer, x, None)
        return (out, x) if getFeature else out
    return forward


def _replacements(layers, net):
    def network(factory):
        def make(options, original):
            return factory(_Kit(options, layers, net), original)
        return make

    return [
        Replacement(layers.ConstrainedLayer, "forward", ("eq_conv",), _make_constrained_forward,
                    "eq_conv2d / eq_linear, the bias pre-scaled by the layer's constant"),
        Replacement(layers.NormalizationLayer, "forward", ("pixel_norm",), _make_normalization_forward,
                    "pixel_norm"),
        Replacement(net.GNet, "forward", ("eq_conv", "fade"), network(_gnet_forward),
                    "Upscale2d + conv -> fused stride-2 transposed conv (resample); conv + lrelu + PN in one "
                    "eq_conv2d; fade -> upsample_blend (alpha flipped)"),
        Replacement(net.DNet, "forward", ("eq_conv", "fade", "mbstd"), network(_dnet_forward),
                    "conv + lrelu in one eq_conv2d (the pool follows the lrelu: no exact fused down conv); fade "
                    "-> downsample_blend (alpha flipped); minibatch_stddev (contiguous, unbiased)"),
    ]
