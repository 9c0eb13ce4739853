"""pro-gan-pth 3.4 (PyPI; akanimax/pro_gan_pytorch) on progan_fast's ops.

Its conventions, kept by every replacement: equalized lr multiplies the weight by `layer.scale` =
sqrt(2) / sqrt(fan_in) at run time with the bias unscaled (fan_in = C_in * k * k; C_in only for
EqualizedConvTranspose2d); every gain is sqrt(2); pixel norm x / sqrt(mean_c x^2 + 1e-8); minibatch stddev with
strided groups of min(4, N) and biased variance (N > 4 must be a multiple of 4); fade-in alpha is the NEW path's
weight (0 -> 1); G's blocks are nearest-up, conv + lrelu + PN twice; D's blocks are conv + lrelu twice, then a 2x2
average pool AFTER the lrelu.

What runs faster (scale x out instead of scale x weight: equal up to rounding):
  layers    EqualizedConv2d / EqualizedLinear -> eq_conv2d / eq_linear; EqualizedConvTranspose2d -> conv_transpose2d
            + scaled_bias_act (and a forward that runs on current torch: 3.4's calls torch's private
            `_output_padding` without the `num_spatial_dims` argument that torch releases after its pinned 1.10
            require, so G's first layer raises a TypeError; with eq_conv=False it gets the library's own math
            written against today's torch); PixelwiseNorm -> pixel_norm; MinibatchStdDev -> minibatch_stddev.
  blocks    conv + bias + lrelu (+ PN) in one eq_conv2d epilogue; GenGeneralConvBlock's nearest-up + 3x3 conv ->
            the fused stride-2 transposed conv (`resample`); GenInitialBlock's 4x4 transposed conv of the 1x1 latent
            -> one matmul. D's conv + lrelu + pool has no exact fused form (the pool follows the lrelu), so D's convs
            only get the fused epilogue.
  fade      Generator's output blend -> upsample_blend; Discriminator's input blend -> downsample_blend (the top
            block's pool folded into it); ProGAN.progressive_downsample_batch -> fade_reals.
  trainer   ProGAN.train is the library's own loop, run so that it works on current torch: it creates its
            optimizers with torch.optim.Adam(betas=(0, 0.99)), and torch's Adam now refuses an int beta ("betas
            must be either both floats or both Tensors"); while it runs, the `torch` its module sees hands out an
            Adam that takes the betas as floats (the same optimizer otherwise).
"""
import contextlib
import importlib
import importlib.metadata
import types

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from . import _common
from ._common import Library, Replacement, plain_alpha, plain_lrelu, runs_library_code

NAME = "pro-gan-pth"
DISTRIBUTION = "pro-gan-pth"
PACKAGE = "pro_gan_pytorch"
SUPPORTED_VERSIONS = ("3.4",)


def installed():
    return importlib.util.find_spec(PACKAGE) is not None


def installed_version():
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None


def load(report=None):
    """The Library for the installed pro-gan-pth; raises UnsupportedLibraryVersion for another version."""
    version = installed_version()
    if version is not None and version not in SUPPORTED_VERSIONS:
        raise _common.UnsupportedLibraryVersion(
            f"{NAME} {version} is installed; progan_fast.patch supports {NAME} {', '.join(SUPPORTED_VERSIONS)} "
            f"only (its layers' conventions are checked against that release)")
    custom_layers = importlib.import_module(f"{PACKAGE}.custom_layers")
    modules = importlib.import_module(f"{PACKAGE}.modules")
    networks = importlib.import_module(f"{PACKAGE}.networks")
    found = [custom_layers, modules, networks]
    try:  # the trainer imports torchvision and tensorboard; the networks do not need them
        gan = importlib.import_module(f"{PACKAGE}.gan")
        found.append(gan)
    except ImportError as error:
        gan = None
        if report is not None:
            report.note(NAME, "ProGAN (the trainer)", f"pro_gan_pytorch.gan not importable ({error})")
    return Library(NAME, version or "unknown", tuple(found), tuple(_replacements(custom_layers, modules, networks,
                                                                                gan)))


