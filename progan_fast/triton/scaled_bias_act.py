"""The equalized-lr epilogue in Triton: the kernels of progan_fast_triton::scaled_bias_act_{forward,backward}
(schemas, fakes and autograd: progan_fast/ops/scaled_bias_act.py, like every family's).

The tiles are pixel norm's (progan_fast/triton/pixel_norm.py: `geometry`): each program owns BLOCK_P pixels and
walks their channels in BLOCK_C chunks, one pass when the channels fit a tile, two (accumulate, then write) for
pixel norm over wider ones. y = act(scale * x + bias[c]) with act(v) = v > 0 ? v : slope * v, times
rsqrt(mean_c(y^2) + eps) with pixel norm. The backward writes grad_x and each program's per-channel bias sums
(one row of a [programs, C] workspace, summed afterwards): grad_bias comes out of the same sweep.
Math is in float32 (float64 for float64 inputs); scale, slope and eps arrive as float32 hi + lo pairs.
"""
import torch
import triton
import triton.language as tl

from .. import _library
from . import aot
from ._common import check_device, device_scope, reduction_aot_inputs, split_float
from .._layout import reduction_output_format, stat_dtype
from .pixel_norm import NUM_WARPS, _tile_offsets, geometry, pixel_norm_grad_scalars
from ..ops.scaled_bias_act import reads_saved


@triton.jit
def _pre_activation(x_ptr, bias_ptr, offs, channels, mask, channel_mask, scale, HAS_BIAS: tl.constexpr):
    v = tl.load(x_ptr + offs, mask=mask, other=0.0).to(scale.dtype) * scale
    if HAS_BIAS:
        v += tl.load(bias_ptr + channels, mask=channel_mask, other=0.0).to(scale.dtype)
    return v


@triton.jit
def _act(v, slope):
    return tl.where(v > 0, v, v * slope)


