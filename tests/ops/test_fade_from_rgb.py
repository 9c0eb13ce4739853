"""fade_from_rgb (D's input fade as one op) over every kernel family (cpu, emulated CUDA, interpreted Triton)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

import progan_fast
from progan_fast import _library, backends, reference
from progan_fast.ops import fade_from_rgb

from .parity import SEEDS, assert_close, check_parity, families_of, layout

BACKENDS = families_of("fade_from_rgb")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
LAYOUT_IDS = ["nchw", "channels_last"]
# (N, C, H, W, C_img): RGB, grayscale, RGBA and 5 image channels (the generic paths); one pixel, odd sizes, C = 1
SHAPES = [(2, 8, 4, 4, 3), (1, 1, 1, 1, 3), (3, 5, 3, 5, 1), (2, 4, 2, 3, 5), (1, 16, 2, 2, 4)]


def operands(n, c, h, w, c_img, dtype=torch.float32, memory_format=torch.contiguous_format, generator=None):
    def randn(*shape):
        return torch.randn(shape, dtype=torch.float64, generator=generator).to(dtype)
    images = layout(randn(n, c_img, 2 * h, 2 * w), memory_format)
    new = layout(randn(n, c, h, w), memory_format)
    weight = randn(c, c_img, 1, 1)
    bias = randn(c)
    return [images, new, weight, bias]


def old_path(images, weight, bias, gain=math.sqrt(2), lr_mul=1.0, negative_slope=0.2):
    """fromRGB of the pooled images, written out (the unfused pipeline D used before)."""
    pooled = F.avg_pool2d(images, 2)
    z = F.conv2d(pooled, weight) * (gain * lr_mul / math.sqrt(images.shape[1])) + lr_mul * bias.view(1, -1, 1, 1)
    return F.leaky_relu(z, negative_slope)


def test_cpu_kernel_is_built():
    assert backends.resolve("fade_from_rgb", torch.device("cpu")) == "cpu"


def test_every_family_is_tested():
    assert {"cpu", "emulated"} <= set(BACKENDS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_parity(backend, dtype, memory_format, shape):
    """Forward, the gradients of images, new, weight and bias, and a gradient penalty on the images (WGAN-GP's
    double backward) against the float64 reference."""
    inputs = operands(*shape, dtype=dtype, memory_format=memory_format)
    alpha = torch.tensor(0.3) if dtype == torch.float32 else 0.6
    check_parity(backend, lambda i, n, w, b: fade_from_rgb(i, n, w, b, alpha, lr_mul=0.5, negative_slope=0.1),
                 lambda i, n, w, b: reference.fade_from_rgb(i, n, w, b, alpha, lr_mul=0.5, negative_slope=0.1),
                 inputs, dtype, op="fade_from_rgb", layout_input=1)


def test_reference_is_the_unfused_pipeline():
    images, new, weight, bias = operands(2, 6, 3, 4, 3, dtype=torch.float64)
    old = old_path(images, weight, bias, lr_mul=0.5)
    torch.testing.assert_close(reference.fade_from_rgb(images, new, weight, bias, 0.3, lr_mul=0.5),
                               old + (new - old) * 0.3)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_endpoints(backend, memory_format):
    images, new, weight, bias = operands(2, 6, 3, 4, 3, memory_format=memory_format)
    with progan_fast.use_backend(backend):
        assert torch.equal(fade_from_rgb(images, new, weight, bias, 1.0), new)
        at_zero = fade_from_rgb(images, new, weight, bias, torch.tensor(0.0))
    assert_close(at_zero, old_path(images.double(), weight.double(), bias.double()), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("c_img", [3, 5])
def test_gradcheck_and_gradgradcheck(backend, memory_format, c_img):
    """Every first and second derivative, including those through grad_weight and grad_bias (the interpreted
    Triton kernels check random projections of the Jacobians: the full ones take minutes there)."""
    inputs = [t.requires_grad_() for t in operands(2, 3, 2, 3, c_img, torch.float64, memory_format)]

    def fn(i, n, w, b):
        return fade_from_rgb(i, n, w, b, 0.35, gain=1.3, lr_mul=0.7, negative_slope=0.25)

    fast = backend == "triton"
    with progan_fast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, inputs, fast_mode=fast)
        assert torch.autograd.gradgradcheck(fn, inputs, fast_mode=fast)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_op_third_order(backend):
    """The double backward is a differentiable formula: derivatives of the backward op to the second order."""
    ops = _library.family_ops(backend)
    images, _, weight, bias = [t.requires_grad_() for t in operands(1, 3, 2, 2, 3, torch.float64)]
    grad_y = torch.randn(1, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.4, dtype=torch.float64)

    def backward_op(g, i, w, b):
        return ops.fade_from_rgb_backward(g, i, w, b, alpha, 0.8, 1.0, 0.2)

    fast = backend == "triton"
    assert torch.autograd.gradcheck(backward_op, (grad_y, images, weight, bias), fast_mode=fast)
    assert torch.autograd.gradgradcheck(backward_op, (grad_y, images, weight, bias), fast_mode=fast)


def test_differentiable_alpha_runs_the_reference():
    inputs = [t.requires_grad_() for t in operands(1, 3, 2, 2, 3, torch.float64)]
    alpha = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda i, n, w, b, a: fade_from_rgb(i, n, w, b, a), (*inputs, alpha))
    for family in ("cpu", "emulated"):
        with pytest.raises(RuntimeError, match="alpha must not require grad"):
            _library.family_ops(family).fade_from_rgb_forward(*inputs, alpha, 1.0, 1.0, 0.2).sum().backward()


def test_saves_no_feature_map():
    """Saved for backward: the images, the old fromRGB's weight and bias, and alpha; nothing of new's size."""
    images, new, weight, bias = [t.requires_grad_() for t in operands(2, 16, 4, 4, 3)]
    saved = []
    with progan_fast.use_backend("cpu"), torch.autograd.graph.saved_tensors_hooks(
            lambda t: saved.append(t) or t, lambda t: t):
        fade_from_rgb(images, new, weight, bias, 0.5)
    assert sorted(tuple(t.shape) for t in saved) == sorted([(2, 3, 8, 8), (16, 3, 1, 1), (16,), ()])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck(backend, dtype):
    ops = _library.family_ops(backend)
    alpha = torch.tensor(0.4)
    for memory_format in LAYOUTS:
        for shape in [(2, 4, 2, 3, 3), (1, 1, 1, 1, 1), (2, 3, 2, 2, 5)]:
            images, new, weight, bias = operands(*shape, dtype=dtype, memory_format=memory_format)
            for requires_grad in (False, True):
                args = [t.detach().requires_grad_(requires_grad) for t in (images, new, weight, bias)]
                torch.library.opcheck(ops.fade_from_rgb_forward.default, (*args, alpha, 0.5, 1.0, 0.2))
                grad_y = torch.randn_like(new).requires_grad_(requires_grad)
                torch.library.opcheck(ops.fade_from_rgb_backward.default,
                                      (grad_y, args[0], args[2], args[3], alpha, 0.5, 1.0, 0.2))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_compile_fullgraph(memory_format):
    torch._dynamo.reset()
    compiles = []

    def counting_backend(gm, example_inputs):
        compiles.append(gm)
        return gm.forward

    def fn(i, n, w, b, a):
        return fade_from_rgb(i, n * 2.0, w, b, a).square().sum()

    inputs = [t.requires_grad_() for t in operands(2, 8, 3, 4, 3, memory_format=memory_format)]
    compiled = torch.compile(fn, fullgraph=True, backend=counting_backend)
    with progan_fast.use_backend("cpu"):
        for a in (0.1, 0.6):
            expected = fn(*inputs, torch.tensor(a))
            got = compiled(*inputs, torch.tensor(a))
            torch.testing.assert_close(got, expected)
            torch.testing.assert_close(torch.autograd.grad(got, inputs), torch.autograd.grad(expected, inputs))
        assert len(compiles) == 1
        got = torch.compile(fn, fullgraph=True, backend="inductor")(*inputs, torch.tensor(0.6))
    torch.testing.assert_close(got, expected)
    assert torch._dynamo.explain(fn)(*inputs, torch.tensor(0.3)).graph_break_count == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_layouts_and_strided_inputs(backend):
    """The outputs follow `new` (forward) and grad_y (backward); other layouts and strides are copied."""
    images, new, weight, bias = operands(2, 6, 3, 4, 3)
    new_cl = new.contiguous(memory_format=torch.channels_last)
    strided_images = torch.stack([images, images], -1)[..., 0]
    with progan_fast.use_backend(backend):
        y = fade_from_rgb(images, new_cl, weight, bias, 0.3)
        y2 = fade_from_rgb(strided_images, new.transpose(2, 3).contiguous().transpose(2, 3), weight, bias, 0.3)
    assert y.is_contiguous(memory_format=torch.channels_last)
    expected = reference.fade_from_rgb(images.double(), new.double(), weight.double(), bias.double(), 0.3)
    assert_close(y, expected, torch.float32)
    assert_close(y2, expected, torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_blocks_and_streaming(backend):
    """Maps wider than one CPU task's block and outputs large enough for the CPU kernel's streaming stores (odd
    sizes: unaligned heads and tails); the other families run a smaller case of the same shape class."""
    shape = (2, 64, 37, 131, 3) if backend == "cpu" else (1, 3, 9, 67, 3)
    for memory_format in LAYOUTS:
        inputs = operands(*shape, memory_format=memory_format)
        check_parity(backend, lambda i, n, w, b: fade_from_rgb(i, n, w, b, 0.45),
                     lambda i, n, w, b: reference.fade_from_rgb(i, n, w, b, 0.45), inputs, torch.float32,
                     check_double_backward=False, op="fade_from_rgb", layout_input=1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_ops_refuse_mismatched_operands(backend):
    ops = _library.family_ops(backend)
    images, new, weight, bias = operands(2, 4, 2, 3, 3)
    alpha = torch.tensor(0.5)
    with pytest.raises(RuntimeError, match="images must have shape"):
        ops.fade_from_rgb_forward(images[..., :4], new, weight, bias, alpha, 1.0, 1.0, 0.2)
    with pytest.raises(RuntimeError, match="weight must have shape"):
        ops.fade_from_rgb_forward(images, new, weight[:3], bias, alpha, 1.0, 1.0, 0.2)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        ops.fade_from_rgb_backward(new, images, weight, bias[:2], alpha, 1.0, 1.0, 0.2)
    with pytest.raises(TypeError, match="images must have grad_y's dtype"):
        ops.fade_from_rgb_backward(new, images.double(), weight, bias, alpha, 1.0, 1.0, 0.2)
    with pytest.raises(RuntimeError, match="alpha must be a 0-dim floating tensor"):
        ops.fade_from_rgb_forward(images, new, weight, bias, torch.tensor([0.5]), 1.0, 1.0, 0.2)
    with pytest.raises(ValueError, match="alpha must be finite and in \\[0, 1\\]"):
        ops.fade_from_rgb_forward(images, new, weight, bias, torch.tensor(1.5), 1.0, 1.0, 0.2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_raw_ops_refuse_non_finite_scalars(backend):
    """Found by tests/test_fuzz_raw_ops.py: a NaN/Inf scale, bias_gain or slope gave results that differ from
    the reference's (e.g. NaN where it has finite values)."""
    ops = _library.family_ops(backend)
    images, new, weight, bias = operands(2, 4, 2, 3, 3)
    alpha = torch.tensor(0.5)
    for name, floats in (("scale", (math.inf, 1.0, 0.2)), ("bias_gain", (1.0, math.nan, 0.2)),
                         ("negative_slope", (1.0, 1.0, math.nan))):
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            ops.fade_from_rgb_forward(images, new, weight, bias, alpha, *floats)
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            ops.fade_from_rgb_backward(new, images, weight, bias, alpha, *floats)


