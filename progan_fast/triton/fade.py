"""The fade-in blends in Triton: kernels of progan_fast_triton::{upsample_blend_forward, upsample_blend_backward,
fade_reals_forward, fade_from_rgb_forward, fade_from_rgb_backward} (schemas, fakes and autograd:
progan_fast/ops/{blend,fade_from_rgb}.py, like every family's).

Layouts follow the C++ ops' rule (progan_fast/ops/blend.py, csrc/common/fade_operands.h): the big tensor of each op
decides, channels_last is used as it is, anything else is made contiguous, the other operands are laid out alike.
Tensors are then rows of `row` values (a channel's pixels for NCHW, a pixel's channels for channels_last, `vec`
values per pixel). alpha is read from a 0-dim tensor on the device in the math dtype (float32, float64 for
float64), so a scheduled alpha never recompiles; a CPU alpha is checked on the host first.
  upsample_blend forward:   a program per BLOCK high values: y = lerp(the low value above, high, alpha).
  upsample_blend backward:  a program per BLOCK low values, looping over the factor x factor window: grad_high =
                            alpha * g written, grad_low = (1 - alpha) * the window's sum.
  fade_reals:               a program per BLOCK 2x2 blocks of one channel: their mean, blended with each value.
  fade_from_rgb:            a program per BLOCK_P feature pixels: the pixels' 2x2 image sums as a [BLOCK_K, BLOCK_P]
                            tile (BLOCK_K >= C_img), then the channels in [BLOCK_C, BLOCK_P] tiles, z from a
                            [BLOCK_C, BLOCK_K, BLOCK_P] product summed over k. The backward also sums, in the same
                            pass, W^T dz per pixel (the image gradient, written at the end) and dz, dz * pool per
                            channel into the program's partial sums [programs, C, C_img + 1], added on the host.
"""
import contextlib
import math
import os

import torch
import triton
import triton.language as tl

from .. import _layout, _library
from . import aot

NAMESPACE = _library.NAMESPACES["triton"]
NUM_WARPS = 4
BLOCK = 1024
# fade_from_rgb: pixels per program and elements of the [BLOCK_C, BLOCK_K, BLOCK_P] product.
BLOCK_P = 32
PRODUCT = 4096


@triton.jit
def _lerp(a, b, alpha):
    """torch.lerp's formula: exact at both ends."""
    return tl.where(alpha < 0.5, a + alpha * (b - a), b - (b - a) * (1.0 - alpha))


@triton.jit
def _joined(hi, lo, acc_ty: tl.constexpr):
    """A python float passed as two float32 halves (see _split), in the math dtype."""
    return tl.cast(hi, acc_ty) + tl.cast(lo, acc_ty)