@triton.jit
def scaled_bias_act_forward_kernel(x_ptr, bias_ptr, y_ptr, r_ptr, P, C, num_p_blocks, stride_o, stride_p, stride_c,
                                   scale_hi, scale_lo, slope_hi, slope_lo, eps_hi, eps_lo, HAS_BIAS: tl.constexpr,
                                   PIXEL_NORM: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr,
                                   SINGLE_PASS: tl.constexpr):
    acc_ty = r_ptr.dtype.element_ty
    base, r_offs, p_mask = _tile_offsets(tl.program_id(0), num_p_blocks, P, stride_o, stride_p, BLOCK_P)
    c = tl.arange(0, BLOCK_C)[:, None]
    scale = tl.cast(scale_hi, acc_ty) + tl.cast(scale_lo, acc_ty)
    slope = tl.cast(slope_hi, acc_ty) + tl.cast(slope_lo, acc_ty)
    eps = tl.cast(eps_hi, acc_ty) + tl.cast(eps_lo, acc_ty)
    if SINGLE_PASS:  # every channel in one tile
        channel_mask = c < C
        mask = p_mask[None, :] & channel_mask
        offs = base + c.to(tl.int64) * stride_c
        a = tl.where(mask, _act(_pre_activation(x_ptr, bias_ptr, offs, c, mask, channel_mask, scale, HAS_BIAS), slope),
                     0.0)
        if PIXEL_NORM:
            rs = tl.rsqrt(tl.sum(a * a, axis=0) / C + eps)
            tl.store(r_ptr + r_offs, rs, mask=p_mask)
            a = a * rs[None, :]
        tl.store(y_ptr + offs, a.to(y_ptr.dtype.element_ty), mask=mask)
    else:
        rs = tl.full([BLOCK_P], 1.0, acc_ty)
        if PIXEL_NORM:
            acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
            for c0 in range(0, C, BLOCK_C):
                channel_mask = c0 + c < C
                mask = p_mask[None, :] & channel_mask
                offs = base + (c0 + c).to(tl.int64) * stride_c
                a = tl.where(mask, _act(_pre_activation(x_ptr, bias_ptr, offs, c0 + c, mask, channel_mask, scale,
                                                         HAS_BIAS), slope), 0.0)
                acc += a * a
            rs = tl.rsqrt(tl.sum(acc, axis=0) / C + eps)
            tl.store(r_ptr + r_offs, rs, mask=p_mask)
        for c0 in range(0, C, BLOCK_C):
            channel_mask = c0 + c < C
            mask = p_mask[None, :] & channel_mask
            offs = base + (c0 + c).to(tl.int64) * stride_c
            a = _act(_pre_activation(x_ptr, bias_ptr, offs, c0 + c, mask, channel_mask, scale, HAS_BIAS), slope)
            tl.store(y_ptr + offs, (a * rs[None, :]).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _forward_values(gy_ptr, saved_ptr, bias_ptr, offs, channels, mask, channel_mask, rs, scale, slope,
                    HAS_SAVED: tl.constexpr, SAVED_IS_INPUT: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(grad_y, the forward's y, the sign of v) of a tile, zero where masked."""
    gy = tl.load(gy_ptr + offs, mask=mask, other=0.0).to(scale.dtype)
    if SAVED_IS_INPUT:
        sign = _pre_activation(saved_ptr, bias_ptr, offs, channels, mask, channel_mask, scale, HAS_BIAS)
        y = tl.where(mask, _act(sign, slope) * rs[None, :], 0.0)
    elif HAS_SAVED:
        y = tl.load(saved_ptr + offs, mask=mask, other=0.0).to(scale.dtype)
        sign = y
    else:  # linear without pixel norm: act' is 1
        y = gy * 0
        sign = y + 1
    return gy, y, sign


@triton.jit
def _restored_mean(dot, sum_sq, C, rs, eps):
    """mean_c(grad_y * y) times the factor that gives y its exact norm, mean_c(y^2) = 1 - eps * r^2."""
    mean_sq = sum_sq / C
    fix = tl.where(mean_sq > 0, (1.0 - eps * rs * rs) / tl.where(mean_sq > 0, mean_sq, 1.0), 1.0)
    return dot / C * fix


@triton.jit
def scaled_bias_act_backward_kernel(gy_ptr, saved_ptr, r_ptr, bias_ptr, gx_ptr, ws_ptr, P, C, num_p_blocks,
                                    stride_o, stride_p, stride_c, scale_hi, scale_lo, slope_hi, slope_lo, eps_hi,
                                    eps_lo, HAS_SAVED: tl.constexpr, SAVED_IS_INPUT: tl.constexpr,
                                    HAS_BIAS: tl.constexpr, PIXEL_NORM: tl.constexpr, BIAS_GRAD: tl.constexpr,
                                    BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, SINGLE_PASS: tl.constexpr):
    """gv = act'(v) * r * (grad_y - y * mean_c(grad_y * y) * fix) (grad_y without pixel norm), with fix the factor
    that restores y's exact norm (progan_fast/ops/scaled_bias_act.py) and eps * r^3 * grad_y over one channel
    (pixel_norm_grad_scalars), grad_x = scale * gv, ws[program, c] = sum over the program's pixels of gv."""
    acc_ty = ws_ptr.dtype.element_ty
    pid = tl.program_id(0)
    base, r_offs, p_mask = _tile_offsets(pid, num_p_blocks, P, stride_o, stride_p, BLOCK_P)
    c = tl.arange(0, BLOCK_C)[:, None]
    scale = tl.cast(scale_hi, acc_ty) + tl.cast(scale_lo, acc_ty)
    slope = tl.cast(slope_hi, acc_ty) + tl.cast(slope_lo, acc_ty)
    eps = tl.cast(eps_hi, acc_ty) + tl.cast(eps_lo, acc_ty)
    rs = tl.full([BLOCK_P], 1.0, acc_ty)
    mean = tl.zeros([BLOCK_P], acc_ty)
    if PIXEL_NORM:
        rs = tl.load(r_ptr + r_offs, mask=p_mask, other=1.0).to(acc_ty)
        if not SINGLE_PASS:
            acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
            acc_sq = tl.zeros([BLOCK_C, BLOCK_P], dtype=acc_ty)
            for c0 in range(0, C, BLOCK_C):
                channel_mask = c0 + c < C
                mask = p_mask[None, :] & channel_mask
                offs = base + (c0 + c).to(tl.int64) * stride_c
                gy, y, sign = _forward_values(gy_ptr, saved_ptr, bias_ptr, offs, c0 + c, mask, channel_mask, rs,
                                              scale, slope, HAS_SAVED, SAVED_IS_INPUT, HAS_BIAS)
                acc += gy * y
                acc_sq += y * y
            mean = _restored_mean(tl.sum(acc, axis=0), tl.sum(acc_sq, axis=0), C, rs, eps)
    for c0 in range(0, C, BLOCK_C):
        channel_mask = c0 + c < C
        mask = p_mask[None, :] & channel_mask
        offs = base + (c0 + c).to(tl.int64) * stride_c
        gy, y, sign = _forward_values(gy_ptr, saved_ptr, bias_ptr, offs, c0 + c, mask, channel_mask, rs, scale,
                                      slope, HAS_SAVED, SAVED_IS_INPUT, HAS_BIAS)
        ga = gy
        if PIXEL_NORM:
            if SINGLE_PASS:
                mean = _restored_mean(tl.sum(gy * y, axis=0), tl.sum(y * y, axis=0), C, rs, eps)
            grad_scale, projection = pixel_norm_grad_scalars(C, rs, mean, eps)
            ga = grad_scale[None, :] * (gy - y * projection[None, :])
        gv = tl.where(mask, tl.where(sign > 0, ga, ga * slope), 0.0)
        tl.store(gx_ptr + offs, (gv * scale).to(gx_ptr.dtype.element_ty), mask=mask)
        if BIAS_GRAD:
            tl.store(ws_ptr + pid.to(tl.int64) * C + c0 + tl.arange(0, BLOCK_C), tl.sum(gv, axis=1),
                     mask=c0 + tl.arange(0, BLOCK_C) < C)


def _scalars(**values):
    out = {}
    for name, value in values.items():
        out[f"{name}_hi"], out[f"{name}_lo"] = split_float(value)
    return out


@_library.register_kernel("triton", "scaled_bias_act_forward", ("cuda", "cpu"))
def scaled_bias_act_forward(x, bias, scale, slope, pixel_norm, eps):
    check_device(x, "scaled_bias_act")
    dense, args, meta, grid = geometry(x, 1)
    y = torch.empty_like(dense)
    r = torch.empty(([x.shape[0], 1] + list(x.shape[2:])) if pixel_norm else [0], dtype=stat_dtype(x.dtype),
                    device=x.device)
    if pixel_norm and x.shape[1] == 0:
        r.fill_(float("nan"))  # the mean over zero channels, as in the reference
    if x.numel() > 0:
        with device_scope(x):
            scaled_bias_act_forward_kernel[grid](
                dense, dense if bias is None else bias.contiguous(), y, r, **args,
                **_scalars(scale=scale, slope=slope, eps=eps), HAS_BIAS=bias is not None, PIXEL_NORM=pixel_norm,
                **meta, num_warps=NUM_WARPS)
    return y, r


@_library.register_kernel("triton", "scaled_bias_act_backward", ("cuda", "cpu"))
def scaled_bias_act_backward(grad_y, saved, rsqrt, bias, scale, slope, pixel_norm, eps, saved_is_input,
                             bias_grad):
    check_device(grad_y, "scaled_bias_act")
    if not reads_saved(slope, pixel_norm):
        saved = None  # not read: the layout follows grad_y (as the C++ kernels and the fake do)
    source = saved if saved is not None else grad_y
    dense, args, meta, grid = geometry(source, 1)
    gy = grad_y.contiguous(memory_format=reduction_output_format(source, 1))
    gx = torch.empty_like(dense)
    math_dtype = stat_dtype(grad_y.dtype)
    workspace = torch.empty((grid[0], grad_y.shape[1]) if bias_grad else (0,), dtype=math_dtype, device=grad_y.device)
    if grad_y.numel() == 0:
        return gx, grad_y.new_zeros([grad_y.shape[1] if bias_grad else 0])
    r = rsqrt.to(math_dtype).contiguous() if pixel_norm else workspace
    with device_scope(grad_y):
        scaled_bias_act_backward_kernel[grid](
            gy, dense, r, gy if bias is None else bias.contiguous(), gx, workspace, **args,
            **_scalars(scale=scale, slope=slope, eps=eps), HAS_SAVED=saved is not None, SAVED_IS_INPUT=saved_is_input,
            HAS_BIAS=bias is not None and saved_is_input, PIXEL_NORM=pixel_norm, BIAS_GRAD=bias_grad, **meta,
            num_warps=NUM_WARPS)
    grad_bias = workspace.sum(0).to(grad_y.dtype) if bias_grad else grad_y.new_empty([0])
    return gx, grad_bias


def aot_cases():
    """AOT cases (see aot.cases): both kernels, every dtype, rows and planes, single- and two-pass, with and without
    pixel norm (the backward also reading x for a negative slope)."""
    cases = []
    for x in reduction_aot_inputs():
        _, args, meta, _ = geometry(x, 1)
        layout = "rows" if args["stride_c"] == 1 else "planes"
        passes = "one-pass" if meta["SINGLE_PASS"] else "two-pass"
        for dtype, ptr in aot.POINTER_TYPES.items():
            acc_ptr = aot.POINTER_TYPES[stat_dtype(dtype)]
            for pixel_norm, saved_is_input in ((True, False), (False, False), (True, True)):
                if saved_is_input and dtype != torch.float32:
                    continue
                label = (f"{'x'.join(map(str, x.shape))}-{layout}-{passes}-{ptr[1:]}"
                         f"{'-pn' if pixel_norm else ''}{'-input' if saved_is_input else ''}")
                scalars = _scalars(scale=0.05, slope=-0.2 if saved_is_input else 0.2)
                if not saved_is_input:
                    cases.append((f"scaled_bias_act_forward[{label}]", scaled_bias_act_forward_kernel,
                                  *aot.specialize(scaled_bias_act_forward_kernel,
                                                  {"x_ptr": ptr, "bias_ptr": ptr, "y_ptr": ptr, "r_ptr": acc_ptr},
                                                  dict(args, **scalars, **_scalars(eps=1e-8)),
                                                  dict(meta, HAS_BIAS=True, PIXEL_NORM=pixel_norm)), NUM_WARPS))
                cases.append((f"scaled_bias_act_backward[{label}]", scaled_bias_act_backward_kernel,
                              *aot.specialize(scaled_bias_act_backward_kernel,
                                              {"gy_ptr": ptr, "saved_ptr": ptr, "r_ptr": acc_ptr, "bias_ptr": ptr,
                                               "gx_ptr": ptr, "ws_ptr": acc_ptr},
                                              dict(args, **scalars, **_scalars(eps=1e-8)),
                                              dict(meta, HAS_SAVED=True, SAVED_IS_INPUT=saved_is_input,
                                                   HAS_BIAS=saved_is_input, PIXEL_NORM=pixel_norm, BIAS_GRAD=True)),
                              NUM_WARPS))
    return cases
