"""ProGAN generator and discriminator (TF official `G_paper` / `D_paper`, Karras et al. 2018), computing only at
the current resolution.

Resolution 2^r uses nf(r - 1) feature maps, nf(s) = min(int(fmap_base / 2^(s * fmap_decay)), fmap_max). Every
layer is equalized-lr (progan_fast.nn). Checkpoint keys are stable: `blocks.<r>.*`, `to_rgb.<r>.*` (G) and
`from_rgb.<r>.*`, `blocks.<r>.*` (D) for r = 2 .. resolution_log2.

Fade-in (alpha = weight of the newest resolution's path, 1.0 when not fading, ignored at res_log2 == 2):
  G: out = upsample_blend(toRGB_{r-1}(x_{r-1}), toRGB_r(x_r), alpha) (TF official's lerp_clip in RGB space).
  D: x = lerp(fromRGB_{r-1}(avg_pool2(img)), block_r(fromRGB_r(img)), alpha) in feature space after block r's
     fused down conv (TF official), as one op: ops.fade_from_rgb pools, applies fromRGB_{r-1} and blends in one
     pass, never materialising the pooled image nor the old path's features.
  Either path is skipped where its weight is known to be 0 without a device sync (alpha a python float 1.0 or
  0.0): the result is then exactly the network of that resolution alone.
Where TF official upscales G's output (and D's input) to full resolution at low lod, both run here at 2^r:
the values are the same because box-down of a nearest-up by the same factor is the identity.

`channels_last=True` runs every conv in channels_last memory format (G converts after the 4x4 reshape, D
converts its input); D also keeps channels_last inputs in that format without the flag.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from . import ops, reference
from .nn import EqualizedConv2d, EqualizedLinear, MinibatchStddev
from .ops import _checks


def num_features(stage, fmap_base=8192, fmap_decay=1.0, fmap_max=512):
    """nf(stage) = min(int(fmap_base / 2^(stage * fmap_decay)), fmap_max) (TF official `nf`)."""
    return min(int(fmap_base / 2.0 ** (stage * fmap_decay)), fmap_max)


def _resolution_log2(resolution):
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 4 or \
            resolution & (resolution - 1):
        raise ValueError(f"resolution must be a power of two >= 4; got {resolution!r}")
    return resolution.bit_length() - 1


def _check_res_log2(res_log2, max_log2):
    if isinstance(res_log2, bool) or not isinstance(res_log2, int):
        raise TypeError(f"res_log2 must be an int; got {type(res_log2).__name__}")
    if not 2 <= res_log2 <= max_log2:
        raise ValueError(f"res_log2 must be in [2, {max_log2}]; got {res_log2}")


def _fading(alpha):
    """False only when alpha is known to be 1 without a device sync (a python float)."""
    return not (isinstance(alpha, float) and alpha == 1.0)


def _only_old_path(alpha):
    """True only when alpha is known to be 0 without a device sync (a python float): the new path has no weight."""
    return isinstance(alpha, float) and alpha == 0.0


class LatentToFeatures(nn.Module):
    """G's first layer: dense latent -> nf * 4 * 4 without bias (gain sqrt(2)/4, TF official "matches the
    original Theano implementation"), reshape to N x nf x 4 x 4, per-channel bias, lrelu, pixel norm. The
    equalized-lr scale is applied after the reshape, in the same epilogue as the bias (it commutes with it)."""

    def __init__(self, latent_size, channels, gain=math.sqrt(2) / 4):
        super().__init__()
        self.latent_size, self.channels, self.gain = latent_size, channels, gain
        self.weight = nn.Parameter(torch.randn(channels * 16, latent_size))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, z, memory_format=torch.contiguous_format):
        x = F.linear(z, self.weight).reshape(z.shape[0], self.channels, 4, 4).contiguous(memory_format=memory_format)
        return ops.scaled_bias_act(x, self.bias, reference.equalized_scale(self.latent_size, self.gain, 1.0), pixel_norm=True)

    def extra_repr(self):
        return f"{self.latent_size} -> {self.channels} x 4 x 4, gain={self.gain:.4g}"


class GeneratorInputBlock(nn.Module):
    """4x4: dense (LatentToFeatures) -> conv3x3 + bias + lrelu + PN."""

    def __init__(self, latent_size, channels):
        super().__init__()
        self.dense = LatentToFeatures(latent_size, channels)
        self.conv = EqualizedConv2d(channels, channels, 3, pixel_norm=True)

    def forward(self, z, memory_format=torch.contiguous_format):
        return self.conv(self.dense(z, memory_format))


class GeneratorBlock(nn.Module):
    """2^r for r >= 3: fused nearest-up + conv3x3 + bias + lrelu + PN, conv3x3 + bias + lrelu + PN."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0_up = EqualizedConv2d(in_channels, out_channels, 3, pixel_norm=True, up=True)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, pixel_norm=True)

    def forward(self, x):
        return self.conv1(self.conv0_up(x))