@pytest.mark.parametrize("backend", BACKENDS)
def test_backward_without_image_channels(backend):
    """Found by tests/test_fuzz_raw_ops.py: with C_img = 0 the emulated (and CUDA) host launched no kernel, so
    grad_new and grad_bias were uninitialised memory. The old path is then lrelu(bias_gain * bias)."""
    ops = _library.family_ops(backend)
    grad_y, new = torch.randn(2, 3, 2, 2, dtype=torch.float64), torch.randn(2, 3, 2, 2, dtype=torch.float64)
    images, weight = torch.empty(2, 0, 4, 4, dtype=torch.float64), torch.empty(3, 0, 1, 1, dtype=torch.float64)
    bias = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor(0.25)
    old = torch.nn.functional.leaky_relu(0.5 * bias, 0.2).reshape(1, 3, 1, 1).expand(new.shape)
    torch.testing.assert_close(ops.fade_from_rgb_forward(images, new, weight, bias.detach(), alpha, 1.0, 0.5, 0.2),
                               torch.lerp(old, new, 0.25))
    grad_images, grad_new, grad_weight, grad_bias = ops.fade_from_rgb_backward(grad_y, images, weight, bias.detach(),
                                                                               alpha, 1.0, 0.5, 0.2)
    (expected_bias,) = torch.autograd.grad(torch.lerp(old, new, 0.25), bias, grad_y)
    torch.testing.assert_close(grad_new, 0.25 * grad_y)
    torch.testing.assert_close(grad_bias, expected_bias)
    assert grad_images.shape == images.shape and grad_weight.shape == weight.shape


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
def test_double_backward_formula_refuses_misshaped_operands(namespace):
    """The double-backward raw op is a composite of torch ops: without its check a wrongly shaped gradient would
    broadcast into a wrong result (also on meta tensors, which no kernel sees), and an alpha outside [0, 1] would
    extrapolate."""
    op = getattr(torch.ops, namespace).fade_from_rgb_double_backward
    images, grad_y, weight, bias = operands(2, 4, 2, 3, 3)
    alpha, floats = torch.tensor(0.5), (0.5, 1.0, 0.2)
    backward_args = (grad_y, images, weight, bias, alpha, *floats)
    with pytest.raises(RuntimeError, match=r"gg_images must have images' shape \(2, 3, 4, 6\)"):
        op(images[:, :1], None, None, None, *backward_args)
    with pytest.raises(RuntimeError, match=r"gg_new must have grad_y's shape \(2, 4, 2, 3\)"):
        op(None, grad_y[:, :, :1], None, None, *backward_args)
    with pytest.raises(RuntimeError, match=r"gg_weight must have weight's shape \(4, 3, 1, 1\)"):
        op(None, None, weight[:, :1], None, *backward_args)
    with pytest.raises(RuntimeError, match=r"gg_bias must have bias' shape \(4,\)"):
        op(None, None, None, bias[:1], *backward_args)
    with pytest.raises(RuntimeError, match=r"gg_bias must have bias' shape \(4,\)"):
        op(None, None, None, bias[:1].to("meta"), *(a.to("meta") for a in backward_args[:5]), *floats)
    with pytest.raises(TypeError, match="gg_new must have grad_y's dtype"):
        op(None, grad_y.double(), None, None, *backward_args)
    with pytest.raises(RuntimeError, match="bias must have shape"):
        op(None, grad_y, None, None, grad_y, images, weight, bias[:2], alpha, *floats)
    with pytest.raises(RuntimeError, match="images must have shape"):
        op(None, grad_y, None, None, grad_y, images[:, :, :2], weight, bias, alpha, *floats)
    with pytest.raises(ValueError, match=r"alpha must be finite and in \[0, 1\]"):
        op(None, grad_y, None, None, grad_y, images, weight, bias, torch.tensor(1.5), *floats)


