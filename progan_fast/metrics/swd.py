"""Sliced Wasserstein distance between Laplacian-pyramid patch distributions, the ProGAN paper's metric, following
the official implementation (metrics/sliced_wasserstein.py of tkarras/progressive_growing_of_gans) step by step:

1. uint8 RGB images (grayscale tiled to 3 channels), float32 on the 0..255 scale.
2. Levels from the full resolution halving down to `min_resolution` (16): a Laplacian pyramid with OpenCV's
   pyrDown / pyrUp semantics -- 5x5 binomial kernel / 256, 'mirror' borders (reflect, edge not repeated),
   pyrDown keeps [::2, ::2], pyrUp inserts zeros and convolves with 4x the kernel. level_i = G_i - pyrUp(G_i+1);
   the last level is the Gaussian low-pass G itself.
3. `num_patches` random 7x7 neighbourhoods per image and level, centres uniform in [3, S-4] (x and y drawn
   independently), each a 3x7x7 = 147-d descriptor.
4. Per level, each set (reals, fakes) normalised with its own per-colour-channel mean and std over
   (descriptors x 7 x 7).
5. `dir_repeats` x `dirs_per_repeat` random unit directions; project both sets, sort each direction, mean
   |a - b|; averaged over repeats, x 1e3 per level, plus the mean over levels.

All randomness comes from one torch.Generator seeded with `seed` (the official code uses numpy's global state), so
values are reproducible but not bit-identical to the TF run's draws.
"""
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ._images import uint8_images

_BINOMIAL = (1.0, 4.0, 6.0, 4.0, 1.0)


def _kernel(channels, scale, device):
    k1 = torch.tensor(_BINOMIAL, dtype=torch.float32, device=device)
    k2 = torch.outer(k1, k1) * (scale / 256.0)
    return k2.expand(channels, 1, 5, 5).contiguous()


def pyr_down(x):
    """cv2.pyrDown on float32 N x C x H x W: binomial blur with mirror borders, then [::2, ::2]."""
    c = x.shape[1]
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), _kernel(c, 1.0, x.device), stride=2, groups=c)


def pyr_up(x):
    """cv2.pyrUp on float32 N x C x H x W: zero insertion to 2H x 2W, then 4x the binomial blur, mirror borders."""
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, 2 * h, 2 * w)
    z[:, :, ::2, ::2] = x
    return F.conv2d(F.pad(z, (2, 2, 2, 2), mode="reflect"), _kernel(c, 4.0, x.device), groups=c)


def laplacian_pyramid(x, num_levels):
    """[band_0 (full res), ..., band_{L-2}, gaussian_{L-1}] of float32 N x C x H x W."""
    levels = [x]
    for _ in range(1, num_levels):
        levels.append(pyr_down(levels[-1]))
        levels[-2] = levels[-2] - pyr_up(levels[-1])
    return levels


def _as_uint8_images(name, images):
    images = uint8_images(name, images, channels=(1, 3))
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")
    return int(value)


def _descriptors(images, level, num_levels, num_patches, patch_size, generator, chunk):
    """num_images*num_patches x 3 x patch_size x patch_size float32 descriptors of one pyramid level."""
    half = patch_size // 2
    n = images.shape[0]
    out = []
    for start in range(0, n, chunk):
        x = images[start:start + chunk].to(torch.float32)
        # The pyramid is recomputed per level (only down to level+1) so that only one level's descriptors, not
        # all of them, are held in memory at a time (75 KB per image per level and set at the defaults).
        gauss = x
        for _ in range(level):
            gauss = pyr_down(gauss)
        band = gauss
        if level < num_levels - 1:
            band = gauss - pyr_up(pyr_down(gauss))
        b, c, h, w = band.shape
        xs = torch.randint(half, w - half, (b, num_patches), generator=generator)
        ys = torch.randint(half, h - half, (b, num_patches), generator=generator)
        offs = torch.arange(-half, half + 1)
        rows = (ys[:, :, None] + offs)[:, :, :, None]
        cols = (xs[:, :, None] + offs)[:, :, None, :]
        lin = (rows * w + cols).reshape(b, 1, -1).to(band.device).expand(b, c, -1)
        desc = band.reshape(b, c, h * w).gather(2, lin)
        out.append(desc.reshape(b, c, num_patches, patch_size, patch_size).transpose(1, 2)
                   .reshape(b * num_patches, c, patch_size, patch_size))
    return torch.cat(out)


