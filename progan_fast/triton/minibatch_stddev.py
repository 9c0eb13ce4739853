"""Minibatch stddev in Triton: the kernels of progan_fast_triton::minibatch_stddev_{forward,backward} (schemas,
fakes and autograd: progan_fast/ops/minibatch_stddev.py, like every family's). The same plan as the CUDA kernels
(csrc/ops/minibatch_stddev.h):

  forward   stat kernel: a program per (sample group m, channel group f, BLOCK positions); it reads the G members
            (twice: mean, then variance), copies them into y and stores its partial sum of sqrt(var + eps);
            write kernel: a program per (sample n, channel group f, BLOCK_P pixels) adds the partials of
            (m(n), f) and writes s = total / K into y's channel C + f. No concatenation: x is read once.
  backward  stat kernel: a program per (m, f) reduces grad_y's channel C + f over the group and H x W into
            a = sum / (K * D); position kernel: dx = grad_y[:, :C] + (x - mean) * a / sigma, sigma recomputed.

Positions j of channel group f are numbered in memory order: NCHW x[n, f*K + j]; channels_last
x[n, pixel*C + f*Cf + j % Cf] with pixel = j // Cf (consecutive j, consecutive addresses within a pixel).
Math in float32 (float64 for float64 inputs).
"""
import dataclasses

import torch
import triton
import triton.language as tl

from .. import _layout, _library
from . import _common, aot

NAMESPACE = _library.NAMESPACES["triton"]
MAX_BLOCK = 1024    # positions per program of the position kernels (fewer when a channel group has fewer)
MAX_BLOCK_P = 1024  # pixels per program of the forward write kernel (fewer for smaller maps)
BLOCK_R = 256       # partials / statistic elements per step of a reduction loop
NUM_WARPS = 4


# Member k of group m is sample m * group_stride + k * member_stride (strided: 1 and M; contiguous: G and 1). The
# helpers are written out in every kernel: the interpreter pays per call of a jit function.


