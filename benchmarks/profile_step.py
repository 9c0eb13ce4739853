"""Where a training iteration's time goes: `python -m benchmarks.profile_step [--resolution 32] [--case NAME]`.

Runs one case of the train-step benchmark (benchmarks/train_step.py) under torch.profiler for a few iterations
after a warm-up, and prints the aten ops ordered by self CPU time with their share, then the same grouped into
categories (convolutions, elementwise, copies, reductions, optimizer, ...), so the remaining costs can be listed
in order. --case takes a name as the train-step group prints it ("baseline", "progan_fast[cpu] channels_last",
"progan_fast[cpu] channels_last bf16", ...).
"""
import argparse
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from . import common
from .train_step import CONFIG, Case, TrainStep

CATEGORIES = (
    ("convolution", ("convolution", "conv2d", "conv_transpose", "mkldnn_conv", "_convolution", "slow_conv")),
    ("matmul", ("mm", "addmm", "linear", "matmul", "bmm")),
    ("copy / layout", ("copy_", "contiguous", "clone", "to_copy", "_to_copy", "cat", "repeat", "expand")),
    ("optimizer (Adam, EMA)", ("_foreach", "adam", "lerp_", "addcmul_", "addcdiv_", "sqrt_", "maximum")),
    ("pool / resample", ("pool", "upsample", "interpolate")),
    ("activation", ("leaky_relu", "relu", "threshold")),
    ("reduction / norm", ("sum", "mean", "norm", "var", "rsqrt", "sqrt", "pow", "square")),
    ("elementwise", ("mul", "add", "sub", "div", "lerp", "where", "neg", "fill_", "zero_")),
    ("allocation", ("empty", "resize_", "zeros", "ones")),
)


def category(name):
    lowered = name.lower()
    for label, needles in CATEGORIES:
        if any(n in lowered for n in needles):
            return label
    return "other"


def case_by_name(name):
    families = [f for f in ("cpu", "cuda", "triton")]
    candidates = [Case("baseline"), Case("baseline", compile_g=True), Case("baseline", layout="channels_last"),
                  Case("baseline", amp="bf16"), Case("baseline", layout="channels_last", amp="bf16")]
    for backend in ["reference", None] + families:
        for layout in common.LAYOUTS:
            for amp in ("none", "bf16"):
                candidates.append(Case("progan_fast", backend=backend, layout=layout, amp=amp))
    candidates.append(Case("progan_fast", backend="cpu", layout="channels_last", conv="winograd"))
    for case in candidates:
        if case.name == name:
            return case
    raise SystemExit(f"unknown case {name!r}; known: {', '.join(c.name for c in candidates)}")


def profile_case(case, resolution, iterations=3, device="cpu"):
    """[(op name, self seconds per iteration, calls per iteration)], ordered by self time, and the total."""
    step = TrainStep(case, resolution.bit_length() - 1, 0.5, config=CONFIG, device=device)
    step()
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(device).type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(iterations):
            step()
    rows = []
    for evt in prof.key_averages():
        self_s = evt.self_cpu_time_total / 1e6 / iterations
        if self_s > 0:
            rows.append((evt.key, self_s, evt.count / iterations))
    rows.sort(key=lambda r: -r[1])
    return rows, sum(r[1] for r in rows)


def render(rows, total, top=25):
    lines = ["| # | op | self ms / iteration | share | calls / iteration |", "|---|---|---|---|---|"]
    for i, (name, s, calls) in enumerate(rows[:top], 1):
        lines.append(f"| {i} | `{name}` | {s * 1e3:.1f} | {s / total:.1%} | {calls:.0f} |")
    groups = {}
    for name, s, calls in rows:
        label = category(name)
        t, c = groups.get(label, (0.0, 0.0))
        groups[label] = (t + s, c + calls)
    lines += ["", "| category | self ms / iteration | share | calls / iteration |", "|---|---|---|---|"]
    for label, (s, calls) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        lines.append(f"| {label} | {s * 1e3:.1f} | {s / total:.1%} | {calls:.0f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--case", default="progan_fast[cpu] channels_last")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from progan_fast import tune_allocator
    print(f"allocator: {tune_allocator()}")
    print(f"CPU: {common.describe_cpu(common.cpu_info())}; {torch.get_num_threads()} threads")
    case = case_by_name(args.case)
    rows, total = profile_case(case, args.resolution, args.iterations, args.device)
    print(f"\n{case.name} at {args.resolution}x{args.resolution}: {total * 1e3:.0f} ms of op self time per "
          f"iteration ({args.iterations} profiled)\n")
    print(render(rows, total, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