@triton.jit
def upsample_blend_forward_kernel(low_ptr, high_ptr, y_ptr, alpha_ptr, numel, high_row, low_row, vec, factor,
                                  BLOCK: tl.constexpr):
    acc_ty = alpha_ptr.dtype.element_ty
    i = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = i < numel
    r = i // high_row
    j = i - r * high_row
    x = j // vec
    low = (r // factor) * low_row + (x // factor) * vec + (j - x * vec)
    a = tl.load(alpha_ptr)
    lv = tl.load(low_ptr + low, mask=mask, other=0.0).to(acc_ty)
    hv = tl.load(high_ptr + i, mask=mask, other=0.0).to(acc_ty)
    tl.store(y_ptr + i, _lerp(lv, hv, a).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def upsample_blend_backward_kernel(g_ptr, grad_low_ptr, grad_high_ptr, alpha_ptr, low_numel, low_row, high_row, vec,
                                   factor, BLOCK: tl.constexpr):
    acc_ty = alpha_ptr.dtype.element_ty
    item = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = item < low_numel
    row = item // low_row
    j = item - row * low_row
    x = j // vec
    base = row * factor * high_row + x * factor * vec + (j - x * vec)
    a = tl.load(alpha_ptr)
    total = tl.zeros([BLOCK], dtype=acc_ty)
    for t in range(0, factor * factor):
        ty = t // factor
        off = base + ty * high_row + (t - ty * factor) * vec
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(acc_ty)
        tl.store(grad_high_ptr + off, (a * g).to(grad_high_ptr.dtype.element_ty), mask=mask)
        total += g
    tl.store(grad_low_ptr + item, ((1.0 - a) * total).to(grad_low_ptr.dtype.element_ty), mask=mask)


@triton.jit
def fade_reals_kernel(x_ptr, y_ptr, alpha_ptr, items, width, vec, BLOCK: tl.constexpr):
    acc_ty = alpha_ptr.dtype.element_ty
    item = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = item < items
    per_pair = (width // 2) * vec
    row = width * vec
    pair = item // per_pair
    j = item - pair * per_pair
    bx = j // vec
    top = 2 * pair * row + 2 * bx * vec + (j - bx * vec)
    v0 = tl.load(x_ptr + top, mask=mask, other=0.0).to(acc_ty)
    v1 = tl.load(x_ptr + top + vec, mask=mask, other=0.0).to(acc_ty)
    v2 = tl.load(x_ptr + top + row, mask=mask, other=0.0).to(acc_ty)
    v3 = tl.load(x_ptr + top + row + vec, mask=mask, other=0.0).to(acc_ty)
    mean = ((v0 + v1) + (v2 + v3)) * 0.25
    a = tl.load(alpha_ptr)
    out_ty = y_ptr.dtype.element_ty
    tl.store(y_ptr + top, _lerp(mean, v0, a).to(out_ty), mask=mask)
    tl.store(y_ptr + top + vec, _lerp(mean, v1, a).to(out_ty), mask=mask)
    tl.store(y_ptr + top + row, _lerp(mean, v2, a).to(out_ty), mask=mask)
    tl.store(y_ptr + top + row + vec, _lerp(mean, v3, a).to(out_ty), mask=mask)


@triton.jit
def _from_rgb_tiles(img_ptr, pid, pixels, plane, width, image_channels, fs_n, fs_h, fs_w, is_n, is_c, is_h, is_w,
                    acc_ty: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """The program's pixels: their feature offsets (channel 0), image offsets (channel 0, top-left), masks, and
    their 2x2 image sums [BLOCK_K, BLOCK_P]."""
    pix = pid.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    pmask = pix < pixels
    s = pix // plane
    p = pix - s * plane
    y = p // width
    x = p - y * width
    fbase = s * fs_n + y * fs_h + x * fs_w
    ibase = s * is_n + 2 * y * is_h + 2 * x * is_w
    k = tl.arange(0, BLOCK_K)
    kmask = k < image_channels
    ioff = ibase[None, :] + k.to(tl.int64)[:, None] * is_c
    imask = kmask[:, None] & pmask[None, :]
    pool = (tl.load(img_ptr + ioff, mask=imask, other=0.0).to(acc_ty)
            + tl.load(img_ptr + ioff + is_w, mask=imask, other=0.0).to(acc_ty)) \
        + (tl.load(img_ptr + ioff + is_h, mask=imask, other=0.0).to(acc_ty)
           + tl.load(img_ptr + ioff + is_h + is_w, mask=imask, other=0.0).to(acc_ty))
    return fbase, pmask, ioff, imask, k, kmask, pool


@triton.jit
def _from_rgb_z(w_ptr, b_ptr, pool, c, cmask, k, kmask, image_channels, weight_scale, bias_gain,
                acc_ty: tl.constexpr):
    """z [BLOCK_C, BLOCK_P] of channels c, and the channels' weights [BLOCK_C, BLOCK_K]."""
    w = tl.load(w_ptr + c[:, None] * image_channels + k[None, :], mask=cmask[:, None] & kmask[None, :],
                other=0.0).to(acc_ty)
    b = tl.load(b_ptr + c, mask=cmask, other=0.0).to(acc_ty)
    z = weight_scale * tl.sum(w[:, :, None] * pool[None, :, :], axis=1) + bias_gain * b[:, None]
    return z, w


@triton.jit
def fade_from_rgb_forward_kernel(img_ptr, new_ptr, w_ptr, b_ptr, alpha_ptr, y_ptr, pixels, plane, width, channels,
                                 image_channels, fs_n, fs_c, fs_h, fs_w, is_n, is_c, is_h, is_w, scale_hi, scale_lo,
                                 bias_gain_hi, bias_gain_lo, slope_hi, slope_lo, BLOCK_P: tl.constexpr,
                                 BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    acc_ty = alpha_ptr.dtype.element_ty
    weight_scale = _joined(scale_hi, scale_lo, acc_ty) * 0.25
    bias_gain = _joined(bias_gain_hi, bias_gain_lo, acc_ty)
    slope = _joined(slope_hi, slope_lo, acc_ty)
    fbase, pmask, ioff, imask, k, kmask, pool = _from_rgb_tiles(
        img_ptr, tl.program_id(0), pixels, plane, width, image_channels, fs_n, fs_h, fs_w, is_n, is_c, is_h, is_w,
        acc_ty, BLOCK_P, BLOCK_K)
    a = tl.load(alpha_ptr)
    for c0 in range(0, channels, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < channels
        z, w = _from_rgb_z(w_ptr, b_ptr, pool, c, cmask, k, kmask, image_channels, weight_scale, bias_gain, acc_ty)
        old = tl.where(z > 0, z, z * slope)
        off = fbase[None, :] + c.to(tl.int64)[:, None] * fs_c
        mask = cmask[:, None] & pmask[None, :]
        v = tl.load(new_ptr + off, mask=mask, other=0.0).to(acc_ty)
        tl.store(y_ptr + off, _lerp(old, v, a).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def fade_from_rgb_backward_kernel(img_ptr, g_ptr, w_ptr, b_ptr, alpha_ptr, grad_new_ptr, grad_images_ptr,
                                  partials_ptr, pixels, plane, width, channels, image_channels, fs_n, fs_c, fs_h, fs_w,
                                  is_n, is_c, is_h, is_w, scale_hi, scale_lo, bias_gain_hi, bias_gain_lo, slope_hi,
                                  slope_lo, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    acc_ty = alpha_ptr.dtype.element_ty
    weight_scale = _joined(scale_hi, scale_lo, acc_ty) * 0.25
    bias_gain = _joined(bias_gain_hi, bias_gain_lo, acc_ty)
    slope = _joined(slope_hi, slope_lo, acc_ty)
    pid = tl.program_id(0)
    fbase, pmask, ioff, imask, k, kmask, pool = _from_rgb_tiles(
        img_ptr, pid, pixels, plane, width, image_channels, fs_n, fs_h, fs_w, is_n, is_c, is_h, is_w, acc_ty, BLOCK_P,
        BLOCK_K)
    a = tl.load(alpha_ptr)
    up = 1.0 - a
    grad_pool = tl.zeros([BLOCK_K, BLOCK_P], dtype=acc_ty)
    partials = partials_ptr + pid.to(tl.int64) * channels * (image_channels + 1)
    for c0 in range(0, channels, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < channels
        z, w = _from_rgb_z(w_ptr, b_ptr, pool, c, cmask, k, kmask, image_channels, weight_scale, bias_gain, acc_ty)
        off = fbase[None, :] + c.to(tl.int64)[:, None] * fs_c
        mask = cmask[:, None] & pmask[None, :]
        g = tl.load(g_ptr + off, mask=mask, other=0.0).to(acc_ty)
        tl.store(grad_new_ptr + off, (a * g).to(grad_new_ptr.dtype.element_ty), mask=mask)
        dz = tl.where(z > 0, up, up * slope) * g
        grad_pool += tl.sum(w[:, :, None] * dz[:, None, :], axis=0)
        row = partials + c[:, None] * (image_channels + 1)
        tl.store(row + k[None, :], tl.sum(dz[:, None, :] * pool[None, :, :], axis=2),
                 mask=cmask[:, None] & kmask[None, :])
        tl.store(partials + c * (image_channels + 1) + image_channels, tl.sum(dz, axis=1), mask=cmask)
    value = (weight_scale * grad_pool).to(grad_images_ptr.dtype.element_ty)
    tl.store(grad_images_ptr + ioff, value, mask=imask)
    tl.store(grad_images_ptr + ioff + is_w, value, mask=imask)
    tl.store(grad_images_ptr + ioff + is_h, value, mask=imask)
    tl.store(grad_images_ptr + ioff + is_h + is_w, value, mask=imask)


# ---- host side ----

def _interpreted():
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_device(x):
    if x.device.type != "cuda" and not _interpreted():
        raise RuntimeError(f"{NAMESPACE} fade kernels run on CUDA tensors (CPU tensors only under TRITON_INTERPRET=1); "
                           f"got a tensor on {x.device}")


def _device_scope(x):
    return torch.cuda.device(x.device) if x.device.type == "cuda" else contextlib.nullcontext()


def _alpha(alpha, like):
    """alpha on like's device in the math dtype; a CPU alpha is checked first (a device one would need a sync)."""
    if alpha.device.type == "cpu":
        value = float(alpha)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise ValueError(f"alpha must be finite and in [0, 1]; got {value}")
    return alpha.to(device=like.device, dtype=_layout.stat_dtype(like.dtype))


def _split(value):
    """A python float as float32 hi + lo: Triton passes python floats as float32, float64 inputs need more."""
    hi = float(torch.tensor(value, dtype=torch.float32))
    return hi, float(value) - hi


def _dense(t, like):
    return t.contiguous(memory_format=_layout.memory_format(like))


def _vec(x):
    """Values per pixel along a row of x laid out as the kernels lay it out: its channels (channels_last) or 1."""
    return x.shape[1] if _layout.is_channels_last(x) else 1


def _empty(shape, like):
    return torch.empty(shape, dtype=like.dtype, device=like.device, memory_format=_layout.memory_format(like))


@_library.register_kernel("triton", "upsample_blend_forward", ("cuda", "cpu"))
def upsample_blend_forward(low, high, alpha, factor):
    _check_device(high)
    high_d = _dense(high, high)
    low_d = _dense(low, high)
    y = _empty(high.shape, high)
    a = _alpha(alpha, high)
    if y.numel() > 0:
        vec, width = _vec(high), low.shape[3]
        with _device_scope(high):
            upsample_blend_forward_kernel[(triton.cdiv(y.numel(), BLOCK),)](
                low_d, high_d, y, a, y.numel(), width * factor * vec, width * vec, vec, factor, BLOCK=BLOCK,
                num_warps=NUM_WARPS)
    return y


@_library.register_kernel("triton", "upsample_blend_backward", ("cuda", "cpu"))
def upsample_blend_backward(grad_y, alpha, factor):
    _check_device(grad_y)
    g = _dense(grad_y, grad_y)
    n, c, h, w = grad_y.shape
    grad_low = _empty((n, c, h // factor, w // factor), grad_y)
    grad_high = _empty(grad_y.shape, grad_y)
    a = _alpha(alpha, grad_y)
    if grad_low.numel() > 0:
        vec, low_width = _vec(grad_y), w // factor
        with _device_scope(grad_y):
            upsample_blend_backward_kernel[(triton.cdiv(grad_low.numel(), BLOCK),)](
                g, grad_low, grad_high, a, grad_low.numel(), low_width * vec, w * vec, vec, factor, BLOCK=BLOCK,
                num_warps=NUM_WARPS)
    return grad_low, grad_high


@_library.register_kernel("triton", "fade_reals_forward", ("cuda", "cpu"))
def fade_reals_forward(x, alpha):
    _check_device(x)
    xd = _dense(x, x)
    y = _empty(x.shape, x)
    a = _alpha(alpha, x)
    if y.numel() > 0:
        width, vec, items = x.shape[3], _vec(x), y.numel() // 4
        with _device_scope(x):
            fade_reals_kernel[(triton.cdiv(items, BLOCK),)](xd, y, a, items, width, vec, BLOCK=BLOCK,
                                                           num_warps=NUM_WARPS)
    return y


def from_rgb_meta(image_channels, channels):
    block_k = triton.next_power_of_2(max(image_channels, 1))
    block_c = max(1, min(triton.next_power_of_2(max(channels, 1)), PRODUCT // (block_k * BLOCK_P)))
    return dict(BLOCK_P=BLOCK_P, BLOCK_C=block_c, BLOCK_K=block_k)


def _from_rgb_args(images, main, scale, bias_gain, negative_slope):
    """Dense operands in main's layout and the kernels' shape, stride and scalar arguments."""
    n, c, h, w = main.shape
    main_d = _dense(main, main)
    images_d = _dense(images, main)
    fs_n, fs_c, fs_h, fs_w = main_d.stride()
    is_n, is_c, is_h, is_w = images_d.stride()
    args = dict(pixels=n * h * w, plane=h * w, width=w, channels=c, image_channels=images.shape[1], fs_n=fs_n,
                fs_c=fs_c, fs_h=fs_h, fs_w=fs_w, is_n=is_n, is_c=is_c, is_h=is_h, is_w=is_w)
    for name, value in (("scale", scale), ("bias_gain", bias_gain), ("slope", negative_slope)):
        args[f"{name}_hi"], args[f"{name}_lo"] = _split(value)
    return main_d, images_d, args


@_library.register_kernel("triton", "fade_from_rgb_forward", ("cuda", "cpu"))
def fade_from_rgb_forward(images, new, weight, bias, alpha, scale, bias_gain, negative_slope):
    _check_device(new)
    new_d, images_d, args = _from_rgb_args(images, new, scale, bias_gain, negative_slope)
    y = _empty(new.shape, new)
    a = _alpha(alpha, new)
    if y.numel() > 0:
        meta = from_rgb_meta(images.shape[1], new.shape[1])
        with _device_scope(new):
            fade_from_rgb_forward_kernel[(triton.cdiv(args["pixels"], BLOCK_P),)](
                images_d, new_d, weight.contiguous(), bias.contiguous(), a, y, **args, **meta, num_warps=NUM_WARPS)
    return y


@_library.register_kernel("triton", "fade_from_rgb_backward", ("cuda", "cpu"))
def fade_from_rgb_backward(grad_y, images, weight, bias, alpha, scale, bias_gain, negative_slope):
    _check_device(grad_y)
    g, images_d, args = _from_rgb_args(images, grad_y, scale, bias_gain, negative_slope)
    grad_new = _empty(grad_y.shape, grad_y)
    grad_images = _empty(images.shape, grad_y)
    a = _alpha(alpha, grad_y)
    c, c_img = grad_y.shape[1], images.shape[1]
    if grad_y.numel() == 0:
        return grad_images.zero_(), grad_new, torch.zeros_like(weight), torch.zeros_like(bias)
    programs = triton.cdiv(args["pixels"], BLOCK_P)
    partials = torch.empty(programs, c, c_img + 1, dtype=a.dtype, device=grad_y.device)
    with _device_scope(grad_y):
        fade_from_rgb_backward_kernel[(programs,)](
            images_d, g, weight.contiguous(), bias.contiguous(), a, grad_new, grad_images, partials, **args,
            **from_rgb_meta(c_img, c), num_warps=NUM_WARPS)
    sums = partials.sum(0)
    grad_weight = (sums[:, :c_img] * (scale * 0.25)).to(weight.dtype).reshape(weight.shape)
    grad_bias = (sums[:, c_img] * bias_gain).to(bias.dtype)
    return grad_images, grad_new, grad_weight, grad_bias


def aot_cases():
    """AOT cases (see aot.cases): every kernel, every dtype; fade_from_rgb for RGB and C_img = 5, both layouts."""
    cases = []
    for dtype, ptr in aot.POINTER_TYPES.items():
        acc = aot.POINTER_TYPES[_layout.stat_dtype(dtype)]
        label = ptr[1:]
        ints = dict(numel=16 * 3 * 64 * 64, high_row=64, low_row=32, vec=1, factor=2)
        cases.append((f"upsample_blend_forward[{label}]", upsample_blend_forward_kernel,
                      *aot.specialize(upsample_blend_forward_kernel,
                                      {"low_ptr": ptr, "high_ptr": ptr, "y_ptr": ptr, "alpha_ptr": acc}, ints,
                                      dict(BLOCK=BLOCK)), NUM_WARPS))
        ints = dict(low_numel=16 * 32 * 32 * 3, low_row=96, high_row=192, vec=3, factor=2)
        cases.append((f"upsample_blend_backward[{label}]", upsample_blend_backward_kernel,
                      *aot.specialize(upsample_blend_backward_kernel,
                                      {"g_ptr": ptr, "grad_low_ptr": ptr, "grad_high_ptr": ptr, "alpha_ptr": acc},
                                      ints, dict(BLOCK=BLOCK)), NUM_WARPS))
        cases.append((f"fade_reals[{label}]", fade_reals_kernel,
                      *aot.specialize(fade_reals_kernel, {"x_ptr": ptr, "y_ptr": ptr, "alpha_ptr": acc},
                                      dict(items=16 * 3 * 32 * 32, width=64, vec=3), dict(BLOCK=BLOCK)), NUM_WARPS))
        for c, c_img, memory_format in ((256, 3, torch.contiguous_format), (128, 3, torch.channels_last),
                                        (64, 5, torch.contiguous_format)):
            new = torch.empty(16, c, 32, 32, device="meta").contiguous(memory_format=memory_format)
            images = torch.empty(16, c_img, 64, 64, device="meta")
            _, _, args = _from_rgb_args(images, new, 0.8, 1.0, 0.2)
            meta = from_rgb_meta(c_img, c)
            layout = "channels_last" if memory_format == torch.channels_last else "nchw"
            tag = f"{label}-C{c}-Cimg{c_img}-{layout}"
            pointers = {"img_ptr": ptr, "new_ptr": ptr, "w_ptr": ptr, "b_ptr": ptr, "alpha_ptr": acc, "y_ptr": ptr}
            cases.append((f"fade_from_rgb_forward[{tag}]", fade_from_rgb_forward_kernel,
                          *aot.specialize(fade_from_rgb_forward_kernel, pointers, args, meta), NUM_WARPS))
            pointers = {"img_ptr": ptr, "g_ptr": ptr, "w_ptr": ptr, "b_ptr": ptr, "alpha_ptr": acc,
                        "grad_new_ptr": ptr, "grad_images_ptr": ptr, "partials_ptr": acc}
            cases.append((f"fade_from_rgb_backward[{tag}]", fade_from_rgb_backward_kernel,
                          *aot.specialize(fade_from_rgb_backward_kernel, pointers, args, meta), NUM_WARPS))
    return cases
