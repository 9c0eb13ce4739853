"""The fade-in blends: reference eager vs reference under torch.compile vs progan_fast kernels, per direction.

upsample_blend and fade_reals at the RGB shapes (common.RGB_SHAPES, the high resolution: G's output and the reals
while that resolution fades in); fade_from_rgb, D's input fade, at S2 and S3 (the new path's features; images of
3 channels at twice the resolution). alpha = 0.3, a python float, for every implementation.

Bytes moved (each input read once, each output written once, per pass; X = the high-resolution RGB tensor, F = the
feature map, I = the images, 12 / C of F):
  upsample_blend    forward: low (X / 4) + high -> y = 2.25 X; forward+backward: + g -> grad_high, grad_low = 4.5 X
  fade_reals        forward: x -> y = 2 X; forward+backward: + g -> grad_x = 4 X
  fade_from_rgb     forward: I + new -> y = 2 F + I; forward+backward: + g, I -> grad_new, grad_images = 4 F + 3 I;
                    double-backward (a penalty on the image gradient, WGAN-GP): + grad_y, I, gg_new, gg_images ->
                    grad_grad_y, grad_images = 7 F + 6 I
upsample_blend and fade_reals are linear: a penalty on their input gradient does not depend on the inputs, so they
have no double-backward group.
"""
import pytest
import torch

import progan_fast
from progan_fast import backends, reference
from progan_fast.ops import fade_from_rgb, fade_reals, upsample_blend

from . import common

KERNEL_IMPLS = [b for b in ("cpu",) if backends.available(b)[0]]
IMPLS = ["eager", "compile"] + KERNEL_IMPLS
ALPHA = 0.3
IMAGE_CHANNELS = 3

RGB_CASES = [(op, d, s, lay, impl) for op in ("upsample_blend", "fade_reals") for d in ("forward", "forward+backward")
             for s in common.RGB_SHAPES for lay in common.LAYOUTS for impl in IMPLS]
FROM_RGB_CASES = [(d, s, lay, impl) for d in common.DIRECTIONS for s in ("S2", "S3") for lay in common.LAYOUTS
                  for impl in IMPLS if not (d == "double-backward" and impl == "compile")]


def _implementation(impl, reference_fn, public_fn, compiled, case):
    if impl == "eager":
        return reference_fn
    if impl == "compile":
        return compiled(case, reference_fn)

    def run(*args):
        with progan_fast.use_backend(impl):
            return public_fn(*args)
    return run


def _timed(direction, f, inputs, grad):
    if direction == "forward":
        def run():
            with torch.no_grad():
                return f(*inputs)
    else:
        def run():
            return torch.autograd.grad(f(*inputs), inputs, grad)
    return run


@pytest.mark.parametrize("op,direction,shape_name,layout,impl", RGB_CASES, ids=["-".join(c) for c in RGB_CASES])
def test_rgb_blends(benchmark, bench_session, compiled, op, direction, shape_name, layout, impl):
    n, c, h, w = common.RGB_SHAPES[shape_name]
    grad = direction != "forward"
    high = common.make_input((n, c, h, w), layout, requires_grad=grad, seed=0)
    dy = common.make_input((n, c, h, w), layout, seed=1)
    if op == "upsample_blend":
        low = common.make_input((n, c, h // 2, w // 2), layout, requires_grad=grad, seed=2)
        inputs = [low, high]
        f = _implementation(impl, lambda lo, hi: reference.upsample_blend(lo, hi, ALPHA),
                            lambda lo, hi: upsample_blend(lo, hi, ALPHA), compiled, (op, direction, shape_name, layout))
        tensors = 2.25 if direction == "forward" else 4.5
    else:
        inputs = [high]
        f = _implementation(impl, lambda x: reference.fade_reals(x, ALPHA), lambda x: fade_reals(x, ALPHA), compiled,
                            (op, direction, shape_name, layout))
        tensors = 2 if direction == "forward" else 4
    common.measure(benchmark, bench_session, _timed(direction, f, inputs, dy), op=op, direction=direction, impl=impl,
                   shape_name=shape_name, layout=layout, bytes_moved=tensors * common.tensor_bytes(high))


@pytest.mark.parametrize("direction,shape_name,layout,impl", FROM_RGB_CASES, ids=["-".join(c) for c in FROM_RGB_CASES])
def test_fade_from_rgb(benchmark, bench_session, compiled, direction, shape_name, layout, impl):
    n, c, h, w = common.SHAPES[shape_name]
    grad = direction != "forward"
    images = common.make_input((n, IMAGE_CHANNELS, 2 * h, 2 * w), layout, requires_grad=grad, seed=0)
    new = common.make_input((n, c, h, w), layout, requires_grad=grad, seed=1)
    g = torch.Generator().manual_seed(2)
    weight = torch.randn(c, IMAGE_CHANNELS, 1, 1, generator=g).requires_grad_(grad)
    bias = torch.randn(c, generator=g).requires_grad_(grad)
    dy = common.make_input((n, c, h, w), layout, requires_grad=direction == "double-backward", seed=3)
    inputs = [images, new, weight, bias]
    f = _implementation(impl, lambda i, x, wt, b: reference.fade_from_rgb(i, x, wt, b, ALPHA),
                        lambda i, x, wt, b: fade_from_rgb(i, x, wt, b, ALPHA), compiled,
                        ("fade_from_rgb", direction, shape_name, layout))
    if direction == "double-backward":
        gg_images = common.make_input(images.shape, layout, seed=4)
        gg_new = common.make_input(new.shape, layout, seed=5)

        def run():
            grad_images, grad_new = torch.autograd.grad(f(*inputs), (images, new), dy, create_graph=True)
            return torch.autograd.grad((grad_images, grad_new), (dy, images, weight), (gg_images, gg_new))
        tensors = 7
    else:
        run = _timed(direction, f, inputs, dy)
        tensors = {"forward": 2, "forward+backward": 4}[direction]
    image_share = {"forward": 1, "forward+backward": 3, "double-backward": 6}[direction]
    common.measure(benchmark, bench_session, run, op="fade_from_rgb", direction=direction, impl=impl,
                   shape_name=shape_name, layout=layout,
                   bytes_moved=tensors * common.tensor_bytes(new) + image_share * common.tensor_bytes(images))
