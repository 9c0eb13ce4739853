"""Generator output as images: the one [-1, 1] float -> uint8 conversion, and PNG files (single images, grids)."""
import io
import math
import numbers
import os

import numpy as np
import torch

from .fileio import atomic_write


def to_uint8(images):
    """[-1, 1] float -> uint8 like the official Gs.run(out_mul=127.5, out_add=127.5, out_dtype=uint8):
    round half to even, then saturate. Accepts a torch tensor (returned on its device) or a numpy array."""
    if isinstance(images, np.ndarray):
        return np.rint(images.astype(np.float32) * np.float32(127.5) + np.float32(127.5)).clip(0, 255).astype(
            np.uint8)
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor or numpy array; got {type(images).__name__}")
    if not images.is_floating_point():
        raise TypeError(f"images must be floating point in [-1, 1]; got {images.dtype}")
    return torch.round(images.detach().float() * 127.5 + 127.5).clamp_(0, 255).to(torch.uint8)


def _as_uint8_nchw(images):
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu()
        images = (to_uint8(images) if images.is_floating_point() else images).numpy()
    elif isinstance(images, np.ndarray):
        images = to_uint8(images) if images.dtype.kind == "f" else images
    else:
        raise TypeError(f"images must be a torch.Tensor or numpy array; got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 or floating point; got {images.dtype}")
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"images must be N x C x H x W with N >= 1 and C in (1, 3); got shape {images.shape}")
    return images


def _write_png(hwc, path):
    import PIL.Image
    image = PIL.Image.fromarray(np.ascontiguousarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc),
                                "L" if hwc.shape[2] == 1 else "RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, buffer.getvalue())
    return path


def save_image(image, path):
    """Writes one image (C x H x W, uint8 or float in [-1, 1], C = 1 or 3) as a PNG, atomically."""
    images = _as_uint8_nchw(image[None])
    return _write_png(images[0].transpose(1, 2, 0), path)


def save_image_grid(images, path, nrow=None):
    """Writes N images (uint8 in [0, 255] or float in [-1, 1]; NCHW with C = 1 or 3; torch or numpy) as one PNG
    grid with `nrow` images per row (default: a near-square grid). The file appears atomically."""
    images = _as_uint8_nchw(images)
    n, c, h, w = images.shape
    if nrow is None:
        nrow = int(math.ceil(math.sqrt(n)))
    elif isinstance(nrow, bool) or not isinstance(nrow, numbers.Integral) or nrow < 1:
        raise ValueError(f"nrow must be a positive int or None; got {nrow!r}")
    nrow = min(int(nrow), n)
    rows = int(math.ceil(n / nrow))
    grid = np.zeros((rows * h, nrow * w, c), dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = images[i].transpose(1, 2, 0)
    return _write_png(grid, path)