class Generator(nn.Module):
    def __init__(self, resolution=1024, num_channels=3, latent_size=None, fmap_base=8192, fmap_max=512,
                 fmap_decay=1.0, normalize_latents=True, channels_last=False):
        super().__init__()
        self.resolution_log2 = _resolution_log2(resolution)
        self.resolution, self.num_channels = resolution, num_channels
        self.normalize_latents, self.channels_last = normalize_latents, channels_last

        def nf(stage):
            return num_features(stage, fmap_base, fmap_decay, fmap_max)

        self.latent_size = nf(0) if latent_size is None else latent_size
        self.blocks = nn.ModuleDict({"2": GeneratorInputBlock(self.latent_size, nf(1))})
        for r in range(3, self.resolution_log2 + 1):
            self.blocks[str(r)] = GeneratorBlock(nf(r - 2), nf(r - 1))
        self.to_rgb = nn.ModuleDict({
            str(r): EqualizedConv2d(nf(r - 1), num_channels, 1, gain=1.0, activation="linear")
            for r in range(2, self.resolution_log2 + 1)})

    def forward(self, z, res_log2=None, alpha=1.0):
        """z: N x latent_size -> N x num_channels x 2^res_log2 x 2^res_log2 (res_log2 defaults to the maximum)."""
        res_log2 = self.resolution_log2 if res_log2 is None else res_log2
        _check_res_log2(res_log2, self.resolution_log2)
        alpha = _checks.alpha("alpha", alpha)
        _checks.tensor("z", z, ndims=(2,))
        if z.shape[1] != self.latent_size:
            raise ValueError(f"z must be N x {self.latent_size} (latent_size); got shape {tuple(z.shape)}")
        x = ops.pixel_norm(z) if self.normalize_latents else z
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        x = self.blocks["2"](x, fmt)
        previous = None
        for r in range(3, res_log2 + 1):
            previous = x
            x = self.blocks[str(r)](x)
        out = self.to_rgb[str(res_log2)](x)
        if res_log2 > 2 and _fading(alpha):
            out = ops.upsample_blend(self.to_rgb[str(res_log2 - 1)](previous), out, alpha)
        return out


class DiscriminatorBlock(nn.Module):
    """2^r for r >= 3: conv3x3 + bias + lrelu, fused conv3x3 + 2x2 avg-pool + bias + lrelu."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3)
        self.conv1_down = EqualizedConv2d(in_channels, out_channels, 3, down=True)

    def forward(self, x):
        return self.conv1_down(self.conv0(x))


class DiscriminatorOutputBlock(nn.Module):
    """4x4: minibatch stddev (TF official: strided groups, biased variance, `mbstd_num_features` maps as NVlabs'
    networks_progan.py; skipped when group_size <= 1; the fused kernel of progan_fast.ops.minibatch_stddev),
    conv3x3 + bias + lrelu, dense 16*C -> nf(0) + lrelu, dense nf(0) -> 1 (gain 1, linear)."""

    def __init__(self, channels, hidden, mbstd_group_size=4, mbstd_num_features=1):
        super().__init__()
        self.mbstd = (MinibatchStddev(mbstd_group_size, num_new_features=mbstd_num_features)
                      if mbstd_group_size > 1 else None)
        self.conv = EqualizedConv2d(channels + (mbstd_num_features if self.mbstd is not None else 0), channels, 3)
        self.dense0 = EqualizedLinear(channels * 16, hidden)
        self.dense1 = EqualizedLinear(hidden, 1, gain=1.0, activation="linear")

    def forward(self, x):
        if self.mbstd is not None:
            x = self.mbstd(x)
        return self.dense1(self.dense0(self.conv(x).flatten(1)))


class Discriminator(nn.Module):
    def __init__(self, resolution=1024, num_channels=3, fmap_base=8192, fmap_max=512, fmap_decay=1.0,
                 mbstd_group_size=4, channels_last=False, mbstd_num_features=1):
        super().__init__()
        self.resolution_log2 = _resolution_log2(resolution)
        self.resolution, self.num_channels, self.channels_last = resolution, num_channels, channels_last

        def nf(stage):
            return num_features(stage, fmap_base, fmap_decay, fmap_max)

        self.from_rgb = nn.ModuleDict({
            str(r): EqualizedConv2d(num_channels, nf(r - 1), 1) for r in range(2, self.resolution_log2 + 1)})
        self.blocks = nn.ModuleDict({"2": DiscriminatorOutputBlock(nf(1), nf(0), mbstd_group_size,
                                                                   mbstd_num_features)})
        for r in range(3, self.resolution_log2 + 1):
            self.blocks[str(r)] = DiscriminatorBlock(nf(r - 1), nf(r - 2))

    def forward(self, images, res_log2=None, alpha=1.0):
        """images: N x num_channels x 2^res_log2 x 2^res_log2 -> N x 1 scores (res_log2 defaults to the maximum)."""
        res_log2 = self.resolution_log2 if res_log2 is None else res_log2
        _check_res_log2(res_log2, self.resolution_log2)
        alpha = _checks.alpha("alpha", alpha)
        _checks.tensor("images", images, ndims=(4,))
        size = 2 ** res_log2
        if tuple(images.shape[1:]) != (self.num_channels, size, size):
            raise ValueError(f"images must be N x {self.num_channels} x {size} x {size} for res_log2={res_log2}; "
                             f"got shape {tuple(images.shape)}")
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if res_log2 > 2 and _only_old_path(alpha):
            x = self.from_rgb[str(res_log2 - 1)](F.avg_pool2d(images, 2))
        else:
            x = self.from_rgb[str(res_log2)](images)
            if res_log2 > 2:
                x = self.blocks[str(res_log2)](x)
                if _fading(alpha):
                    old = self.from_rgb[str(res_log2 - 1)]
                    x = ops.fade_from_rgb(images, x, old.weight, old.bias, alpha, gain=old.gain, lr_mul=old.lr_mul)
        for r in range(res_log2 - 1, 2, -1):
            x = self.blocks[str(r)](x)
        return self.blocks["2"](x)
