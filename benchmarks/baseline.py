"""ProGAN written the unfused plain-PyTorch way: what a user compares progan_fast against.

The architecture and math of progan_fast.models (TF official `G_paper` / `D_paper`), written the way
pytorch_GAN_zoo and pro-gan-pth write it, using nothing from progan_fast:
  - equalized lr: the stored weight is multiplied by its scale on every call (pro-gan-pth), the bias passed to
    F.conv2d / F.linear (pro-gan-pth: oneDNN adds it in the conv, the strongest unfused choice);
  - G's up conv: F.interpolate(nearest, x2) then a 3x3 conv; D's down conv: a 3x3 conv then F.avg_pool2d(2);
  - leaky ReLU and pixel norm (x * rsqrt(mean(x^2) + eps), pytorch_GAN_zoo) as separate ops after the conv;
  - minibatch stddev as TF official's reshape chain (strided groups, biased variance);
  - fades as torch.lerp of the upsampled / pooled old path (G in RGB space, D in feature space after the block).
Parameter names and shapes are progan_fast's (`blocks.<r>.conv0_up.weight`, ...), so one state_dict loads into
both; tests/test_baseline_models.py checks the parameter count and that the outputs equal progan_fast's.
The D's down conv adds its bias before the pool instead of after (the pool of a per-channel constant is that
constant: the same values).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_SLOPE = 0.2
PIXEL_NORM_EPS = 1e-8


def num_features(stage, fmap_base, fmap_decay, fmap_max):
    return min(int(fmap_base / 2.0 ** (stage * fmap_decay)), fmap_max)


def pixel_norm(x, eps=PIXEL_NORM_EPS):
    return x * (x.pow(2).mean(dim=1, keepdim=True) + eps).rsqrt()


def minibatch_stddev(x, group_size=4, eps=1e-8):
    """TF official `minibatch_stddev_layer`: sample n is in group n mod (N / G)."""
    n, c, h, w = x.shape
    g = min(group_size, n)
    y = x.reshape(g, -1, c, h, w)
    y = y - y.mean(dim=0, keepdim=True)
    y = y.pow(2).mean(dim=0)
    y = torch.sqrt(y + eps)
    y = y.mean(dim=[1, 2, 3])
    y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class WScaleConv2d(nn.Module):
    """'same' k x k conv whose weight is multiplied by gain / sqrt(fan_in) on every call."""

    def __init__(self, in_channels, out_channels, kernel_size, gain=math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = kernel_size // 2

    def forward(self, x):
        return F.conv2d(x, self.weight * self.scale, self.bias, padding=self.padding)


class WScaleLinear(nn.Module):
    def __init__(self, in_features, out_features, gain=math.sqrt(2)):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.scale = gain / math.sqrt(in_features)

    def forward(self, x):
        return F.linear(x, self.weight * self.scale, self.bias)


class LatentToFeatures(nn.Module):
    """Dense latent -> C x 4 x 4 without bias in the matmul (gain sqrt(2)/4), then bias, lrelu, pixel norm."""

    def __init__(self, latent_size, channels):
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.randn(channels * 16, latent_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.scale = math.sqrt(2) / 4 / math.sqrt(latent_size)

    def forward(self, z):
        x = F.linear(z, self.weight * self.scale).view(z.shape[0], self.channels, 4, 4)
        x = x + self.bias.view(1, -1, 1, 1)
        return pixel_norm(F.leaky_relu(x, LRELU_SLOPE))


class GeneratorInputBlock(nn.Module):
    def __init__(self, latent_size, channels):
        super().__init__()
        self.dense = LatentToFeatures(latent_size, channels)
        self.conv = WScaleConv2d(channels, channels, 3)

    def forward(self, z):
        return pixel_norm(F.leaky_relu(self.conv(self.dense(z)), LRELU_SLOPE))


class GeneratorBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0_up = WScaleConv2d(in_channels, out_channels, 3)
        self.conv1 = WScaleConv2d(out_channels, out_channels, 3)

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = pixel_norm(F.leaky_relu(self.conv0_up(x), LRELU_SLOPE))
        return pixel_norm(F.leaky_relu(self.conv1(x), LRELU_SLOPE))


class Generator(nn.Module):
    def __init__(self, resolution, num_channels=3, latent_size=None, fmap_base=8192, fmap_max=512, fmap_decay=1.0):
        super().__init__()
        self.resolution_log2 = int(math.log2(resolution))

        def nf(stage):
            return num_features(stage, fmap_base, fmap_decay, fmap_max)

        self.latent_size = nf(0) if latent_size is None else latent_size
        self.blocks = nn.ModuleDict({"2": GeneratorInputBlock(self.latent_size, nf(1))})
        for r in range(3, self.resolution_log2 + 1):
            self.blocks[str(r)] = GeneratorBlock(nf(r - 2), nf(r - 1))
        self.to_rgb = nn.ModuleDict({str(r): WScaleConv2d(nf(r - 1), num_channels, 1, gain=1.0)
                                     for r in range(2, self.resolution_log2 + 1)})

    def forward(self, z, res_log2, alpha=1.0):
        x = self.blocks["2"](pixel_norm(z))
        previous = None
        for r in range(3, res_log2 + 1):
            previous = x
            x = self.blocks[str(r)](x)
        out = self.to_rgb[str(res_log2)](x)
        if res_log2 > 2 and alpha != 1.0:
            old = F.interpolate(self.to_rgb[str(res_log2 - 1)](previous), scale_factor=2, mode="nearest")
            out = torch.lerp(old, out, alpha)
        return out


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.conv0 = WScaleConv2d(in_channels, in_channels, 3)
        self.conv1_down = WScaleConv2d(in_channels, out_channels, 3)

    def forward(self, x):
        x = F.leaky_relu(self.conv0(x), LRELU_SLOPE)
        return F.leaky_relu(F.avg_pool2d(self.conv1_down(x), 2), LRELU_SLOPE)


class DiscriminatorOutputBlock(nn.Module):
    def __init__(self, channels, hidden, mbstd_group_size=4):
        super().__init__()
        self.mbstd_group_size = mbstd_group_size
        self.conv = WScaleConv2d(channels + 1, channels, 3)
        self.dense0 = WScaleLinear(channels * 16, hidden)
        self.dense1 = WScaleLinear(hidden, 1, gain=1.0)

    def forward(self, x):
        x = minibatch_stddev(x, self.mbstd_group_size)
        x = F.leaky_relu(self.conv(x), LRELU_SLOPE)
        x = F.leaky_relu(self.dense0(x.flatten(1)), LRELU_SLOPE)
        return self.dense1(x)


class Discriminator(nn.Module):
    def __init__(self, resolution, num_channels=3, fmap_base=8192, fmap_max=512, fmap_decay=1.0,
                 mbstd_group_size=4):
        super().__init__()
        self.resolution_log2 = int(math.log2(resolution))

        def nf(stage):
            return num_features(stage, fmap_base, fmap_decay, fmap_max)

        self.from_rgb = nn.ModuleDict({str(r): WScaleConv2d(num_channels, nf(r - 1), 1)
                                       for r in range(2, self.resolution_log2 + 1)})
        self.blocks = nn.ModuleDict({"2": DiscriminatorOutputBlock(nf(1), nf(0), mbstd_group_size)})
        for r in range(3, self.resolution_log2 + 1):
            self.blocks[str(r)] = DiscriminatorBlock(nf(r - 1), nf(r - 2))

    def forward(self, images, res_log2, alpha=1.0):
        x = F.leaky_relu(self.from_rgb[str(res_log2)](images), LRELU_SLOPE)
        if res_log2 > 2:
            x = self.blocks[str(res_log2)](x)
            if alpha != 1.0:
                old = F.leaky_relu(self.from_rgb[str(res_log2 - 1)](F.avg_pool2d(images, 2)), LRELU_SLOPE)
                x = torch.lerp(old, x, alpha)
        for r in range(res_log2 - 1, 2, -1):
            x = self.blocks[str(r)](x)
        return self.blocks["2"](x)


def fade_reals(x, alpha):
    """The reals D sees while fading in a resolution (TF official process_reals, at the current resolution)."""
    return torch.lerp(F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest"), x, alpha)
