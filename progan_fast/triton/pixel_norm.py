"""Pixel norm in Triton: the kernels of progan_fast_triton::pixel_norm_{forward,backward} (schemas, fakes and
autograd: progan_fast/ops/pixel_norm.py, like every family's).

Each program owns a [BLOCK_C, BLOCK_P] tile: BLOCK_P reductions ("pixels") and a chunk of their channels.
Addresses are base(o) + p * stride_p + c * stride_c, so one kernel serves both layouts:
  rows   (reduced dim contiguous: channels_last, latents): stride_c == 1, the tile is read along channels;
  planes (NCHW): stride_p == 1, the tile is read along pixels, every channel a coalesced row.
When all channels fit in one chunk the tile is loaded once; otherwise a first pass accumulates and a second
re-reads (from L2: a program's slice is kept small) to write. Math is in float32 (float64 for float64 inputs): the rsqrt tensor's dtype.
"""
import torch
import triton
import triton.language as tl

from .. import _library
from . import aot
from ._common import check_device, device_scope, reduction_aot_inputs, split_float
from .._layout import reduction_output_format, stat_dtype

# Elements per tile: 8 per thread at 8 warps, so a one-pass tile stays in registers (about 60 per thread on
# sm_90, backward included) with room for 4 programs per SM.
TILE = 2048
NUM_WARPS = 8
# Planes layout: channels are read in one pass when a tile can still span this many pixels (a 32-byte sector of
# float32 per channel); wider reductions take two passes over BLOCK_P = 32 pixels, a slice small enough per
# program that the second pass re-reads it from L2.
MIN_PLANE_PIXELS = 8


@triton.jit
def _tile_offsets(pid, num_p_blocks, P, stride_o, stride_p, BLOCK_P: tl.constexpr):
    o = pid // num_p_blocks
    p = (pid % num_p_blocks) * BLOCK_P + tl.arange(0, BLOCK_P)
    base = o.to(tl.int64) * stride_o + p.to(tl.int64)[None, :] * stride_p
    return base, o.to(tl.int64) * P + p, p < P