def _normalize(desc):
    var, mean = torch.var_mean(desc, dim=(0, 2, 3), correction=0, keepdim=True)
    std = var.sqrt()
    # A constant channel (e.g. an all-black set) has std 0; its centred values are exactly 0, so keep them 0.
    std = torch.where(std > 0, std, torch.ones_like(std))
    return ((desc - mean) / std).reshape(desc.shape[0], -1)


def _swd(a, b, dir_repeats, dirs_per_repeat, generator, use_numpy, dir_chunk=32):
    """Mean |sorted projections of a - sorted projections of b| over random unit directions, averaged over
    repeats; a, b: M x D descriptors. The directions come from `generator` in the same order on every path."""
    num, dim = a.shape
    if use_numpy:
        # On CPU numpy's sort is several times faster than torch's for these shapes.
        a, b = a.numpy().T, b.numpy().T
    results = []
    for _ in range(dir_repeats):
        dirs = torch.randn(dirs_per_repeat, dim, generator=generator, dtype=torch.float64)
        dirs = (dirs / dirs.square().sum(1, keepdim=True).sqrt()).to(torch.float32)
        total = 0.0
        # A few directions at a time bound the memory of the projected, sorted copies.
        for j in range(0, dirs_per_repeat, dir_chunk):
            d = dirs[j:j + dir_chunk]
            if use_numpy:
                d = d.numpy()
                diff = np.sort(d @ a, axis=1) - np.sort(d @ b, axis=1)
                total += float(np.abs(diff).sum(dtype=np.float64))
            else:
                d = d.to(a.device)
                diff = torch.sort(d @ a.T, dim=1).values - torch.sort(d @ b.T, dim=1).values
                total += diff.abs().sum(dtype=torch.float64).item()
        results.append(total / (num * dirs_per_repeat))
    return float(np.mean(results))


def sliced_wasserstein(reals, fakes, num_patches=128, patch_size=7, dir_repeats=4, dirs_per_repeat=128,
                       min_resolution=16, seed=0):
    """SWD x 1e3 between two equally sized sets of uint8 N x C x H x W images (torch or numpy; C = 1 or 3; on the
    CPU or one CUDA device): {resolution: value for each level from H down to min_resolution, "avg": mean}.
    Lower is closer; a real-vs-real baseline is sliced_wasserstein(reals_a, reals_b)."""
    reals = _as_uint8_images("reals", reals)
    fakes = _as_uint8_images("fakes", fakes)
    if reals.shape != fakes.shape:
        raise ValueError(f"reals and fakes must have the same shape (the metric compares equally many patches); "
                         f"got {tuple(reals.shape)} and {tuple(fakes.shape)}")
    if reals.device != fakes.device:
        raise ValueError(f"reals is on {reals.device} but fakes is on {fakes.device}")
    num_patches = _positive_int("num_patches", num_patches)
    patch_size = _positive_int("patch_size", patch_size)
    if patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd; got {patch_size}")
    dir_repeats = _positive_int("dir_repeats", dir_repeats)
    dirs_per_repeat = _positive_int("dirs_per_repeat", dirs_per_repeat)
    min_resolution = _positive_int("min_resolution", min_resolution)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int; got {type(seed).__name__}")
    h, w = reals.shape[2:]
    if h != w:
        raise ValueError(f"reals and fakes must be square; got {h}x{w}")
    if min_resolution <= patch_size or h < min_resolution:
        raise ValueError(f"min_resolution must exceed patch_size ({patch_size}) and be <= the image size ({h}); "
                         f"got {min_resolution}")
    resolutions = []
    res = h
    while res >= min_resolution:
        resolutions.append(res)
        res //= 2
    if any(r % 2 for r in resolutions[:-1]):
        raise ValueError(f"image size {h} cannot be halved exactly down to min_resolution {min_resolution}")

    generator = torch.Generator().manual_seed(int(seed))
    # About 64M float32 per chunk of images in the pyramid.
    chunk = max(1, (1 << 24) // (3 * h * w))
    dist = {}
    with torch.no_grad():
        for level, res in enumerate(resolutions):
            da = _normalize(_descriptors(reals, level, len(resolutions), num_patches, patch_size, generator, chunk))
            db = _normalize(_descriptors(fakes, level, len(resolutions), num_patches, patch_size, generator, chunk))
            dist[res] = _swd(da, db, dir_repeats, dirs_per_repeat, generator, da.device.type == "cpu") * 1e3
            del da, db
    dist["avg"] = float(np.mean([dist[r] for r in resolutions]))
    return dist