# ---- layers -----------------------------------------------------------------------------------------------------

def _conv(layer, x, activation="linear", negative_slope=0.2, pixel_norm=False, up=False):
    """An EqualizedConv2d (run-time weight scale `layer.scale`, bias unscaled) through the public ops: eq_conv2d
    for 'same' convs, else torch's conv with the layer's geometry and the scaled_bias_act epilogue (the library
    calls torch.conv2d directly, so padding_mode is ignored there as here)."""
    if up or _common.same_padding_conv(layer, check_padding_mode=False):
        return ops.eq_conv2d(x, layer.weight, layer.bias, gain=_common.eq_gain(layer.scale, layer.weight),
                             activation=activation, negative_slope=negative_slope, pixel_norm=pixel_norm, up=up)
    y = F.conv2d(x, layer.weight, None, layer.stride, layer.padding, layer.dilation, layer.groups)
    return ops.scaled_bias_act(y, layer.bias, float(layer.scale), activation, negative_slope, pixel_norm)


def _make_conv_forward(options, original):
    def forward(self, x):
        if x.dim() != 4:  # unbatched input: eq_conv2d takes N x C x H x W
            return original(self, x)
        return _conv(self, x)
    return forward


def _output_padding(layer, x, output_size):
    if output_size is None:
        return layer.output_padding
    return layer._output_padding(x, output_size, layer.stride, layer.padding, layer.kernel_size,
                                 num_spatial_dims=2, dilation=layer.dilation)


def _make_conv_transpose_forward(options, original):
    def forward(self, x, output_size=None):
        output_padding = _output_padding(self, x, output_size)
        if options.eq_conv and x.dim() == 4:
            y = F.conv_transpose2d(x, self.weight, None, self.stride, self.padding, output_padding, self.groups,
                                   self.dilation)
            return ops.scaled_bias_act(y, self.bias, float(self.scale), "linear")
        # the library's own math (weight * scale, bias unscaled), with the output padding torch expects today
        return torch.conv_transpose2d(x, self.weight * self.scale, self.bias, self.stride, self.padding,
                                      output_padding, self.groups, self.dilation)
    return forward


def _make_linear_forward(options, original):
    def forward(self, x):
        if x.dim() != 2:
            return original(self, x)
        return ops.eq_linear(x, self.weight, self.bias, gain=_common.eq_gain(self.scale, self.weight),
                             activation="linear")
    return forward


def _make_pixel_norm_forward(options, original):
    def forward(x, alpha=1e-8):
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or _common.plain_eps(alpha) is None:
            return original(x, alpha)
        return ops.pixel_norm(x, 1, alpha)
    return forward


def _mbstd_fast(layer, x, alpha):
    """MinibatchStdDev through the op, or None where the library's forward decides (its assert on batch sizes
    that are not a multiple of the group)."""
    n, group = x.shape[0], layer.group_size
    if x.dim() != 4 or not isinstance(group, int) or group < 1 or (n > group and n % group) \
            or _common.plain_eps(alpha) is None:
        return None
    return ops.minibatch_stddev(x, group_size=group, grouping="strided", unbiased=False, eps=alpha)


def _make_mbstd_forward(options, original):
    def forward(self, x, alpha=1e-8):
        y = _mbstd_fast(self, x, alpha)
        return original(self, x, alpha) if y is None else y
    return forward


# ---- blocks -----------------------------------------------------------------------------------------------------