@triton.jit
def pixel_norm_forward_kernel(x_ptr, y_ptr, r_ptr, P, C, num_p_blocks, stride_o, stride_p, stride_c, eps_hi, eps_lo,
                              BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE_PASS: tl.constexpr):
    acc_ty = r_ptr.dtype.element_ty
    base, r_offs, p_mask = _tile_offsets(tl.program_id(0), num_p_blocks, P, stride_o, stride_p, BLOCK_P)
    c = tl.arange(0, BLOCK_C)[:, None]
    # eps arrives as two float32 halves (see _common.split_float); float32 math keeps only the first
    eps_acc = tl.cast(eps_hi, acc_ty) + tl.cast(eps_lo, acc_ty)
    if SINGLE_PASS:
        mask = p_mask[None, :] & (c < C)
        offs = base + c.to(tl.int64) * stride_c
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        rs = tl.rsqrt(tl.sum(x * x, axis=0) / C + eps_acc)
        tl.store(y_ptr + offs, (x * rs[None, :]).to(y_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
        for c0 in range(0, C, BLOCK_C):
            mask = p_mask[None, :] & (c0 + c < C)
            x = tl.load(x_ptr + base + (c0 + c).to(tl.int64) * stride_c, mask=mask, other=0.0).to(acc_ty)
            acc += x * x
        rs = tl.rsqrt(tl.sum(acc, axis=0) / C + eps_acc)
        for c0 in range(0, C, BLOCK_C):
            mask = p_mask[None, :] & (c0 + c < C)
            offs = base + (c0 + c).to(tl.int64) * stride_c
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            tl.store(y_ptr + offs, (x * rs[None, :]).to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(r_ptr + r_offs, rs, mask=p_mask)


@triton.jit
def pixel_norm_grad_scalars(C, rs, projection, eps):
    """(grad_y's factor, the projection's coefficient) of pixel norm's backward per pixel: rs and `projection`, or
    over one channel eps * r^3 and 0, the exact form of what the general one cancels to its rounding (the rule of
    every family's kernels: csrc/common/pixel_norm_math.h says why)."""
    one_channel = C == 1
    return tl.where(one_channel, rs * (eps * rs * rs), rs), tl.where(one_channel, 0.0, projection)


@triton.jit
def pixel_norm_backward_kernel(dy_ptr, x_ptr, r_ptr, dx_ptr, P, C, num_p_blocks, stride_o, stride_p, stride_c, eps_hi,
                               eps_lo, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE_PASS: tl.constexpr):
    """dx = r * dy - x * r^3 * mean(dy * x) (eps * r^3 * dy over one channel: pixel_norm_grad_scalars)."""
    acc_ty = r_ptr.dtype.element_ty
    base, r_offs, p_mask = _tile_offsets(tl.program_id(0), num_p_blocks, P, stride_o, stride_p, BLOCK_P)
    c = tl.arange(0, BLOCK_C)[:, None]
    eps = tl.cast(eps_hi, acc_ty) + tl.cast(eps_lo, acc_ty)
    rs = tl.load(r_ptr + r_offs, mask=p_mask, other=0.0).to(acc_ty)
    if SINGLE_PASS:
        mask = p_mask[None, :] & (c < C)
        offs = base + c.to(tl.int64) * stride_c
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
        gs, k = pixel_norm_grad_scalars(C, rs, rs * rs * rs * (tl.sum(dy * x, axis=0) / C), eps)
        tl.store(dx_ptr + offs, (gs[None, :] * dy - k[None, :] * x).to(dx_ptr.dtype.element_ty), mask=mask)
    else:
        acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
        for c0 in range(0, C, BLOCK_C):
            mask = p_mask[None, :] & (c0 + c < C)
            offs = base + (c0 + c).to(tl.int64) * stride_c
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            acc += dy * x
        gs, k = pixel_norm_grad_scalars(C, rs, rs * rs * rs * (tl.sum(acc, axis=0) / C), eps)
        for c0 in range(0, C, BLOCK_C):
            mask = p_mask[None, :] & (c0 + c < C)
            offs = base + (c0 + c).to(tl.int64) * stride_c
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(acc_ty)
            tl.store(dx_ptr + offs, (gs[None, :] * dy - k[None, :] * x).to(dx_ptr.dtype.element_ty), mask=mask)


def geometry(x, dim):
    """(dense x, launch arguments) for a reduction of x over `dim`, with the C++ ops' layout rule: channels_last
    over dim 1 is used as it is (rows), anything else is made contiguous (rows when dim is the last one)."""
    dim = dim % x.dim()
    if reduction_output_format(x, dim) == torch.channels_last:
        dense = x
        outer, channels, inner = 1, x.shape[1], x.shape[0] * x.shape[2] * x.shape[3]
        rows = True
    else:
        dense = x.contiguous()
        channels = x.shape[dim]
        outer = 1
        for s in x.shape[:dim]:
            outer *= s
        inner = 1
        for s in x.shape[dim + 1:]:
            inner *= s
        rows = inner == 1
        if rows:
            outer, inner = 1, outer
    if rows:  # P reductions of C contiguous channels each
        P, stride_o, stride_p, stride_c = inner, 0, channels, 1
        block_c = min(triton.next_power_of_2(max(channels, 1)), TILE)
        block_p = max(1, min(triton.next_power_of_2(max(P, 1)), TILE // block_c))
    else:  # outer planes of C channels, each channel P contiguous pixels
        P, stride_o, stride_p, stride_c = inner, channels * inner, 1, inner
        if triton.next_power_of_2(max(channels, 1)) * MIN_PLANE_PIXELS <= TILE:
            block_c = triton.next_power_of_2(max(channels, 1))
            block_p = min(triton.next_power_of_2(max(P, 1)), TILE // block_c)
        else:
            block_p = min(triton.next_power_of_2(max(P, 1)), 32)
            block_c = TILE // block_p
    num_p_blocks = triton.cdiv(P, block_p)
    args = dict(P=P, C=channels, num_p_blocks=num_p_blocks, stride_o=stride_o, stride_p=stride_p, stride_c=stride_c)
    meta = dict(BLOCK_P=block_p, BLOCK_C=block_c, SINGLE_PASS=channels <= block_c)
    return dense, args, meta, (outer * num_p_blocks,)


@_library.register_kernel("triton", "pixel_norm_forward", ("cuda", "cpu"))
def pixel_norm_forward(x, dim, eps):
    check_device(x, "pixel norm")
    dense, args, meta, grid = geometry(x, dim)
    y = torch.empty_like(dense)
    stat_shape = list(x.shape)
    stat_shape[dim % x.dim()] = 1
    r = torch.empty(stat_shape, dtype=stat_dtype(x.dtype), device=x.device)
    if x.shape[dim % x.dim()] == 0:
        r.fill_(float("nan"))  # the mean over zero channels, as in the reference
    if x.numel() > 0:
        with device_scope(x):
            eps_hi, eps_lo = split_float(eps)
            pixel_norm_forward_kernel[grid](dense, y, r, eps_hi=eps_hi, eps_lo=eps_lo, **args, **meta,
                                            num_warps=NUM_WARPS)
    return y, r


@_library.register_kernel("triton", "pixel_norm_backward", ("cuda", "cpu"))
def pixel_norm_backward(grad_y, x, rsqrt, dim, eps):
    check_device(x, "pixel norm")
    dense, args, meta, grid = geometry(x, dim)
    dy = grad_y.contiguous(memory_format=reduction_output_format(x, dim))
    r = rsqrt.to(stat_dtype(x.dtype)).contiguous()
    dx = torch.empty_like(dense)
    if x.numel() > 0:
        with device_scope(x):
            eps_hi, eps_lo = split_float(eps)
            pixel_norm_backward_kernel[grid](dy, dense, r, dx, eps_hi=eps_hi, eps_lo=eps_lo, **args, **meta,
                                             num_warps=NUM_WARPS)
    return dx


def aot_cases():
    """AOT cases (see aot.cases) for pixel norm: both kernels, every dtype, rows and planes, single- and two-pass."""
    cases = []
    for x in reduction_aot_inputs():
        _, args, meta, _ = geometry(x, 1)
        for dtype, ptr in aot.POINTER_TYPES.items():
            r_ptr = aot.POINTER_TYPES[stat_dtype(dtype)]
            layout = "rows" if args["stride_c"] == 1 else "planes"
            passes = "one-pass" if meta["SINGLE_PASS"] else "two-pass"
            label = f"{'x'.join(map(str, x.shape))}-{layout}-{passes}-{ptr[1:]}"
            cases.append((f"pixel_norm_forward[{label}]", pixel_norm_forward_kernel,
                          *aot.specialize(pixel_norm_forward_kernel, {"x_ptr": ptr, "y_ptr": ptr, "r_ptr": r_ptr},
                                          dict(args, eps_hi=1e-8, eps_lo=0.0), meta), NUM_WARPS))
            cases.append((f"pixel_norm_backward[{label}]", pixel_norm_backward_kernel,
                          *aot.specialize(pixel_norm_backward_kernel,
                                          {"dy_ptr": ptr, "x_ptr": ptr, "r_ptr": r_ptr, "dx_ptr": ptr},
                                          dict(args, eps_hi=1e-8, eps_lo=0.0), meta),
                          NUM_WARPS))
    return cases
