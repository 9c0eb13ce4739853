"""pixel_norm: reference eager vs reference under torch.compile vs progan_fast kernels, per direction.

Bytes moved (each input read once, each output written once, per pass; the per-pixel rsqrt is ignored):
  forward           x -> y                                      2 tensors
  forward+backward  forward, then x, dy -> dx                    5 tensors
  double-backward   forward+backward (create_graph), then x, dy, g -> grad_x, grad_dy (WGAN-GP)   10 tensors
"""
import pytest
import torch

import progan_fast
from progan_fast import backends, reference
from progan_fast.ops import pixel_norm

from . import common

OP = "pixel_norm"
# progan_fast backends whose kernels run on the benchmark tensors (CPU).
KERNEL_IMPLS = [b for b in ("cpu",) if backends.available(b)[0]]
IMPLS = ["eager", "compile"] + KERNEL_IMPLS
TENSORS_MOVED = {"forward": 2, "forward+backward": 5, "double-backward": 10}

CASES = [(d, s, lay, impl) for d in common.DIRECTIONS for s in common.SHAPES for lay in common.LAYOUTS for impl in IMPLS]


def _double_backward_compile_error():
    """Why torch.compile cannot run the double backward here, or None if it can (probed once, on a tiny input)."""
    fn = torch.compile(lambda t: t * t.square().mean(1, keepdim=True), dynamic=False)
    x = torch.randn(2, 3, requires_grad=True)
    dy = torch.randn(2, 3, requires_grad=True)
    try:
        (dx,) = torch.autograd.grad(fn(x), x, dy, create_graph=True)
        torch.autograd.grad(dx, (x, dy), torch.ones_like(dx))
    except RuntimeError as e:
        return str(e)
    return None


_probe = {}


def _build(direction, impl, x, dy, g, compiled, case):
    if impl == "eager":
        f = reference.pixel_norm
    elif impl == "compile":
        f = compiled(case, reference.pixel_norm)
    else:
        def f(t):
            with progan_fast.use_backend(impl):
                return pixel_norm(t)

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
def test_pixel_norm(benchmark, bench_session, compiled, direction, shape_name, layout, impl):
    if direction == "double-backward" and impl == "compile":
        if "error" not in _probe:
            _probe["error"] = _double_backward_compile_error()
        if _probe["error"] is not None:
            pytest.skip(f"torch.compile cannot differentiate twice here: {_probe['error']}")
    shape = common.SHAPES[shape_name]
    grad = direction != "forward"
    x = common.make_input(shape, layout, requires_grad=grad, seed=0)
    dy = common.make_input(shape, layout, requires_grad=direction == "double-backward", seed=1)
    g = common.make_input(shape, layout, seed=2)
    run = _build(direction, impl, x, dy, g, compiled, (OP, direction, shape_name, layout))
    common.measure(benchmark, bench_session, run, op=OP, direction=direction, impl=impl, shape_name=shape_name,
                   layout=layout, bytes_moved=TENSORS_MOVED[direction] * common.tensor_bytes(x))