class _Kit:
    """The library's classes and the options, for the block-level helpers."""

    def __init__(self, options, custom_layers, modules):
        self.options = options
        self.conv_cls = custom_layers.EqualizedConv2d
        self.conv_transpose_cls = custom_layers.EqualizedConvTranspose2d
        self.pixel_norm_cls = custom_layers.PixelwiseNorm
        self.mbstd_cls = custom_layers.MinibatchStdDev
        self.dis_block_cls = modules.DisGeneralConvBlock

    def fusable_conv(self, layer, lrelu):
        return self.options.eq_conv and runs_library_code(layer, self.conv_cls) and \
            (lrelu is None or plain_lrelu(lrelu))

    def conv_act(self, layer, x, lrelu, pixnorm=None, up=False):
        """lrelu(layer(x)) (then pixnorm), with `up` a nearest 2x upsample first: one eq_conv2d where the layers
        are the library's, the modules called one by one otherwise."""
        if not self.fusable_conv(layer, lrelu):
            if up:
                x = F.interpolate(x, scale_factor=2)
            y = layer(x) if lrelu is None else lrelu(layer(x))
            return y if pixnorm is None else pixnorm(y)
        fuse_pn = pixnorm is not None and self.options.pixel_norm and runs_library_code(pixnorm,
                                                                                        self.pixel_norm_cls)
        fuse_up = up and self.options.resample and _common.same_padding_conv(layer, check_padding_mode=False)
        if up and not fuse_up:
            x = F.interpolate(x, scale_factor=2)
        y = _conv(layer, x, "linear" if lrelu is None else "lrelu",
                  0.2 if lrelu is None else lrelu.negative_slope, fuse_pn, fuse_up)
        return pixnorm(y) if pixnorm is not None and not fuse_pn else y

    def mbstd(self, module, x):
        if self.options.mbstd and runs_library_code(module, self.mbstd_cls):
            y = _mbstd_fast(module, x, 1e-8)
            if y is not None:
                return y
        return module(x)

    def latent_transpose_conv(self, layer, z, lrelu):
        """lrelu(layer(z[:, :, None, None])) for GenInitialBlock's transposed conv of a 1x1 input: out[n, o, i, j]
        = sum_c z[n, c] W[c, o, i, j], i.e. one matmul, then the scaled_bias_act epilogue."""
        if not (self.options.eq_conv and runs_library_code(layer, self.conv_transpose_cls) and plain_lrelu(lrelu)
                and tuple(layer.padding) == (0, 0) and tuple(layer.dilation) == (1, 1) and layer.groups == 1
                and tuple(layer.output_padding) == (0, 0)):
            return lrelu(layer(z[:, :, None, None]))
        w = layer.weight
        y = torch.mm(z, w.reshape(w.shape[0], -1)).reshape(z.shape[0], *w.shape[1:])
        return ops.scaled_bias_act(y, layer.bias, float(layer.scale), "lrelu", lrelu.negative_slope)

    def dis_block_before_pool(self, block, x):
        return self.conv_act(block.conv_2, self.conv_act(block.conv_1, x, block.lrelu), block.lrelu)

    def from_rgb(self, seq, x):
        """D's fromRGB, Sequential(EqualizedConv2d 1x1, LeakyReLU): one eq_conv2d with the lrelu epilogue."""
        if isinstance(seq, nn.Sequential) and len(seq) == 2 and not _common.has_hooks(seq) and \
                self.fusable_conv(seq[0], seq[1]):
            return self.conv_act(seq[0], x, seq[1])
        return seq(x)


def _default_pool(pool):
    def pair(v):
        return tuple(v) if isinstance(v, (tuple, list)) else (v, v)
    return type(pool) is nn.AvgPool2d and not _common.has_hooks(pool) and pair(pool.kernel_size) == (2, 2) and \
        pair(pool.stride) == (2, 2) and pair(pool.padding) == (0, 0) and not pool.ceil_mode and \
        pool.divisor_override is None


def _gen_initial_forward(kit, original):
    def forward(self, x):
        if x.dim() != 2:
            return original(self, x)
        if kit.options.pixel_norm and runs_library_code(self.pixNorm, kit.pixel_norm_cls):
            y = ops.pixel_norm(x, 1)  # the latents' norm: over dim 1 of N x C, as of N x C x 1 x 1
        else:
            y = self.pixNorm(x[:, :, None, None])[:, :, 0, 0]
        y = kit.latent_transpose_conv(self.conv_1, y, self.lrelu)
        return kit.conv_act(self.conv_2, y, self.lrelu, self.pixNorm)
    return forward


