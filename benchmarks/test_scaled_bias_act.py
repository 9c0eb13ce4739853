"""scaled_bias_act (the equalized-lr epilogue) and the whole eq_conv2d layer: reference eager vs reference under
torch.compile vs progan_fast kernels.

Groups (the report's "op"):
  scaled_bias_act      bias + leaky ReLU (0.2) + scale: every D layer
  scaled_bias_act_pn   the same + pixel norm: every G conv
  eq_conv2d[_up|_down] the whole layer (conv + epilogue + pixel norm), forward+backward, against the same layer
                       written unfused (scaled weight copy, nearest-up / conv / box-down, bias add, leaky ReLU,
                       pixel norm as separate ops; TF official's way) in eager PyTorch; no compile column (a
                       compiled conv layer is a conv benchmark). extra_info has the bytes each saves for backward.
                       The plain layer in channels_last also runs with its 3x3 conv by Winograd F(4x4, 3x3)
                       (impl "cpu-winograd", progan_fast/ops/winograd.py), which only that layer and layout take.
Bytes moved by the epilogue (each input read once, each output written once; bias and rsqrt ignored):
  forward           x -> y                                                        2 tensors
  forward+backward  forward, then grad_y, y -> grad_x (and grad_bias)             5 tensors
  double-backward   forward+backward (create_graph), then the gradient of grad_x:
                    without pixel norm G, y -> grad of grad_y                    8 tensors
                    with pixel norm G, grad_y, y -> two gradients, then the forward's backward of one   13 tensors
The layer records (extra_info kind "layer", a table of their own in benchmarks.report) are judged against no
roofline: the convolution dominates them.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import progan_fast
from progan_fast import backends, reference
from progan_fast.ops import eq_conv2d, scaled_bias_act, winograd

from . import common

KERNEL_IMPLS = [b for b in ("cpu",) if backends.available(b)[0]]
IMPLS = ["eager", "compile"] + KERNEL_IMPLS
SCALE = 1 / math.sqrt(9 * 256)
EPILOGUES = {"scaled_bias_act": False, "scaled_bias_act_pn": True}
TENSORS_MOVED = {("forward", False): 2, ("forward+backward", False): 5, ("double-backward", False): 8,
                 ("forward", True): 2, ("forward+backward", True): 5, ("double-backward", True): 13}

CASES = [(op, d, s, lay, impl) for op in EPILOGUES for d in common.DIRECTIONS for s in common.SHAPES
         for lay in common.LAYOUTS for impl in IMPLS if not (d == "double-backward" and impl == "compile")]


def _epilogue(impl, pixel_norm, compiled, case):
    def ref(x, b):
        return reference.scaled_bias_act(x, b, SCALE, "lrelu", 0.2, pixel_norm)

    if impl == "eager":
        return ref
    if impl == "compile":
        return compiled(case, ref)

    def kernel(x, b):
        with progan_fast.use_backend(impl):
            return scaled_bias_act(x, b, SCALE, "lrelu", 0.2, pixel_norm)
    return kernel


@pytest.mark.parametrize("op,direction,shape_name,layout,impl", CASES, ids=["-".join(c) for c in CASES])
def test_scaled_bias_act(benchmark, bench_session, compiled, op, direction, shape_name, layout, impl):
    pixel_norm = EPILOGUES[op]
    shape = common.SHAPES[shape_name]
    grad = direction != "forward"
    x = common.make_input(shape, layout, requires_grad=grad, seed=0)
    bias = torch.randn(shape[1]).requires_grad_(grad)
    dy = common.make_input(shape, layout, requires_grad=direction == "double-backward", seed=1)
    g = common.make_input(shape, layout, seed=2)
    f = _epilogue(impl, pixel_norm, compiled, (op, direction, shape_name, layout))
    if direction == "forward":
        def run():
            with torch.no_grad():
                return f(x, bias)
    elif direction == "forward+backward":
        def run():
            return torch.autograd.grad(f(x, bias), (x, bias), dy)
    else:
        def run():  # WGAN-GP: the gradient of a function of grad_x, w.r.t. everything it depends on
            (dx,) = torch.autograd.grad(f(x, bias), x, dy, create_graph=True)
            return torch.autograd.grad(dx, (x, bias, dy), g, allow_unused=True)
    common.measure(benchmark, bench_session, run, op=op, direction=direction, impl=impl, shape_name=shape_name,
                   layout=layout, bytes_moved=TENSORS_MOVED[(direction, pixel_norm)] * common.tensor_bytes(x))


# ---- the whole layer ----

def _nearest_up2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


def unfused_layer(x, weight, bias, up, down):
    """TF official's unfused conv layer: scaled weight copy, nearest-up / conv / box-down, bias, leaky ReLU, PN."""
    w = weight * (math.sqrt(2) / math.sqrt(weight[0].numel()))
    if up:
        x = _nearest_up2(x)
    y = F.conv2d(x, w, padding=1)
    if down:
        y = F.avg_pool2d(y, 2)
    y = F.leaky_relu(y + bias.view(1, -1, 1, 1), 0.2)
    return y * torch.rsqrt(y.square().mean(1, keepdim=True) + 1e-8)


