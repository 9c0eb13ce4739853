"""The fused up/down convs' 4x4 kernel K from the 3x3 weight: `python -m benchmarks.resample_kernel [--threads N]`.

K = progan_fast.reference.resample_kernel(W) built three ways, measured interleaved in one process on the models'
weight shapes (128x128x3x3 and 512x512x3x3), float32 and bf16 (autocast: the weight cast to bf16 first, as
eq_conv2d does):
  reference   pad by one, then the sum of four shifted slices (progan_fast.reference, the spec)
  box conv    the full 2-D convolution of W with a 2x2 box of ones: one F.conv2d over O*I single-channel maps
  matmul      [O*I, 9] @ a constant 0/1 [9, 16] matrix (sums in the GEMM's order, bf16 rounded once)
  function    progan_fast.ops._resample_kernel, what the ops use: whole-buffer adds of shifted flat views, its
              backward the "valid" 2x2 box sum, each the other's backward
and the up conv's conv_transpose2d weight K.flip(-1, -2).transpose(0, 1) made contiguous (as the conv needs it),
by the reference and by progan_fast.ops._resample_kernel.transposed_resample_kernel; in three directions:
forward; forward+backward (what D's and G's steps run, the gradient penalty included); forward+backward with
create_graph and the backward of that backward (double backward). Prints a Markdown table of medians and minima,
and whether each candidate's kernel and gradients equal the reference's bit for bit.
"""
import argparse
import sys

import torch
import torch.nn.functional as F

from progan_fast import reference, tune_allocator
from progan_fast.ops import _resample_kernel

from . import common

SHAPES = ((128, 128, 3, 3), (512, 512, 3, 3))
DIRECTIONS = ("forward", "forward+backward", "forward+backward+double backward")


def box_conv(weight):
    out_channels, in_channels, k, _ = weight.shape
    ones = weight.new_ones(1, 1, 2, 2)
    return F.conv2d(weight.reshape(out_channels * in_channels, 1, k, k), ones, padding=1).reshape(
        out_channels, in_channels, k + 1, k + 1)


def box_matmul(weight):
    out_channels, in_channels, k, _ = weight.shape
    shifts = torch.zeros(k, k, k + 1, k + 1)
    for dy in (0, 1):
        for dx in (0, 1):
            shifts[:, :, dy:dy + k, dx:dx + k] += torch.eye(k * k).view(k, k, k, k)
    return (weight.reshape(-1, k * k) @ shifts.view(k * k, -1).to(weight.dtype)).view(
        out_channels, in_channels, k + 1, k + 1)


def reference_up_kernel(weight):
    return reference.resample_kernel(weight).flip(-1, -2).transpose(0, 1).contiguous()


# {kernel: {candidate: function}}, the first candidate of each the reference the others are compared with
KERNELS = {
    "K": {"reference": reference.resample_kernel, "box conv": box_conv, "matmul": box_matmul,
          "function": _resample_kernel.resample_kernel},
    "up": {"reference": reference_up_kernel, "function": _resample_kernel.transposed_resample_kernel},
}


def build(fn, direction, shape, precision):
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(shape, generator=g)
    with torch.no_grad():
        grad_kernel = torch.randn(fn(weight).shape, generator=g)
    grad_grad_weight = torch.randn(shape, generator=g)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32

    def run():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            if direction == "forward":
                with torch.no_grad():
                    return fn(weight.to(dtype))
            w = weight.detach().requires_grad_(True)
            kernel = fn(w.to(dtype))
            if direction == "forward+backward":
                return torch.autograd.grad(kernel, w, grad_kernel.to(kernel.dtype))
            dk = grad_kernel.to(kernel.dtype).requires_grad_(True)
            dw, = torch.autograd.grad(kernel, w, dk, create_graph=True)
            return torch.autograd.grad(dw, dk, grad_grad_weight)
    return run


def bitwise_equal(fn, reference_fn, precision):
    """(kernel equal, gradient equal) against reference_fn on a random 32x16x3x3 weight."""
    g = torch.Generator().manual_seed(1)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    w = torch.randn(32, 16, 3, 3, generator=g, dtype=dtype, requires_grad=True)
    expected = reference_fn(w)
    grad_kernel = torch.randn(expected.shape, generator=g, dtype=dtype)
    got = fn(w)
    return (torch.equal(got, expected),
            torch.equal(torch.autograd.grad(got, w, grad_kernel)[0], torch.autograd.grad(expected, w, grad_kernel)[0]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"allocator: {tune_allocator()}")
    print(f"CPU: {common.describe_cpu(common.cpu_info())}; {torch.get_num_threads()} threads\n")
    for kernel, candidates in KERNELS.items():
        reference_fn = candidates["reference"]
        for precision in ("float32", "bf16"):
            for name, fn in candidates.items():
                kernel_equal, grad_equal = bitwise_equal(fn, reference_fn, precision)
                print(f"{kernel} {precision} {name}: kernel {'bit-identical' if kernel_equal else 'differs'}, "
                      f"gradient {'bit-identical' if grad_equal else 'differs'} (against the reference)")
    print()
    clock = common.Clock("cpu")
    print("| kernel | weight | precision | direction | impl | median ms | min ms | vs reference (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for kernel, candidates in KERNELS.items():
        for shape in SHAPES:
            for precision in ("float32", "bf16"):
                for direction in DIRECTIONS:
                    runs = {name: build(fn, direction, shape, precision) for name, fn in candidates.items()}
                    times = {k: common.summarize(v) for k, v in
                             common.interleave(runs, args.rounds, clock, warmup=2).items()}
                    base = times["reference"]["min_s"]
                    for name, t in times.items():
                        print(f"| {kernel} | {'x'.join(map(str, shape))} | {precision} | {direction} | {name} | "
                              f"{t['median_s'] * 1e3:.3f} | {t['min_s'] * 1e3:.3f} | {base / t['min_s']:.2f}x |",
                              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
