"""minibatch_stddev against torch.compile of its reference, forward+backward, interleaved in one process.

    python -m benchmarks.minibatch_stddev_vs_compile [--threads 1] [--rounds 20] [--shapes S2,S3,D16,D64,D128]

The issue's targets are ratios to compile (>= 2x at S2/S3, >= 1.5x at D's (N, 512, 4, 4)). On a shared machine the
pytest benchmark's medians of wall time scatter too much to judge them, so this script measures what they need and
nothing else: every round runs every case once (both layouts, compile and the public op alternating), with the
trainer's allocator setting, and times each call with `time.thread_time` on one thread (a descheduled call does not
count; thread_time is the calling thread's CPU time, so more threads fall back to wall time). It prints the CPU and,
per case, the median and minimum times and their ratios.

    python -m benchmarks.minibatch_stddev_vs_compile --bare

times the raw kernels instead (`torch.ops.progan_fast.minibatch_stddev_forward` / `_backward`, no autograd)
beside a clone and an add of the same x: the forward moves a clone's bytes, the backward 1.5x an add's (two
tensors read, one written), so the ratios show how far each direction is from its traffic.
"""
import argparse
import statistics
import time

import torch

import progan_fast
from progan_fast.ops import minibatch_stddev

from .common import SHAPES, allow_recompiles, cpu_info
from .test_minibatch_stddev import D_SHAPES, GROUP_SIZE, TARGET_SPEEDUP_VS_COMPILE, _reference

LAYOUTS = {"NCHW": torch.contiguous_format, "channels_last": torch.channels_last}


def _ours(t):
    return minibatch_stddev(t, GROUP_SIZE)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.minibatch_stddev_vs_compile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--shapes", default="S2,S3,D16,D64,D128")
    parser.add_argument("--bare", action="store_true",
                        help="time the raw forward and backward kernels beside a clone and an add of x instead")
    args = parser.parse_args(argv)
    shapes = {**SHAPES, **D_SHAPES}
    names = args.shapes.split(",")
    unknown = [n for n in names if n not in shapes]
    if unknown:
        parser.error(f"--shapes: unknown {unknown}; choose from {sorted(shapes)}")
    if args.threads < 1 or args.rounds < 1:
        parser.error("--threads and --rounds must be at least 1")

    allow_recompiles()  # every case compiles the same reference for its own shape and layout
    setting = progan_fast.tune_allocator()
    torch.set_num_threads(args.threads)
    clock = time.thread_time if args.threads == 1 else time.perf_counter
    info = cpu_info()
    print(f"{info['model']} ({info['logical_cores']} logical cores, {', '.join(info['isa'])}); torch "
          f"{torch.__version__}, {args.threads} thread(s), {'thread_time' if args.threads == 1 else 'wall time'}; "
          f"{setting}")

    if args.bare:
        return _bare(names, shapes, args.rounds, clock)
    cases = []
    for name in names:
        for layout, memory_format in LAYOUTS.items():
            x = torch.randn(shapes[name]).contiguous(memory_format=memory_format).requires_grad_(True)
            dy = torch.randn_like(_ours(x))
            for impl, fn in (("compile", torch.compile(_reference, dynamic=False)), ("progan_fast", _ours)):
                cases.append(((name, layout, impl), lambda fn=fn, x=x, dy=dy: torch.autograd.grad(fn(x), x, dy)))
    times = _interleaved_times(cases, args.rounds, clock)

    print(f"{'shape':6} {'layout':13} {'compile ms':>11} {'ours ms':>9} {'ratio':>6} {'by minima':>10} target")
    for name in names:
        for layout in LAYOUTS:
            theirs, ours = times[(name, layout, "compile")], times[(name, layout, "progan_fast")]
            median, best = (statistics.median(theirs) / statistics.median(ours), min(theirs) / min(ours))
            target = TARGET_SPEEDUP_VS_COMPILE.get(name)
            print(f"{name:6} {layout:13} {1e3 * statistics.median(theirs):11.2f} {1e3 * statistics.median(ours):9.2f} "
                  f"{median:5.2f}x {best:9.2f}x {'' if target is None else f'>= {target}x'}")


def _interleaved_times(cases, rounds, clock):
    """{key: [seconds per call]} for [(key, fn)]: three untimed calls each first (compile, allocator warm-up), then
    every round calls every case once, so load on the machine hits them alike."""
    for _, fn in cases:
        for _ in range(3):
            fn()
    times = {key: [] for key, _ in cases}
    for _ in range(rounds):
        for key, fn in cases:
            start = clock()
            fn()
            times[key].append(clock() - start)
    return times


def _bare(names, shapes, rounds, clock):
    """The raw kernels' forward and backward beside the copies whose traffic they match, interleaved."""
    ops = torch.ops.progan_fast
    params = (GROUP_SIZE, "strided", False, 1e-8, 1)
    cases = []
    for name in names:
        for layout, memory_format in LAYOUTS.items():
            x = torch.randn(shapes[name]).contiguous(memory_format=memory_format)
            dy = torch.randn_like(ops.minibatch_stddev_forward(x, *params))
            for what, fn in (("clone", lambda x=x: x.clone()),
                             ("forward", lambda x=x: ops.minibatch_stddev_forward(x, *params)),
                             ("add", lambda x=x: torch.add(x, x)),
                             ("backward", lambda x=x, dy=dy: ops.minibatch_stddev_backward(dy, x, *params))):
                cases.append(((name, layout, what), fn))
    times = _interleaved_times(cases, rounds, clock)

    print(f"{'shape':6} {'layout':13} {'clone ms':>9} {'forward ms':>11} {'x clone':>8} {'add ms':>7} "
          f"{'backward ms':>12} {'x add':>6}")
    for name in names:
        for layout in LAYOUTS:
            ms = {what: 1e3 * statistics.median(times[(name, layout, what)])
                  for what in ("clone", "forward", "add", "backward")}
            print(f"{name:6} {layout:13} {ms['clone']:9.2f} {ms['forward']:11.2f} {ms['forward'] / ms['clone']:7.2f}x "
                  f"{ms['add']:7.2f} {ms['backward']:12.2f} {ms['backward'] / ms['add']:5.2f}x")


if __name__ == "__main__":
    main()