def _double_backward_reference(gg, grad_y, images, weight, bias, alpha, scale, bias_gain, slope):
    """The double backward by autograd of the float64 reference, with the old path written out (F.avg_pool2d and
    F.conv2d refuse empty maps)."""
    leaves = [t.double().requires_grad_() for t in (grad_y, images, weight, bias)]
    gy, i, w, b = leaves
    new = torch.zeros_like(gy, requires_grad=True)
    n, c_img, h2, w2 = i.shape
    pooled = i.reshape(n, c_img, h2 // 2, 2, w2 // 2, 2).mean((3, 5))
    z = torch.einsum("nkhw,ck->nchw", pooled, w.flatten(1)) * scale + b.view(1, -1, 1, 1) * bias_gain
    y = torch.lerp(torch.where(z > 0, z, z * slope), new, alpha)
    grads = torch.autograd.grad(y, (i, new, w, b), gy, create_graph=True)
    pairs = [(o, t.double()) for o, t in zip(grads, gg) if t is not None and o.requires_grad]
    return torch.autograd.grad([o for o, _ in pairs], leaves, [t for _, t in pairs], materialize_grads=True,
                               allow_unused=True)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
@pytest.mark.parametrize("shape", [(2, 3, 2, 2, 0), (2, 3, 0, 2, 3), (0, 3, 2, 2, 3), (2, 0, 2, 2, 3)],
                         ids=["no_image_channels", "empty_maps", "empty_batch", "no_channels"])
def test_double_backward_formula_on_empty_tensors(namespace, shape):
    """Found by tests/test_fuzz_raw_ops.py: the formula's avg_pool2d, interpolate and reshape(..., -1) refused empty
    tensors that the kernels take (no image channels: the old path is lrelu(bias_gain * bias))."""
    op = getattr(torch.ops, namespace).fade_from_rgb_double_backward
    images, grad_y, weight, bias = operands(*shape, dtype=torch.float64)
    gg = operands(*shape, dtype=torch.float64)  # gg_images, gg_new, gg_weight, gg_bias
    floats = (0.5, 2.0, 0.2)
    got = op(*gg, grad_y, images, weight, bias, torch.tensor(0.25), *floats)
    expected = _double_backward_reference(gg, grad_y, images, weight, bias, 0.25, *floats)
    for o, e in zip(got, expected):
        torch.testing.assert_close(o, e)


def test_double_backward_formula_leaves_out_a_missing_gradient():
    """Found by tests/test_fuzz_raw_ops.py: a missing gg_weight was a conv with zeros, whose product with an
    infinite pooled image made grad_grad_y NaN where the other gradients give finite values."""
    images, grad_y, weight, bias = operands(1, 2, 2, 2, 3, dtype=torch.float64)
    images[0, 0, 0, 0] = math.inf
    gg_bias = torch.tensor([1.0, -2.0], dtype=torch.float64)
    got = torch.ops.progan_fast.fade_from_rgb_double_backward(None, None, None, gg_bias, grad_y, images, weight, bias,
                                                              torch.tensor(0.25), 0.5, 2.0, 0.2)[0]
    assert torch.isfinite(got).all()
    z = torch.einsum("nkhw,ck->nchw", F.avg_pool2d(images, 2), weight.flatten(1)) * 0.5 + 2.0 * bias.view(1, -1, 1, 1)
    torch.testing.assert_close(got, 0.75 * torch.where(z > 0, 1.0, 0.2) * 2.0 * gg_bias.view(1, -1, 1, 1))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_double_backward_formula_meta_layout(memory_format):
    """Found by tests/test_fuzz_raw_ops.py: the outputs took the layout conv2d chose from the images (channels_last
    images gave a channels_last grad_grad_y for an NCHW grad_y), which the same call on meta tensors did not
    reproduce. They now follow grad_y, as the backward's."""
    images, grad_y, weight, bias = operands(2, 4, 3, 2, 3)
    images = layout(images, memory_format)
    grad_y = layout(grad_y, torch.channels_last if memory_format == torch.contiguous_format else
                    torch.contiguous_format)
    gg = (torch.randn_like(images), torch.randn_like(grad_y), torch.randn_like(weight), torch.randn_like(bias))
    args = (*gg, grad_y, images, weight, bias, torch.tensor(0.5))
    real = torch.ops.progan_fast.fade_from_rgb_double_backward(*args, 0.5, 1.0, 0.2)
    meta = torch.ops.progan_fast.fade_from_rgb_double_backward(*(a.to("meta") for a in args), 0.5, 1.0, 0.2)
    for r, m in zip(real, meta):
        assert (r.shape, r.dtype, r.stride()) == (m.shape, m.dtype, m.stride())
    assert real[0].is_contiguous(memory_format=torch.channels_last) == (memory_format == torch.contiguous_format)


IMAGES, NEW, WEIGHT, BIAS = operands(2, 4, 3, 3, 3)


@pytest.mark.parametrize("args,kwargs,exc,match", [
    ((IMAGES[..., :5], NEW, WEIGHT, BIAS, 0.5), {}, ValueError, "images must be N x C_img x 2H x 2W"),
    ((IMAGES[:1], NEW, WEIGHT, BIAS, 0.5), {}, ValueError, "images must be"),
    ((IMAGES, NEW, WEIGHT[:, :2], BIAS, 0.5), {}, ValueError, "weight must be a 1x1 conv"),
    ((IMAGES, NEW, torch.randn(4, 3, 3, 3), BIAS, 0.5), {}, ValueError, "weight must be a 1x1 conv"),
    ((IMAGES, NEW, WEIGHT, BIAS[:3], 0.5), {}, ValueError, "bias must have 4 elements"),
    ((IMAGES, NEW, WEIGHT, BIAS.double(), 0.5), {}, TypeError, "bias has dtype"),
    ((IMAGES, NEW[0], WEIGHT, BIAS, 0.5), {}, ValueError, "new must be 4-D"),
    ((IMAGES.int(), NEW, WEIGHT, BIAS, 0.5), {}, TypeError, "images must be float16"),
    ((IMAGES, NEW, WEIGHT, BIAS, 1.5), {}, ValueError, "alpha must be finite and in"),
    ((IMAGES, NEW, WEIGHT, BIAS, math.nan), {}, ValueError, "alpha must be finite and in"),
    ((IMAGES, NEW, WEIGHT, BIAS, 0.5), {"lr_mul": 0.0}, ValueError, "lr_mul must be > 0"),
    ((IMAGES, NEW, WEIGHT, BIAS, 0.5), {"gain": math.inf}, ValueError, "gain must be finite"),
    ((IMAGES, NEW, WEIGHT, BIAS, 0.5), {"negative_slope": "0.2"}, TypeError, "negative_slope must be a float"),
    ((IMAGES[:0], NEW[:0], WEIGHT, BIAS, 0.5), {}, ValueError, "images has an empty batch"),
])
def test_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fade_from_rgb(*args, **kwargs)


@st.composite
def fade_inputs(draw):
    n, c, h, w = (draw(st.integers(1, 4)) for _ in range(4))
    c_img = draw(st.sampled_from([1, 3, 4, 6]))
    dtype = draw(st.sampled_from(DTYPES))
    memory_format = draw(st.sampled_from(LAYOUTS))
    seed = draw(SEEDS)
    inputs = operands(n, c, h, w, c_img, dtype, memory_format, torch.Generator().manual_seed(seed))
    if draw(st.booleans()):  # a non-dense view of new
        inputs[1] = torch.cat([inputs[1], inputs[1]], 2)[:, :, ::2]
    alpha = draw(st.floats(0.0, 1.0))
    return inputs, draw(st.sampled_from([alpha, torch.tensor(alpha)])), draw(st.floats(-0.5, 1.0)), seed


@settings(max_examples=40, deadline=None)
@given(fade_inputs())
def test_property_random_shapes_strides_dtypes(case):
    inputs, alpha, slope, _ = case
    with progan_fast.use_backend("cpu"):
        y = fade_from_rgb(*inputs, alpha, negative_slope=slope)
    expected = reference.fade_from_rgb(*(t.double() for t in inputs), alpha, negative_slope=slope)
    assert_close(y, expected, inputs[0].dtype)
