"""What oneDNN can give one ProGAN layer on the CPU: `python -m benchmarks.onednn_layer [--threads N]`.

One equalized-lr 3x3 conv layer, 128 -> 128 channels at (16, 128, 32, 32), + bias + leaky ReLU (+ pixel norm for
G's layers), forward and forward+backward, measured interleaved in one process:
  unfused        the baseline's way: weight * scale, F.conv2d with bias, F.leaky_relu, pixel norm
  progan_fast    progan_fast.ops.eq_conv2d (the automatic backend)
  compile        the unfused layer under torch.compile (inductor fuses the epilogue into one loop; the conv stays
                 oneDNN's)
  post-op        forward only: torch.ops.mkldnn._convolution_pointwise with the leaky ReLU as a oneDNN post-op
                 (what inductor's freezing pass uses for inference; it has no autograd, so training cannot use it)
each in float32 and bf16 (autocast), NCHW and channels_last. Prints a Markdown table of medians and minima.
"""
import argparse
import math
import sys

import torch
import torch.nn.functional as F

from progan_fast import ops, tune_allocator

from . import common

SHAPE = (16, 128, 32, 32)


def unfused(x, w, b, pixel_norm):
    y = F.leaky_relu(F.conv2d(x, w * (math.sqrt(2) / math.sqrt(w[0].numel())), b, padding=1), 0.2)
    return y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt() if pixel_norm else y


def fused(x, w, b, pixel_norm):
    return ops.eq_conv2d(x, w, b, pixel_norm=pixel_norm)


def post_op(x, w, b, pixel_norm):
    y = torch.ops.mkldnn._convolution_pointwise(x, w * (math.sqrt(2) / math.sqrt(w[0].numel())), b, [1, 1], [1, 1],
                                                [1, 1], 1, "leaky_relu", [0.2], "")
    return y * (y.square().mean(1, keepdim=True) + 1e-8).rsqrt() if pixel_norm else y


def build(impl, direction, layout, precision, pixel_norm, compiled):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=g).contiguous(memory_format=common.LAYOUTS[layout])
    w = torch.randn(128, 128, 3, 3, generator=g)
    if layout == "channels_last":
        w = w.contiguous(memory_format=torch.channels_last)
    b = torch.randn(128, generator=g)
    fn = {"unfused": unfused, "progan_fast": fused, "compile": compiled, "post-op": post_op}[impl]
    dy = torch.randn(SHAPE, generator=g).contiguous(memory_format=common.LAYOUTS[layout])
    if precision == "bf16" and impl == "post-op":
        x, w, b = x.bfloat16(), w.bfloat16(), b.bfloat16()
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" and impl != "post-op" else None

    def run():
        if ctx is not None:
            ctx.__enter__()
        try:
            if direction == "forward":
                with torch.no_grad():
                    return fn(x, w, b, pixel_norm)
            xs = x.detach().requires_grad_(True)
            ws = w.detach().requires_grad_(True)
            out = fn(xs, ws, b, pixel_norm)
            return torch.autograd.grad(out, (xs, ws), dy.to(out.dtype))
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"allocator: {tune_allocator()}")
    print(f"CPU: {common.describe_cpu(common.cpu_info())}; {torch.get_num_threads()} threads\n")
    compiled = torch.compile(unfused, dynamic=False)
    clock = common.Clock("cpu")
    print("| layer | direction | layout | precision | impl | median ms | min ms | vs unfused (min) |")
    print("|---|---|---|---|---|---|---|---|")
    for pixel_norm in (True, False):
        for direction in ("forward", "forward+backward"):
            for layout in common.LAYOUTS:
                for precision in ("float32", "bf16"):
                    impls = ["unfused", "progan_fast", "compile"] + (["post-op"] if direction == "forward" else [])
                    runs = {impl: build(impl, direction, layout, precision, pixel_norm, compiled) for impl in impls}
                    times = {k: common.summarize(v) for k, v in
                             common.interleave(runs, args.rounds, clock, warmup=2).items()}
                    base = times["unfused"]["min_s"]
                    for impl, t in times.items():
                        print(f"| conv+bias+lrelu{'+PN' if pixel_norm else ''} | {direction} | {layout} | "
                              f"{precision} | {impl} | {t['median_s'] * 1e3:.2f} | {t['min_s'] * 1e3:.2f} | "
                              f"{base / t['min_s']:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
