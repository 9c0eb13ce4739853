"""Fade-in blends: upsample_blend (G's output), downsample_blend, fade_reals (the reals D sees during a fade).

alpha is the weight of the NEW (higher-resolution) path. No fused kernels yet: every backend runs the
progan_fast.reference functions.
"""
from .. import backends, reference
from . import _checks

for _op in ("upsample_blend", "downsample_blend", "fade_reals"):
    backends.register_op(_op, ())


def _pair(low_name, low, high_name, high):
    _checks.tensor(low_name, low, ndims=(4,))
    _checks.tensor(high_name, high, ndims=(4,))
    _checks.nonempty_maps(low_name, low)
    _checks.nonempty_maps(high_name, high)
    low, high = _checks.autocast(high.device.type, low, high)
    _checks.same_device_dtype(low_name, low, high_name, high)
    n, c, h, w = low.shape
    if tuple(high.shape) != (n, c, 2 * h, 2 * w):
        raise ValueError(f"{high_name} must be {low_name} at twice the resolution, shape {(n, c, 2 * h, 2 * w)}; "
                         f"got {high_name} {tuple(high.shape)} and {low_name} {tuple(low.shape)}")
    return low, high


def upsample_blend(low, high, alpha):
    """lerp(nearest_up2(low), high, alpha): low N x C x H x W (old path), high N x C x 2H x 2W (new path)."""
    low, high = _pair("low", low, "high", high)
    alpha = _checks.alpha("alpha", alpha, high.device)
    backends.resolve("upsample_blend", high.device)
    return reference.upsample_blend(low, high, alpha)


def downsample_blend(high, low, alpha):
    """lerp(low, avg_pool2(high), alpha): high N x C x 2H x 2W (new path before its pool), low N x C x H x W."""
    low, high = _pair("low", low, "high", high)
    alpha = _checks.alpha("alpha", alpha, low.device)
    backends.resolve("downsample_blend", low.device)
    return reference.downsample_blend(high, low, alpha)


def fade_reals(x, alpha):
    """lerp(nearest_up2(avg_pool2(x)), x, alpha) for N x C x H x W reals with even H and W."""
    _checks.tensor("x", x, ndims=(4,))
    _checks.nonempty_maps("x", x)
    (x,) = _checks.autocast(x.device.type, x)
    if x.shape[2] % 2 or x.shape[3] % 2:
        raise ValueError(f"x must have even height and width (it is 2x2 box-filtered); got shape {tuple(x.shape)}")
    alpha = _checks.alpha("alpha", alpha, x.device)
    backends.resolve("fade_reals", x.device)
    return reference.fade_reals(x, alpha)
