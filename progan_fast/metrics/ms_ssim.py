"""MS-SSIM between consecutive image pairs, the diversity measure of the ProGAN paper, following the official
metrics/ms_ssim.py (itself the TensorFlow models' msssim.py after Wang et al. 2003):

- pairs images[0::2] with images[1::2]; lower means more varied;
- 5 scales with weights [0.0448, 0.2856, 0.3001, 0.2363, 0.1333] (they do not sum to 1; as in the paper);
- per scale, a Gaussian window of size min(11, H, W) with sigma 1.5 * size / 11 (MATLAB fspecial, 'valid'
  convolution), k1 = 0.01, k2 = 0.03, max_val = 255; 2x2 box downsampling between scales;
- ssim and cs means per image clipped at 0; score = prod_{i<5} cs_i^w_i * ssim_5^w_5, averaged over pairs.
Computed in float64 (the official one uses FFT convolution in float64).
"""
import numbers

import numpy as np
import torch
import torch.nn.functional as F

from ._images import uint8_images

WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_window_1d(size, sigma):
    """1-D factor of MATLAB's fspecial('gaussian', size, sigma): the 2-D window, normalised to sum 1, is the outer
    product of this with itself (even sizes are centred between pixels)."""
    radius = size // 2
    offset = 0.5 if size % 2 == 0 else 0.0
    stop = radius + 1 - (1 if size % 2 == 0 else 0)
    coords = np.arange(-radius, stop, dtype=np.float64) + offset
    g = np.exp(-coords ** 2 / (2.0 * sigma ** 2))
    return g / g.sum()


def _ssim_cs(a, b, max_val, filter_size, filter_sigma, k1, k2):
    """Per-image mean SSIM and contrast-structure terms of float64 N x C x H x W pairs."""
    n, c, h, w = a.shape
    size = min(filter_size, h, w)
    sigma = size * filter_sigma / filter_size
    g = torch.from_numpy(_gaussian_window_1d(size, sigma)).to(a.device)
    g_rows, g_cols = g.view(1, 1, size, 1), g.view(1, 1, 1, size)

    def blur(x):
        # Separable 'valid' convolution, every channel as its own single-channel image.
        y = F.conv2d(F.conv2d(x.reshape(n * c, 1, x.shape[2], x.shape[3]), g_rows), g_cols)
        return y.reshape(n, c, y.shape[2], y.shape[3])

    mu1, mu2 = blur(a), blur(b)
    mu11, mu22, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    sigma11 = blur(a * a) - mu11
    sigma22 = blur(b * b) - mu22
    sigma12 = blur(a * b) - mu12
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    v1 = 2.0 * sigma12 + c2
    v2 = sigma11 + sigma22 + c2
    ssim = (((2.0 * mu12 + c1) * v1) / ((mu11 + mu22 + c1) * v2)).mean(dim=(1, 2, 3))
    cs = (v1 / v2).mean(dim=(1, 2, 3))
    return ssim, cs


def _box_down(x):
    return (x[:, :, 0::2, 0::2] + x[:, :, 1::2, 0::2] + x[:, :, 0::2, 1::2] + x[:, :, 1::2, 1::2]) * 0.25


def ms_ssim_pairs(img1, img2, max_val=255.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03,
                  weights=WEIGHTS):
    """MS-SSIM of each pair (img1[i], img2[i]) of float N x C x H x W tensors on the 0..max_val scale: N scores."""
    weights = torch.tensor(weights, dtype=torch.float64)
    a, b = img1.to(torch.float64), img2.to(torch.float64)
    mssim, mcs = [], []
    for i in range(len(weights)):
        ssim, cs = _ssim_cs(a, b, max_val, filter_size, filter_sigma, k1, k2)
        mssim.append(ssim)
        mcs.append(cs)
        if i < len(weights) - 1:
            a, b = _box_down(a), _box_down(b)
    mssim = torch.stack(mssim).clamp_min(0.0).cpu()
    mcs = torch.stack(mcs).clamp_min(0.0).cpu()
    return torch.prod(mcs[:-1] ** weights[:-1, None], dim=0) * mssim[-1] ** weights[-1]


def ms_ssim(images, chunk_size=256):
    """Mean MS-SSIM over the pairs (images[0::2], images[1::2]) of uint8 N x C x H x W images (torch or numpy;
    N even; H and W >= 16 so that five scales exist)."""
    images = uint8_images("images", images)
    n, _, h, w = images.shape
    if n < 2 or n % 2:
        raise ValueError(f"images must hold a positive even number of images (they are compared in pairs); got {n}")
    scales = len(WEIGHTS)
    if h % 2 ** (scales - 1) or w % 2 ** (scales - 1):
        raise ValueError(f"images must be at least 16x16 with sides divisible by 16 for {scales} scales; "
                         f"got {h}x{w}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int; got {chunk_size!r}")
    first, second = images[0::2], images[1::2]
    scores = []
    with torch.no_grad():
        for start in range(0, first.shape[0], int(chunk_size)):
            scores.append(ms_ssim_pairs(first[start:start + chunk_size], second[start:start + chunk_size]))
    return float(torch.cat(scores).mean())