@triton.jit
def minibatch_stddev_forward_stat_kernel(x_ptr, y_ptr, partial_ptr, C, F, Cf, P, K, G, group_stride, member_stride,
                                         DIVISOR, chunks, eps_hi, eps_lo, CHANNELS_LAST: tl.constexpr,
                                         BLOCK: tl.constexpr):
    acc_ty = partial_ptr.dtype.element_ty
    pid = tl.program_id(0)
    chunk = pid % chunks
    f = (pid // chunks) % F
    m = pid // chunks // F
    j = chunk * BLOCK + tl.arange(0, BLOCK)  # 32-bit: the wrappers refuse K >= 2^31
    mask = j < K
    if CHANNELS_LAST:
        pixel = j // Cf
        within = f * Cf + (j - pixel * Cf)
        x_off = pixel.to(tl.int64) * C + within
        y_off = pixel.to(tl.int64) * (C + F) + within
    else:
        x_off = f.to(tl.int64) * K + j
        y_off = x_off
    first = m.to(tl.int64) * group_stride
    total = tl.zeros([BLOCK], dtype=acc_ty)
    for k in range(G):
        n = first + k * member_stride
        v = tl.load(x_ptr + n * C * P + x_off, mask=mask, other=0.0)
        tl.store(y_ptr + n * (C + F) * P + y_off, v, mask=mask)
        total += v.to(acc_ty)
    mean = total / G
    ss = tl.zeros([BLOCK], dtype=acc_ty)
    for k in range(G):
        n = first + k * member_stride
        d = tl.load(x_ptr + n * C * P + x_off, mask=mask, other=0.0).to(acc_ty) - mean
        ss += d * d
    eps = tl.cast(eps_hi, acc_ty) + tl.cast(eps_lo, acc_ty)
    sigma = tl.where(mask, tl.sqrt(ss / DIVISOR + eps), 0.0)
    tl.store(partial_ptr + pid, tl.sum(sigma, axis=0))


@triton.jit
def minibatch_stddev_forward_write_kernel(partial_ptr, y_ptr, C, F, P, K, G, M, chunks, pixel_runs,
                                          STRIDED: tl.constexpr, CHANNELS_LAST: tl.constexpr, ZERO: tl.constexpr,
                                          BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr):
    acc_ty = partial_ptr.dtype.element_ty
    pid = tl.program_id(0)
    run = pid % pixel_runs
    f = (pid // pixel_runs) % F
    n = pid // pixel_runs // F
    if STRIDED:
        m = n % M
    else:
        m = n // G
    base = (m * F + f).to(tl.int64) * chunks
    acc = tl.zeros([BLOCK_R], dtype=acc_ty)
    for r0 in range(0, chunks, BLOCK_R):
        r = r0 + tl.arange(0, BLOCK_R)
        acc += tl.load(partial_ptr + base + r, mask=r < chunks, other=0.0)
    total = tl.sum(acc, axis=0)
    if ZERO:  # contiguous groups of one sample
        s = total * 0.0
    else:
        s = total / K
    pixel = run.to(tl.int64) * BLOCK_P + tl.arange(0, BLOCK_P)
    if CHANNELS_LAST:
        offs = pixel * (C + F) + C + f
    else:
        offs = (C + f) * P + pixel
    tl.store(y_ptr + n.to(tl.int64) * (C + F) * P + offs,
             (tl.zeros([BLOCK_P], dtype=acc_ty) + s).to(y_ptr.dtype.element_ty), mask=pixel < P)


@triton.jit
def minibatch_stddev_backward_stat_kernel(dy_ptr, a_ptr, C, F, P, K, G, group_stride, member_stride, DIVISOR,
                                          CHANNELS_LAST: tl.constexpr, BLOCK_R: tl.constexpr):
    acc_ty = a_ptr.dtype.element_ty
    pid = tl.program_id(0)
    f = pid % F
    m = pid // F
    acc = tl.zeros([BLOCK_R], dtype=acc_ty)
    for i0 in range(0, G * P, BLOCK_R):
        i = i0 + tl.arange(0, BLOCK_R)
        k = i // P
        pixel = i - k * P
        n = m.to(tl.int64) * group_stride + k * member_stride
        if CHANNELS_LAST:
            offs = pixel * (C + F) + C + f
        else:
            offs = (C + f) * P + pixel
        acc += tl.load(dy_ptr + n * (C + F) * P + offs, mask=i < G * P, other=0.0).to(acc_ty)
    tl.store(a_ptr + pid, tl.sum(acc, axis=0) / DIVISOR / K)


@triton.jit
def minibatch_stddev_backward_kernel(dy_ptr, x_ptr, a_ptr, dx_ptr, C, F, Cf, P, K, G, group_stride, member_stride,
                                     DIVISOR, chunks, eps_hi, eps_lo, CHANNELS_LAST: tl.constexpr,
                                     ZERO: tl.constexpr, BLOCK: tl.constexpr):
    acc_ty = a_ptr.dtype.element_ty
    pid = tl.program_id(0)
    chunk = pid % chunks
    f = (pid // chunks) % F
    m = pid // chunks // F
    j = chunk * BLOCK + tl.arange(0, BLOCK)  # 32-bit: the wrappers refuse K >= 2^31
    mask = j < K
    if CHANNELS_LAST:
        pixel = j // Cf
        within = f * Cf + (j - pixel * Cf)
        x_off = pixel.to(tl.int64) * C + within
        y_off = pixel.to(tl.int64) * (C + F) + within
    else:
        x_off = f.to(tl.int64) * K + j
        y_off = x_off
    first = m.to(tl.int64) * group_stride
    if ZERO:  # the constant statistic has no gradient: dx = grad_y[:, :C]
        for k in range(G):
            n = first + k * member_stride
            dyv = tl.load(dy_ptr + n * (C + F) * P + y_off, mask=mask, other=0.0)
            tl.store(dx_ptr + n * C * P + x_off, dyv, mask=mask)
    else:
        total = tl.zeros([BLOCK], dtype=acc_ty)
        for k in range(G):
            n = first + k * member_stride
            total += tl.load(x_ptr + n * C * P + x_off, mask=mask, other=0.0).to(acc_ty)
        mean = total / G
        ss = tl.zeros([BLOCK], dtype=acc_ty)
        for k in range(G):
            n = first + k * member_stride
            d = tl.load(x_ptr + n * C * P + x_off, mask=mask, other=0.0).to(acc_ty) - mean
            ss += d * d
        eps = tl.cast(eps_hi, acc_ty) + tl.cast(eps_lo, acc_ty)
        scale = tl.load(a_ptr + m * F + f) / tl.sqrt(ss / DIVISOR + eps)
        for k in range(G):
            n = first + k * member_stride
            xv = tl.load(x_ptr + n * C * P + x_off, mask=mask, other=0.0).to(acc_ty)
            dyv = tl.load(dy_ptr + n * (C + F) * P + y_off, mask=mask, other=0.0).to(acc_ty)
            tl.store(dx_ptr + n * C * P + x_off, (dyv + (xv - mean) * scale).to(dx_ptr.dtype.element_ty),
                     mask=mask)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """The launch arguments of the four kernels (ops/minibatch_stddev_geometry.h is the C++ twin)."""
    C: int
    F: int
    Cf: int
    P: int
    K: int
    G: int
    M: int
    divisor: int
    block: int
    block_p: int
    chunks: int
    pixel_runs: int
    strided: bool
    channels_last: bool
    zero: bool

    def _members(self):
        return dict(C=self.C, F=self.F, P=self.P, K=self.K, G=self.G,
                    group_stride=1 if self.strided else self.G, member_stride=self.M if self.strided else 1,
                    DIVISOR=self.divisor)

    def forward_stat(self, eps_hi, eps_lo):
        return (self.M * self.F * self.chunks,), dict(self._members(), Cf=self.Cf, chunks=self.chunks, eps_hi=eps_hi,
                                                      eps_lo=eps_lo), dict(CHANNELS_LAST=self.channels_last,
                                                                           BLOCK=self.block)

    def forward_write(self, samples):
        return (samples * self.F * self.pixel_runs,), dict(C=self.C, F=self.F, P=self.P, K=self.K, G=self.G,
                                                           M=self.M, chunks=self.chunks, pixel_runs=self.pixel_runs), \
            dict(STRIDED=self.strided, CHANNELS_LAST=self.channels_last, ZERO=self.zero, BLOCK_P=self.block_p,
                 BLOCK_R=BLOCK_R)

    def backward_stat(self):
        return (self.M * self.F,), self._members(), dict(CHANNELS_LAST=self.channels_last, BLOCK_R=BLOCK_R)

    def backward(self, eps_hi, eps_lo):
        return (self.M * self.F * self.chunks,), dict(self._members(), Cf=self.Cf, chunks=self.chunks, eps_hi=eps_hi,
                                                      eps_lo=eps_lo), dict(CHANNELS_LAST=self.channels_last,
                                                                           ZERO=self.zero, BLOCK=self.block)


def geometry(x, group_size, grouping, unbiased, num_new_features):
    n, c, h, w = x.shape
    g, m, zero = _layout.minibatch_groups(n, group_size, grouping)
    cf, p = c // num_new_features, h * w
    k = cf * p
    if k >= 2 ** 31:
        raise RuntimeError(f"x has {k} positions per channel group (C / num_new_features * H * W); the Triton "
                           f"kernels take fewer than 2^31")
    block = min(MAX_BLOCK, triton.next_power_of_2(max(k, 16)))
    block_p = min(MAX_BLOCK_P, triton.next_power_of_2(max(p, 16)))
    # Unbiased groups of one only occur with a zero statistic, which never divides by it.
    divisor = max(g - 1 if unbiased else g, 1)
    return Geometry(C=c, F=num_new_features, Cf=cf, P=p, K=k, G=g, M=m, divisor=divisor, block=block,
                    block_p=block_p, chunks=triton.cdiv(k, block), pixel_runs=triton.cdiv(p, block_p),
                    strided=grouping == "strided", channels_last=_layout.memory_format(x) == torch.channels_last,
                    zero=zero)


@_library.register_kernel("triton", "minibatch_stddev_forward", ("cuda", "cpu"))
def minibatch_stddev_forward(x, group_size, grouping, unbiased, eps, num_new_features):
    _common.check_device(x, "minibatch stddev")
    geo = geometry(x, group_size, grouping, unbiased, num_new_features)
    fmt = _layout.memory_format(x)
    dense = x.contiguous(memory_format=fmt)
    n, c, h, w = x.shape
    y = torch.empty((n, c + geo.F, h, w), dtype=x.dtype, device=x.device, memory_format=fmt)
    if y.numel() == 0:
        return y
    partial = torch.empty(geo.M * geo.F * geo.chunks, dtype=_layout.stat_dtype(x.dtype), device=x.device)
    with _common.device_scope(x):
        if partial.numel():
            grid, args, meta = geo.forward_stat(*_common.split_float(eps))
            minibatch_stddev_forward_stat_kernel[grid](dense, y, partial, **args, **meta, num_warps=NUM_WARPS)
        grid, args, meta = geo.forward_write(n)
        minibatch_stddev_forward_write_kernel[grid](partial, y, **args, **meta, num_warps=NUM_WARPS)
    return y


@_library.register_kernel("triton", "minibatch_stddev_backward", ("cuda", "cpu"))
def minibatch_stddev_backward(grad_y, x, group_size, grouping, unbiased, eps, num_new_features):
    _common.check_device(x, "minibatch stddev")
    geo = geometry(x, group_size, grouping, unbiased, num_new_features)
    fmt = _layout.memory_format(x)
    dense = x.contiguous(memory_format=fmt)
    dy = grad_y.contiguous(memory_format=fmt)
    dx = torch.empty_like(dense)
    if dx.numel() == 0:
        return dx
    a = torch.zeros(geo.M * geo.F, dtype=_layout.stat_dtype(x.dtype), device=x.device)
    with _common.device_scope(x):
        if not geo.zero:
            grid, args, meta = geo.backward_stat()
            minibatch_stddev_backward_stat_kernel[grid](dy, a, **args, **meta, num_warps=NUM_WARPS)
        grid, args, meta = geo.backward(*_common.split_float(eps))
        minibatch_stddev_backward_kernel[grid](dy, dense, a, dx, **args, **meta, num_warps=NUM_WARPS)
    return dx


def aot_cases():
    """AOT cases (see aot.cases): every kernel and dtype, both layouts and groupings, D's 4x4 shape and S2 with
    two channel groups."""
    cases = []
    configs = [((16, 512, 4, 4), torch.contiguous_format, "strided", 1),
               ((16, 256, 32, 32), torch.channels_last, "contiguous", 2)]
    for shape, memory_format, grouping, features in configs:
        x = torch.empty(shape, device="meta").contiguous(memory_format=memory_format)
        geo = geometry(x, 4, grouping, grouping == "contiguous", features)
        layout = "cl" if geo.channels_last else "nchw"
        for dtype, ptr in aot.POINTER_TYPES.items():
            acc = aot.POINTER_TYPES[_layout.stat_dtype(dtype)]
            label = f"{'x'.join(map(str, shape))}-{layout}-{grouping}-F{features}-{ptr[1:]}"
            launches = [
                ("forward_stat", minibatch_stddev_forward_stat_kernel,
                 {"x_ptr": ptr, "y_ptr": ptr, "partial_ptr": acc}, geo.forward_stat(1e-8, 0.0)),
                ("forward_write", minibatch_stddev_forward_write_kernel, {"partial_ptr": acc, "y_ptr": ptr},
                 geo.forward_write(shape[0])),
                ("backward_stat", minibatch_stddev_backward_stat_kernel, {"dy_ptr": ptr, "a_ptr": acc},
                 geo.backward_stat()),
                ("backward", minibatch_stddev_backward_kernel,
                 {"dy_ptr": ptr, "x_ptr": ptr, "a_ptr": acc, "dx_ptr": ptr}, geo.backward(1e-8, 0.0)),
            ]
            for name, kernel, pointers, (_, args, meta) in launches:
                cases.append((f"minibatch_stddev_{name}[{label}]", kernel,
                              *aot.specialize(kernel, pointers, args, meta), NUM_WARPS))
    return cases
