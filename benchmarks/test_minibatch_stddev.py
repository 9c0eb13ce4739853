"""minibatch_stddev: reference eager vs reference under torch.compile vs progan_fast kernels, per direction.

TF official's convention (strided groups of 4, biased variance, one map), as D uses it. Shapes: the standard
S1-S3, and D's own (N, 512, 4, 4) for N in 16, 64, 128 ("D16", "D64", "D128": forward+backward only; they fit in
cache, so they are judged against compile: >= 1.5x). At S2/S3 the op's target is >= 2x compile on top of the
contract's roofline target.

Bytes moved (each input read once, each output written once, per pass; x: N*C*H*W, y: N*(C+1)*H*W elements):
  forward           x -> y                                                    x + y
  forward+backward  forward, then x, dy -> dx                                 3x + 2y
  double-backward   forward+backward (create_graph), then x, dy, g -> grad_x, grad_dy (WGAN-GP)   6x + 4y
"""
import pytest
import torch

import progan_fast
from progan_fast import backends, reference
from progan_fast.ops import minibatch_stddev

from . import common

OP = "minibatch_stddev"
GROUP_SIZE = 4
KERNEL_IMPLS = [b for b in ("cpu",) if backends.available(b)[0]]
IMPLS = ["eager", "compile"] + KERNEL_IMPLS
D_SHAPES = {"D16": (16, 512, 4, 4), "D64": (64, 512, 4, 4), "D128": (128, 512, 4, 4)}
# The targets over compile, forward+backward: D's shapes in cache, S2/S3 where compile is far from the
# roofline.
TARGET_SPEEDUP_VS_COMPILE = {"D16": 1.5, "D64": 1.5, "D128": 1.5, "S2": 2.0, "S3": 2.0}
X_Y_MOVED = {"forward": (1, 1), "forward+backward": (3, 2), "double-backward": (6, 4)}

CASES = ([(d, s, lay, impl) for d in common.DIRECTIONS for s in common.SHAPES for lay in common.LAYOUTS
          for impl in IMPLS] +
         [("forward+backward", s, lay, impl) for s in D_SHAPES for lay in common.LAYOUTS for impl in IMPLS])


def _double_backward_compile_error():
    """Why torch.compile cannot run the double backward here, or None if it can (probed once, on a tiny input)."""
    fn = torch.compile(lambda t: reference.minibatch_stddev(t, 2), dynamic=False)
    x = torch.randn(4, 3, 2, 2, requires_grad=True)
    dy = torch.randn(4, 4, 2, 2, requires_grad=True)
    try:
        (dx,) = torch.autograd.grad(fn(x), x, dy, create_graph=True)
        torch.autograd.grad(dx, (x, dy), torch.ones_like(dx))
    except RuntimeError as e:
        return str(e)
    return None


_probe = {}


def _reference(t):
    return reference.minibatch_stddev(t, GROUP_SIZE)


def _build(direction, impl, x, dy, g, compiled, case):
    if impl == "eager":
        f = _reference
    elif impl == "compile":
        f = compiled(case, _reference)
    else:
        def f(t):
            with progan_fast.use_backend(impl):
                return minibatch_stddev(t, GROUP_SIZE)

    if direction == "forward":
        def run():
            with torch.no_grad():
                return f(x)
    elif direction == "forward+backward":
        def run():
            return torch.autograd.grad(f(x), x, dy)
    else:
        def run():
            (dx,) = torch.autograd.grad(f(x), x, dy, create_graph=True)
            return torch.autograd.grad(dx, (x, dy), g)
    return run


@pytest.mark.parametrize("direction,shape_name,layout,impl", CASES, ids=["-".join(c) for c in CASES])
def test_minibatch_stddev(benchmark, bench_session, compiled, direction, shape_name, layout, impl):
    if direction == "double-backward" and impl == "compile":
        if "error" not in _probe:
            _probe["error"] = _double_backward_compile_error()
        if _probe["error"] is not None:
            pytest.skip(f"torch.compile cannot differentiate twice here: {_probe['error']}")
    shape = D_SHAPES.get(shape_name) or common.SHAPES[shape_name]
    n, c, h, w = shape
    out_shape = (n, c + 1, h, w)
    x = common.make_input(shape, layout, requires_grad=direction != "forward", seed=0)
    dy = common.make_input(out_shape, layout, requires_grad=direction == "double-backward", seed=1)
    g = common.make_input(shape, layout, seed=2)
    run = _build(direction, impl, x, dy, g, compiled, (OP, direction, shape_name, layout))
    x_moved, y_moved = X_Y_MOVED[direction]
    common.measure(benchmark, bench_session, run, op=OP, direction=direction, impl=impl, shape_name=shape_name,
                   layout=layout, shape=shape,
                   bytes_moved=x_moved * common.tensor_bytes(x) + y_moved * common.tensor_bytes(dy),
                   target_speedup_vs_compile=(TARGET_SPEEDUP_VS_COMPILE.get(shape_name)
                                              if direction == "forward+backward" else None))


@pytest.mark.parametrize("mode", [[], ["--bare"]], ids=["vs-compile", "bare"])
def test_vs_compile_script_runs(capsys, mode):
    """`python -m benchmarks.minibatch_stddev_vs_compile` (the measure of this op's targets) keeps working: one
    round at D16 prints a row per layout."""
    from .minibatch_stddev_vs_compile import main

    threads = torch.get_num_threads()
    try:
        main(["--rounds", "1", "--shapes", "D16"] + mode)
    finally:
        torch.set_num_threads(threads)
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("D16 ")]
    assert [row.split()[1] for row in rows] == ["NCHW", "channels_last"]