def fused_layer(x, weight, bias, up, down):
    with progan_fast.use_backend("cpu"):
        return eq_conv2d(x, weight, bias, pixel_norm=True, up=up, down=down)


def winograd_layer(x, weight, bias, up, down):
    with winograd.use_conv_algorithm("winograd"):
        return fused_layer(x, weight, bias, up, down)


LAYERS = {"eq_conv2d": (False, False), "eq_conv2d_up": (True, False), "eq_conv2d_down": (False, True)}
LAYER_CASES = [(op, s, lay, impl) for op in LAYERS for s in common.SHAPES for lay in common.LAYOUTS
               for impl in ["eager"] + KERNEL_IMPLS]
LAYER_CASES += [("eq_conv2d", s, "channels_last", "cpu-winograd") for s in common.SHAPES if "cpu" in KERNEL_IMPLS]


def saved_bytes(fn, *inputs):
    """Bytes of the distinct storages fn saves for backward, other than its inputs' and its output's (the output
    is the next layer's input, which that layer saves anyway)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn(*inputs)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    for alive in (out,) + inputs:
        storages.pop(alive.untyped_storage().data_ptr(), None)
    return sum(storages.values())


@pytest.mark.parametrize("op,shape_name,layout,impl", LAYER_CASES, ids=["-".join(c) for c in LAYER_CASES])
def test_eq_conv2d_layer(benchmark, bench_session, op, shape_name, layout, impl):
    """forward+backward of the layer whose OUTPUT has the standard shape (C in, C out, 3x3)."""
    up, down = LAYERS[op]
    n, c, h, w = common.SHAPES[shape_name]
    in_shape = (n, c, h // 2, w // 2) if up else (n, c, h * 2, w * 2) if down else (n, c, h, w)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(in_shape, generator=g).contiguous(memory_format=common.LAYOUTS[layout]).requires_grad_()
    weight = torch.randn(c, c, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(c, generator=g, requires_grad=True)
    fn = {"eager": unfused_layer, "cpu-winograd": winograd_layer}.get(impl, fused_layer)
    dy = torch.randn(n, c, h, w, generator=g).contiguous(memory_format=common.LAYOUTS[layout])

    def run():
        return torch.autograd.grad(fn(x, weight, bias, up, down), (x, weight, bias), dy)

    common.measure(benchmark, bench_session, run, op=op, direction="forward+backward", impl=impl,
                   shape_name=shape_name, layout=layout, bytes_moved=5 * common.tensor_bytes(dy))
    benchmark.extra_info["kind"] = "layer"  # benchmarks.report lists it with the other layers, not the ops
    benchmark.extra_info["saved_for_backward_bytes"] = saved_bytes(lambda *a: fn(*a, up, down), x, weight, bias)
