"""pixel_norm: reference eager vs reference under torch.compile vs progan_fast kernels, per direction.

Bytes moved (each input read once, each output written once, per pass; the per-pixel rsqrt is ignored):
  forward           x -> y                                      2 tensors
  forward+backward  forward, then x, dy -> dx                    5 tensors
  double-backward   forward+backward (create_graph), then x, dy, g -> grad_x, grad_dy (WGAN-GP)   10 tensors
"""
import pytest
import torch

from progan_fast import reference
from progan_fast.ops import pixel_norm

from . import common

OP = "pixel_norm"
TENSORS_MOVED = {"forward": 2, "forward+backward": 5, "double-backward": 10}


def cases(device):
    return [(d, s, lay, impl) for d in common.DIRECTIONS for s in common.SHAPES for lay in common.LAYOUTS
            for impl in common.op_impls(OP, device)]


def pytest_generate_tests(metafunc):
    if metafunc.function.__name__ == "test_pixel_norm":
        all_cases = cases(metafunc.config._progan_fast_device)
        metafunc.parametrize("direction,shape_name,layout,impl", all_cases, ids=["-".join(c) for c in all_cases])


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


def test_pixel_norm(benchmark, bench_session, compiled, direction, shape_name, layout, impl):
    if direction == "double-backward" and impl == "compile":
        if "error" not in _probe:
            _probe["error"] = _double_backward_compile_error()
        if _probe["error"] is not None:
            pytest.skip(f"torch.compile cannot differentiate twice here: {_probe['error']}")
    shape = common.SHAPES[shape_name]
    device = bench_session.device
    grad = direction != "forward"
    x = common.make_input(shape, layout, requires_grad=grad, seed=0, device=device)
    dy = common.make_input(shape, layout, requires_grad=direction == "double-backward", seed=1, device=device)
    g = common.make_input(shape, layout, seed=2, device=device)
    run = common.build_op_run(direction, impl, reference.pixel_norm, pixel_norm, (x,), (dy, g), compiled,
                              (OP, direction, shape_name, layout))
    common.measure(benchmark, bench_session, run, op=OP, direction=direction, impl=impl, shape_name=shape_name,
                   layout=layout, bytes_moved=TENSORS_MOVED[direction] * common.tensor_bytes(x))