def _gen_block_forward(kit, original):
    def forward(self, x):
        if x.dim() != 4:
            return original(self, x)
        y = kit.conv_act(self.conv_1, x, self.lrelu, self.pixNorm, up=True)
        return kit.conv_act(self.conv_2, y, self.lrelu, self.pixNorm)
    return forward


def _dis_block_forward(kit, original):
    def forward(self, x):
        if x.dim() != 4:
            return original(self, x)
        return self.downSampler(kit.dis_block_before_pool(self, x))
    return forward


def _dis_final_forward(kit, original):
    def forward(self, x):
        if x.dim() != 4:
            return original(self, x)
        y = kit.mbstd(self.batch_discriminator, x)
        y = kit.conv_act(self.conv_1, y, self.lrelu)
        y = kit.conv_act(self.conv_2, y, self.lrelu)
        y = kit.conv_act(self.conv_3, y, None)
        return y.view(-1)
    return forward


# ---- networks and trainer (fade-in) -----------------------------------------------------------------------------

def _generator_forward(kit, original):
    def forward(self, x, depth=None, alpha=1.0):
        d = self.depth if depth is None else depth
        a = plain_alpha(alpha)
        if a is None or not isinstance(d, int) or not 2 < d <= self.depth:
            return original(self, x, depth, alpha)
        y = x
        for block in self.layers[:d - 2]:
            y = block(y)
        old = self.rgb_converters[d - 3](y)
        new = self.rgb_converters[d - 2](self.layers[d - 2](y))
        return ops.upsample_blend(old, new, a)
    return forward


def _discriminator_forward(kit, original):
    def forward(self, x, depth, alpha, labels=None):
        a = plain_alpha(alpha)
        if a is None or not isinstance(depth, int) or not 2 < depth <= self.depth or x.dim() != 4 or \
                (self.conditional and labels is None):
            return original(self, x, depth, alpha, labels)
        top = self.layers[-(depth - 1)]
        if not runs_library_code(top, kit.dis_block_cls) or not _default_pool(top.downSampler):
            return original(self, x, depth, alpha, labels)
        old = kit.from_rgb(self.from_rgb[-(depth - 2)], F.avg_pool2d(x, kernel_size=2, stride=2))
        new_before_pool = kit.dis_block_before_pool(top, kit.from_rgb(self.from_rgb[-(depth - 1)], x))
        if new_before_pool.shape[2:] == tuple(2 * s for s in old.shape[2:]):
            y = ops.downsample_blend(new_before_pool, old, a)
        else:  # odd sizes: the pool drops a row / column, the blend op wants exact halves
            y = a * top.downSampler(new_before_pool) + (1 - a) * old
        for block in self.layers[-(depth - 2):-1]:
            y = block(y)
        return self.layers[-1](y, labels) if self.conditional else self.layers[-1](y)
    return forward


def _make_downsample_batch(options, original):
    def progressive_downsample_batch(self, real_batch, depth, alpha):
        a = plain_alpha(alpha)
        if a is None or not isinstance(depth, int) or depth <= 2 or depth > self.depth or real_batch.dim() != 4:
            return original(self, real_batch, depth, alpha)
        factor = int(2 ** (self.depth - depth))
        current = F.avg_pool2d(real_batch, kernel_size=factor, stride=factor)
        if current.shape[2] % 2 or current.shape[3] % 2:
            return original(self, real_batch, depth, alpha)
        # the library pools the full-resolution batch by 2 * factor for the old path; pooling `current` by 2 is
        # the same average
        return ops.fade_reals(current, a)
    return progressive_downsample_batch


class _Adam(torch.optim.Adam):
    """torch.optim.Adam taking real betas as floats (pro-gan-pth passes betas=(0, 0.99))."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), *args, **kwargs):
        betas = tuple(float(b) if isinstance(b, int) and not isinstance(b, bool) else b for b in betas)
        super().__init__(params, lr, betas, *args, **kwargs)


_Adam.__name__ = _Adam.__qualname__ = "Adam"


def _module_proxy(module, **overrides):
    """A module object that is `module` except for `overrides` (PEP 562 __getattr__ forwards everything else)."""
    proxy = types.ModuleType(module.__name__, module.__doc__)
    proxy.__dict__.update(overrides)
    proxy.__getattr__ = lambda name: getattr(module, name)
    return proxy


_TORCH_FOR_TRAINER = _module_proxy(torch, optim=_module_proxy(torch.optim, Adam=_Adam))


@contextlib.contextmanager
def _trainer_torch(gan):
    saved = gan.__dict__["torch"]
    gan.torch = _TORCH_FOR_TRAINER
    try:
        yield
    finally:
        gan.torch = saved


def _make_train(gan):
    def make(options, original):
        def train(self, *args, **kwargs):
            with _trainer_torch(gan):
                return original(self, *args, **kwargs)
        return train
    return make


def _replacements(custom_layers, modules, networks, gan):
    def block(factory):
        """A Replacement.make for a block-level forward: it sees the options and the library's classes."""
        def make(options, original):
            return factory(_Kit(options, custom_layers, modules), original)
        return make

    reps = [
        Replacement(custom_layers.EqualizedConv2d, "forward", ("eq_conv",), _make_conv_forward,
                    "eq_conv2d (scale applied to the output, bias unscaled)"),
        Replacement(custom_layers.EqualizedConvTranspose2d, "forward", (), _make_conv_transpose_forward,
                    "conv_transpose2d + scaled_bias_act; runs on current torch (3.4's raises a TypeError)"),
        Replacement(custom_layers.EqualizedLinear, "forward", ("eq_conv",), _make_linear_forward, "eq_linear"),
        Replacement(custom_layers.PixelwiseNorm, "forward", ("pixel_norm",), _make_pixel_norm_forward,
                    "pixel_norm", static=True),
        Replacement(custom_layers.MinibatchStdDev, "forward", ("mbstd",), _make_mbstd_forward,
                    "minibatch_stddev (strided groups, biased variance)"),
        Replacement(modules.GenInitialBlock, "forward", ("eq_conv",), block(_gen_initial_forward),
                    "pixel_norm(z); the 4x4 transposed conv of the 1x1 latent as one matmul + lrelu epilogue; "
                    "conv + lrelu + PN in one eq_conv2d"),
        Replacement(modules.GenGeneralConvBlock, "forward", ("eq_conv",), block(_gen_block_forward),
                    "nearest-up + conv -> fused stride-2 transposed conv (resample); conv + lrelu + PN in one "
                    "eq_conv2d"),
        Replacement(modules.DisGeneralConvBlock, "forward", ("eq_conv",), block(_dis_block_forward),
                    "conv + lrelu in one eq_conv2d (the pool follows the lrelu: no exact fused down conv)"),
        Replacement(modules.DisFinalBlock, "forward", ("eq_conv",), block(_dis_final_forward),
                    "minibatch_stddev; conv + lrelu epilogues"),
        Replacement(networks.Generator, "forward", ("fade",), block(_generator_forward),
                    "fade-in blend -> upsample_blend"),
        Replacement(networks.Discriminator, "forward", ("fade",), block(_discriminator_forward),
                    "fade-in blend -> downsample_blend (the top block's pool folded in); fromRGB + lrelu epilogue"),
    ]
    if gan is not None:
        reps.append(Replacement(gan.ProGAN, "progressive_downsample_batch", ("fade",), _make_downsample_batch,
                                "fade_reals"))
        reps.append(Replacement(gan.ProGAN, "train", (), _make_train(gan),
                                "the library's loop; its Adam(betas=(0, 0.99)) accepted on current torch"))
    return reps
