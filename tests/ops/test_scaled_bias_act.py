import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import progan_fast
from progan_fast import _library, backends, reference
from progan_fast.ops import scaled_bias_act

from progan_fast._layout import is_channels_last

from .parity import (GRAD_TOLERANCES, ONE_CHANNEL_SHAPES, SEEDS, _penalty_grads, assert_close, check_parity,
                     families_of, kernel_ran, layout, one_channel_input)

# Every kernel family that runs on this machine's CPU tensors: cpu, emulated CUDA, triton (interpreted).
KERNEL_BACKENDS = families_of("scaled_bias_act")
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
LAYOUTS = [torch.contiguous_format, torch.channels_last]
LAYOUT_IDS = ["nchw", "channels_last"]
SHAPES = [(2, 3, 5, 7), (3, 1, 4, 4), (2, 16, 1, 1), (4, 32, 8, 8)]
# ProGAN's 4x4 and 8x8 maps at 512 channels (small batches), where the GPU kernels give a pixel the most lanes: a
# block of 256 in both layouts (channels-last rows of single elements, float64's of 16-byte vectors), adding as a
# wide row. tests/gpu/test_cuda_emulation.py pins the geometry at N = 16 and 64 and runs the schedules in between.
SMALL_MAPS = [(4, 512, 4, 4), (2, 512, 8, 8)]
# (activation, negative_slope, pixel_norm): every way the backward reads what was saved (y for slope >= 0, x for a
# negative slope, nothing for linear without pixel norm), with and without pixel norm.
CONFIGS = [("lrelu", 0.2, False), ("lrelu", 0.2, True), ("relu", 0.2, False), ("relu", 0.2, True),
           ("linear", 0.2, False), ("linear", 0.2, True), ("lrelu", -0.3, False), ("lrelu", -0.3, True),
           ("lrelu", 1.7, True)]
CONFIG_IDS = [f"{a}{s if a == 'lrelu' else ''}{'-pn' if pn else ''}" for a, s, pn in CONFIGS]


def explicit(x, bias, scale, activation, slope, pixel_norm, eps=1e-8):
    """Elementwise formula written independently of the reference (TF official: lrelu = max(v, slope * v))."""
    y = x.double() * scale
    if bias is not None:
        y = y + bias.double().view([1, -1] + [1] * (x.dim() - 2))
    if activation == "lrelu":
        y = torch.where(y > 0, y, slope * y)
    elif activation == "relu":
        y = torch.where(y > 0, y, torch.zeros_like(y))
    if pixel_norm:
        y = y / torch.sqrt((y * y).sum(1, keepdim=True) / y.shape[1] + eps)
    return y


def op(activation="lrelu", slope=0.2, pixel_norm=False, scale=0.37):
    """(fn, reference_fn) over (x, bias) for check_parity."""
    def fn(x, bias=None):
        return scaled_bias_act(x, bias, scale, activation, slope, pixel_norm)

    def ref(x, bias=None):
        return reference.scaled_bias_act(x, bias, scale, activation, slope, pixel_norm)
    return fn, ref


def test_cpu_kernel_is_built():
    assert backends.available("cpu") == (True, None)
    assert backends.resolve("scaled_bias_act", torch.device("cpu")) == "cpu"


def test_every_family_is_tested():
    assert {"cpu", "emulated"} <= set(KERNEL_BACKENDS)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["plain", "pn"])
def test_parity_4d(backend, dtype, memory_format, shape, pixel_norm):
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    bias = torch.randn(shape[1], dtype=dtype)
    fn, ref = op(pixel_norm=pixel_norm)
    check_parity(backend, fn, ref, [x, bias], dtype, op="scaled_bias_act")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("shape", SMALL_MAPS, ids=str)
def test_parity_small_maps(backend, dtype, memory_format, shape):
    """float16 for a 16-bit type: in bfloat16, at 9 x 8 x 8 pixels, the bias gradient's sum of contributions
    from the saved (rounded) y misses the gradient tolerance in every family (0.09 off at 0.45), kernels or not."""
    x = layout(torch.randn(shape, dtype=dtype), memory_format)
    bias = torch.randn(shape[1], dtype=dtype)
    # An irrational scale: with 0.37 (or ProGAN's 1/48 of a 3x3 conv over 512 channels) the product of some 16-bit
    # x cancels a bias exactly (x = -1.5625, b = 0.578125), and at these sizes some do; the cpu family's fused
    # multiply-add then leaves ~1e-9 where the once-rounded reference has 0, more than one unit of 0.
    fn, ref = op(pixel_norm=True, scale=math.sqrt(0.5))
    check_parity(backend, fn, ref, [x, bias], dtype, check_double_backward=False, op="scaled_bias_act")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_parity_activations(backend, config, memory_format, dtype):
    activation, slope, pixel_norm = config
    x = layout(torch.randn(2, 6, 3, 5, dtype=dtype), memory_format)
    fn, ref = op(activation, slope, pixel_norm)
    # linear without pixel norm: the input gradient is scale * grad_y, a penalty on it has no gradient at all
    double = activation != "linear" or pixel_norm
    check_parity(backend, fn, ref, [x, torch.randn(6, dtype=dtype)], dtype, check_double_backward=double,
                 op="scaled_bias_act")
    check_parity(backend, fn, ref, [x], dtype, check_double_backward=double, op="scaled_bias_act")  # no bias


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(6, 9), (5, 512), (3, 4, 7), (7, 3)], ids=str)
@pytest.mark.parametrize("pixel_norm", [False, True], ids=["plain", "pn"])
def test_parity_dense_and_3d(backend, dtype, shape, pixel_norm):
    fn, ref = op(pixel_norm=pixel_norm)
    check_parity(backend, fn, ref, [torch.randn(shape, dtype=dtype), torch.randn(shape[1], dtype=dtype)], dtype,
                 op="scaled_bias_act")


def check_large(x, bias, config):
    """Forward and input gradient as check_parity does; the bias gradient, a sum over more than 10^4 pixels, to its
    dtype's tolerance plus 1e-7 of the sum of its terms' magnitudes (eager float32 PyTorch is off by as much: for
    a sum of mixed-sign terms a tolerance relative to the result alone would judge the terms' float32 rounding)."""
    fn, ref = op(*config)
    inputs = [t.detach().requires_grad_() for t in (x, bias)]
    exact_inputs = [t.detach().double().requires_grad_() for t in (x, bias)]
    with kernel_ran("cpu", "scaled_bias_act"):
        out = fn(*inputs)
    exact = ref(*exact_inputs)
    assert_close(out, exact, x.dtype)
    assert out.is_contiguous(memory_format=torch.channels_last if is_channels_last(x) else torch.contiguous_format)
    weights = torch.randn(x.shape, dtype=torch.float64)
    with progan_fast.use_backend("cpu"):
        grad_x, grad_bias = torch.autograd.grad((out.double() * weights).sum(), inputs)
    exact_x, exact_bias = torch.autograd.grad((exact * weights).sum(), exact_inputs)
    assert_close(grad_x, exact_x, x.dtype, grad=True)
    terms = (exact_x / 0.37).abs().sum([0, 2, 3])  # grad_x = scale * (the bias gradient's terms)
    rtol = GRAD_TOLERANCES[x.dtype][0]  # the result's own rounding to x's dtype
    term_tol = 1e-14 if x.dtype == torch.float64 else 1e-7
    assert ((grad_bias.double() - exact_bias).abs() <= rtol * exact_bias.abs() + term_tol * terms).all()


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("config", [("lrelu", 0.2, False), ("lrelu", 0.2, True), ("lrelu", -0.3, True)],
                         ids=["lrelu", "lrelu-pn", "negative-pn"])
def test_large_odd_tensor(memory_format, config):
    """Outputs of 8 MiB and more take the CPU kernel's streaming-store path (odd sizes: unaligned heads/tails); NCHW
    maps this large run one bias per plane instead of a per-sample bias pattern."""
    check_large(layout(torch.randn(3, 64, 129, 131), memory_format), torch.randn(64), config)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64], ids=str)
@pytest.mark.parametrize("config", [("lrelu", 0.2, False), ("lrelu", -0.3, False), ("linear", 0.2, False)],
                         ids=["lrelu", "negative", "linear"])
def test_nchw_planes_longer_than_scratch(dtype, config):
    """NCHW planes of more than 16k elements: staged (half) paths cut them into segments of one channel."""
    check_large(torch.randn(2, 2, 130, 131, dtype=dtype), torch.randn(2, dtype=dtype), config)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_matches_independent_formula(backend):
    x = torch.randn(3, 5, 4, 7, dtype=torch.float64)
    bias = torch.randn(5, dtype=torch.float64)
    with progan_fast.use_backend(backend):
        for activation, slope, pixel_norm in CONFIGS:
            for b in (bias, None):
                y = scaled_bias_act(x, b, 0.37, activation, slope, pixel_norm)
                torch.testing.assert_close(y, explicit(x, b, 0.37, activation, slope, pixel_norm), rtol=1e-12,
                                           atol=1e-12)


def test_defaults_are_tf_lrelu_without_norm():
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(scaled_bias_act(x), explicit(x, None, 1.0, "lrelu", 0.2, False))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_gradcheck_and_gradgradcheck(backend, config):
    activation, slope, pixel_norm = config
    # shifted away from 0 so that finite differences never straddle the kink of the activation
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_()
    bias = torch.zeros(4, dtype=torch.float64, requires_grad=True)

    def fn(x, bias):
        return scaled_bias_act(x, bias, 0.7, activation, slope, pixel_norm)

    with progan_fast.use_backend(backend):
        assert torch.autograd.gradcheck(fn, (x, bias))
        assert torch.autograd.gradgradcheck(fn, (x, bias))
        x_cl = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
        assert torch.autograd.gradgradcheck(fn, (x_cl, bias))
        dense = torch.randn(3, 5, dtype=torch.float64)
        dense = (dense + 0.1 * dense.sign()).requires_grad_()
        assert torch.autograd.gradgradcheck(lambda t: scaled_bias_act(t, None, 1.3, activation, slope, pixel_norm),
                                            (dense,))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("slope", [0.2, -0.3])
def test_third_derivative(backend, slope):
    """Every order is right, not only the second: rsqrt is a differentiable output of the forward, so the double
    backward's gradient with respect to it reaches x and bias."""
    x = torch.randn(2, 4, 2, 3, dtype=torch.float64)
    x = (x + 0.1 * x.sign()).requires_grad_()
    bias = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 4, 2, 3, dtype=torch.float64)

    def input_gradient(t, b):
        return torch.autograd.grad((scaled_bias_act(t, b, 0.9, "lrelu", slope, True) * v).sum(), (t, b),
                                   create_graph=True)

    with progan_fast.use_backend(backend):
        assert torch.autograd.gradgradcheck(input_gradient, (x, bias))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", ONE_CHANNEL_SHAPES, ids=str)
@pytest.mark.parametrize("slope", [0.2, -0.3])
def test_one_channel_pixel_norm(backend, dtype, shape, slope):
    """Found by make sanitize (the property test below): pixel norm over one channel has the gradient
    eps * r^3 * grad_y, which r * (grad_y - y * mean_c(grad_y * y)) gets as a difference of two terms ~ r * grad_y;
    float32 left errors of a few ulp of r * |grad_y| in its place (1.6e-5 against -0.0074 at a = 0.018). Forward,
    gradients and double backward against the float64 reference, y saved (slope 0.2) and x saved (slope -0.3)."""
    fn, ref = op("lrelu", slope, True, scale=1.0)
    x = one_channel_input(shape, dtype)
    double = dtype != torch.float16  # second derivatives of ~1e7 at |x| ~ 1e-4, beyond float16's range
    check_parity(backend, fn, ref, [x, torch.tensor([1e-4], dtype=dtype)], dtype, check_double_backward=double,
                 op="scaled_bias_act")
    check_parity(backend, fn, ref, [x], dtype, check_double_backward=double, op="scaled_bias_act")


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("slope", [0.2, -0.3])
def test_one_channel_pixel_norm_gradcheck_and_gradgradcheck(backend, slope):
    x = one_channel_input((2, 1, 3, 3), torch.float64).requires_grad_()
    latents = one_channel_input((5, 1), torch.float64).requires_grad_()
    bias = torch.tensor([1e-4], dtype=torch.float64, requires_grad=True)

    def fn(t, b):
        return scaled_bias_act(t, b, 0.7, "lrelu", slope, True)

    with progan_fast.use_backend(backend):
        for t in (x, latents):
            assert torch.autograd.gradcheck(fn, (t, bias))
            assert torch.autograd.gradgradcheck(fn, (t, bias))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_opcheck(backend, memory_format, dtype):
    ops = _library.family_ops(backend)
    for shape in [(2, 8, 4, 4), (3, 1, 5, 2), (2, 3, 1, 1)]:
        for requires_grad in (False, True):
            x = layout(torch.randn(shape, dtype=dtype), memory_format).requires_grad_(requires_grad)
            bias = torch.randn(shape[1], dtype=dtype, requires_grad=requires_grad)
            for slope, pixel_norm in ((0.2, True), (0.2, False), (1.0, False), (-0.5, True)):
                torch.library.opcheck(ops.scaled_bias_act_forward.default, (x, bias, 0.5, slope, pixel_norm, 1e-8))
            torch.library.opcheck(ops.scaled_bias_act_forward.default, (x, None, 0.5, 0.2, True, 1e-8))
            y, r = ops.scaled_bias_act_forward(x.detach(), bias.detach(), 0.5, 0.2, True, 1e-8)
            dy = layout(torch.randn(shape, dtype=dtype), memory_format).requires_grad_(requires_grad)
            torch.library.opcheck(ops.scaled_bias_act_backward.default,
                                  (dy, y, r, None, 0.5, 0.2, True, 1e-8, False, True))
            torch.library.opcheck(ops.scaled_bias_act_backward.default,
                                  (dy, x.detach(), r, bias.detach(), 0.5, -0.5, True, 1e-8, True, False))
            torch.library.opcheck(ops.scaled_bias_act_backward.default,
                                  (dy, None, None, None, 0.5, 1.0, False, 1e-8, False, True))
    latents = torch.randn(4, 16, dtype=dtype, requires_grad=True)
    torch.library.opcheck(ops.scaled_bias_act_forward.default, (latents, None, 1.0, 0.2, True, 1e-8))


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
def test_compile_fullgraph(memory_format):
    torch._dynamo.reset()

    def fn(t, b):
        return scaled_bias_act(t * 2.0, b, 0.5, pixel_norm=True).square().sum()

    x = layout(torch.randn(2, 8, 4, 4), memory_format).requires_grad_()
    b = torch.randn(8, requires_grad=True)
    compiled = torch.compile(fn, fullgraph=True, backend="inductor")
    with progan_fast.use_backend("cpu"):
        expected = fn(x, b)
        expected_grads = torch.autograd.grad(expected, (x, b))
        got = compiled(x, b)
        got_grads = torch.autograd.grad(got, (x, b))
        explanation = torch._dynamo.explain(fn)(x, b)
    torch.testing.assert_close(got, expected)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)
    assert explanation.graph_break_count == 0


def test_cpp_family_autograd_is_registered_in_cpp():
    """Python autograd costs ~0.1 ms a call at in-cache shapes; both orders must run C++ autograd nodes."""
    x = torch.randn(2, 8, 2, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(8, dtype=torch.float64, requires_grad=True)
    y, r = torch.ops.progan_fast.scaled_bias_act_forward(x, b, 0.5, 0.2, True, 1e-8)
    assert "CppNode<" in y.grad_fn.name() and "ScaledBiasActForward" in y.grad_fn.name()
    (dx,) = torch.autograd.grad(y, x, torch.randn_like(y), create_graph=True)
    assert "CppNode<" in dx.grad_fn.name() and "ScaledBiasActBackward" in dx.grad_fn.name()


def _saved(fn, *inputs):
    """(tensors fn(*inputs) saves for backward, its output, bytes of the distinct saved storages other than the
    output's and the parameters': the output is the next layer's input, which that layer saves anyway)."""
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = fn(*inputs)
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in saved}
    for alive in (out,) + inputs[1:]:
        storages.pop(alive.untyped_storage().data_ptr(), None)
    return saved, out, sum(storages.values())


@pytest.mark.parametrize("memory_format", LAYOUTS, ids=LAYOUT_IDS)
@pytest.mark.parametrize("config,saves", [
    (("lrelu", 0.2, True), "y+rsqrt"), (("lrelu", 0.2, False), "y"), (("relu", 0.2, True), "y+rsqrt"),
    (("linear", 0.2, False), ""), (("linear", 0.2, True), "y+rsqrt"), (("lrelu", -0.3, False), "x+bias"),
    (("lrelu", -0.3, True), "x+bias+rsqrt")], ids=str)
def test_saves_only_the_output_and_one_float_per_pixel(memory_format, config, saves):
    """The backward keeps y (which the next layer saves anyway) plus one rsqrt per pixel with pixel norm; the
    unfused reference keeps full-size intermediates (leaky ReLU's input, pixel norm's products). Bytes held
    beyond the output, measured with saved_tensors_hooks (README: "Saved for backward")."""
    shape = (4, 16, 8, 8)
    x = layout(torch.randn(shape), memory_format).requires_grad_()
    bias = torch.randn(16, requires_grad=True)
    fn, ref = op(*config)
    with progan_fast.use_backend("cpu"):
        saved, y, held = _saved(fn, x, bias)
    expected = {"y": [(shape, y)], "x": [(shape, x)], "bias": [((16,), bias)], "rsqrt": [((4, 1, 8, 8), None)],
                "": []}
    wanted = [e for part in saves.split("+") for e in expected[part]]
    assert sorted(tuple(t.shape) for t in saved) == sorted(s for s, _ in wanted)
    for s, source in wanted:
        if source is not None:  # the very tensor, not a copy
            assert any(t.data_ptr() == source.data_ptr() for t in saved)
    assert held == sum(math.prod(s) * 4 for s, source in wanted if source is not y and source is not bias)
    _, _, reference_held = _saved(ref, x, bias)
    assert reference_held >= held
    if config[0] == "lrelu" and config[1] > 0:
        assert reference_held >= held + math.prod(shape) * 4  # at least one full-size intermediate more


def test_input_not_mutated_and_noncontiguous_input():
    base = torch.randn(3, 10, 6, 6)
    x = base[:, ::2, 1:, :5]  # strided in every dimension: copied to contiguous, documented fallback
    bias = torch.randn(10)[::2]
    before, bias_before = x.clone(), bias.clone()
    with progan_fast.use_backend("cpu"):
        y = scaled_bias_act(x, bias, 0.5, pixel_norm=True)
    assert torch.equal(x, before) and torch.equal(bias, bias_before)
    assert y.is_contiguous()
    assert_close(y, explicit(x, bias, 0.5, "lrelu", 0.2, True), torch.float32)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_empty_tensors(backend):
    ops = _library.family_ops(backend)
    x = torch.empty(3, 0, 4, 4)
    y, r = ops.scaled_bias_act_forward(x, torch.empty(0), 1.0, 0.2, True, 1e-8)
    assert y.shape == x.shape and r.shape == (3, 1, 4, 4) and torch.isnan(r).all()  # mean of nothing
    x = torch.empty(2, 5, 0, 3)
    y, r = ops.scaled_bias_act_forward(x, torch.ones(5), 1.0, 0.2, True, 1e-8)
    assert y.shape == x.shape and r.shape == (2, 1, 0, 3)
    gx, gb = ops.scaled_bias_act_backward(torch.empty(2, 5, 0, 3), y, r, None, 1.0, 0.2, True, 1e-8, False, True)
    assert gx.shape == x.shape and torch.equal(gb, torch.zeros(5))  # a sum over no pixels


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_autocast_follows_the_autocast_dtype(backend):
    x = torch.randn(4, 8, 4, 4)
    b = torch.randn(8)
    with progan_fast.use_backend(backend), torch.autocast("cpu", dtype=torch.bfloat16):
        y = scaled_bias_act(x, b, 0.5, pixel_norm=True)
    assert y.dtype == torch.bfloat16
    assert_close(y, explicit(x.bfloat16(), b.bfloat16(), 0.5, "lrelu", 0.2, True), torch.bfloat16)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_raw_ops_refuse_mismatched_operands(backend):
    """The raw ops are callable directly: operands a kernel would read out of bounds are refused, also when an
    argument is a meta tensor (the fake function must refuse what the kernels refuse)."""
    ops = _library.family_ops(backend)
    x = torch.randn(2, 4, 3, 3)
    y, r = ops.scaled_bias_act_forward(x, None, 1.0, 0.2, True, 1e-8)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(4,\)"):
        ops.scaled_bias_act_forward(x, torch.ones(3), 1.0, 0.2, False, 1e-8)
    with pytest.raises(TypeError, match="bias must have dtype"):
        ops.scaled_bias_act_forward(x, torch.ones(4, dtype=torch.float64), 1.0, 0.2, False, 1e-8)
    with pytest.raises(RuntimeError, match="bias must be on cpu"):
        ops.scaled_bias_act_forward(x, torch.ones(4, device="meta"), 1.0, 0.2, False, 1e-8)
    with pytest.raises(RuntimeError, match="x must have at least 2 dimensions"):
        ops.scaled_bias_act_forward(torch.randn(5), None, 1.0, 0.2, False, 1e-8)
    with pytest.raises(RuntimeError, match="saved must have grad_y's shape"):
        ops.scaled_bias_act_backward(torch.randn(2, 4, 3, 2), y, r, None, 1.0, 0.2, True, 1e-8, False, True)
    with pytest.raises(TypeError, match="saved must have dtype"):
        ops.scaled_bias_act_backward(torch.randn(2, 4, 3, 3, dtype=torch.float64), y, r, None, 1.0, 0.2, True, 1e-8,
                                     False, True)
    with pytest.raises(RuntimeError, match=r"rsqrt must have one value per pixel \(18\)"):
        ops.scaled_bias_act_backward(torch.randn(2, 4, 3, 3), y, r[:1], None, 1.0, 0.2, True, 1e-8, False, True)
    with pytest.raises(RuntimeError, match="rsqrt is required"):
        ops.scaled_bias_act_backward(torch.randn(2, 4, 3, 3), y, None, None, 1.0, 0.2, True, 1e-8, False, True)
    with pytest.raises(RuntimeError, match="saved .* is required"):
        ops.scaled_bias_act_backward(torch.randn(2, 4, 3, 3), None, None, None, 1.0, 0.2, False, 1e-8, False, True)
    with pytest.raises(RuntimeError, match="rsqrt must be on cpu"):
        ops.scaled_bias_act_backward(torch.randn(2, 4, 3, 3), y, torch.empty(2, 1, 3, 3, device="meta"), None, 1.0,
                                     0.2, True, 1e-8, False, True)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_raw_ops_refuse_what_would_give_a_wrong_gradient(backend):
    """Found by tests/test_fuzz_raw_ops.py, each returned a wrong number: the derivative of a negative slope read
    from y (y > 0 on both sides of 0), a NaN/Inf slope or scale, an int rsqrt read as its values, and a meta
    rsqrt that the backward does not read, which routed a CPU call to the fake (uninitialised grad_x)."""
    ops = _library.family_ops(backend)
    x = torch.tensor([[-1.0, 2.0]], dtype=torch.float64)
    g = torch.ones_like(x)
    y, _ = ops.scaled_bias_act_forward(x, None, 1.0, -0.3, False, 1e-8)
    with pytest.raises(ValueError, match="saved_is_input must be true for slope -0.3"):
        ops.scaled_bias_act_backward(g, y, None, None, 1.0, -0.3, False, 1e-8, False, False)
    torch.testing.assert_close(ops.scaled_bias_act_backward(g, x, None, None, 1.0, -0.3, False, 1e-8, True, False)[0],
                               torch.tensor([[-0.3, 1.0]], dtype=torch.float64))
    for name, scale, slope, eps in (("slope", 1.0, math.nan, 1e-8), ("slope", 1.0, math.inf, 1e-8),
                                    ("scale", math.inf, 0.2, 1e-8), ("eps", 1.0, 0.2, math.nan)):
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            ops.scaled_bias_act_forward(x, None, scale, slope, True, eps)
        with pytest.raises(ValueError, match=f"{name} must be finite"):
            ops.scaled_bias_act_backward(g, x, None, None, scale, slope, False, eps, True, False)
    x = torch.randn(2, 4, 3, 3)
    y, r = ops.scaled_bias_act_forward(x, None, 1.0, 0.2, True, 1e-8)
    with pytest.raises(TypeError, match="rsqrt must be"):
        ops.scaled_bias_act_backward(torch.randn_like(x), y, r.long(), None, 1.0, 0.2, True, 1e-8, False, False)
    with pytest.raises(RuntimeError, match="rsqrt must be on cpu"):
        ops.scaled_bias_act_backward(torch.randn_like(x), y, torch.empty(0, device="meta"), None, 1.0, 0.2, False,
                                     1e-8, False, False)
    for bad in (torch.ones(0, 4, dtype=torch.int32), torch.ones(2, 4, dtype=torch.int64)):
        with pytest.raises(TypeError, match="x must be float16, bfloat16, float32 or float64"):
            ops.scaled_bias_act_forward(bad, None, 1.0, 0.2, True, 1e-8)


@pytest.mark.parametrize("namespace", _library.FAMILY_NAMESPACES)
def test_double_backward_formulas_refuse_misshaped_operands(namespace):
    """The higher-derivative raw ops are composites of torch ops: without their checks a wrongly shaped operand
    would broadcast into a wrong result instead of an error (also on meta tensors, which no kernel sees)."""
    ops = getattr(torch.ops, namespace)
    x = torch.randn(2, 4, 3, 3)
    bias = torch.randn(4)
    y, r = torch.ops.progan_fast.scaled_bias_act_forward(x, bias, 0.5, 0.2, True, 1e-8)
    g = torch.randn_like(x)
    double = ops.scaled_bias_act_double_backward
    with pytest.raises(RuntimeError, match=r"grad_grad_x must have grad_y's shape \(2, 4, 3, 3\)"):
        double(g[:, :1], None, g, y, r, None, 0.5, 0.2, True, 1e-8, False)
    with pytest.raises(RuntimeError, match=r"grad_grad_x must have grad_y's shape"):
        double(g[:, :1].to("meta"), None, g.to("meta"), y.to("meta"), r.to("meta"), None, 0.5, 0.2, True, 1e-8, False)
    with pytest.raises(TypeError, match="grad_grad_x must have dtype torch.float32"):
        double(g.double(), None, g, y, r, None, 0.5, 0.2, True, 1e-8, False)
    with pytest.raises(RuntimeError, match=r"grad_grad_bias must have shape \(4,\)"):
        double(None, torch.ones(1), g, y, r, None, 0.5, 0.2, True, 1e-8, False)
    with pytest.raises(RuntimeError, match=r"grad_grad_bias must have shape \(4,\)"):
        double(g, torch.ones(3), g, x, None, bias, 0.5, -0.3, False, 1e-8, True)
    with pytest.raises(RuntimeError, match=r"rsqrt must have one value per pixel \(18\)"):
        double(g, None, g, y, r[:1], None, 0.5, 0.2, True, 1e-8, False)
    with pytest.raises(RuntimeError, match="saved must have grad_y's shape"):
        double(g, None, g, y[:, :, :2], r, None, 0.5, 0.2, True, 1e-8, False)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(4,\)"):
        double(g, None, g, x, r, bias[:3], 0.5, 0.2, True, 1e-8, True)
    rsqrt_backward = ops.scaled_bias_act_rsqrt_backward
    with pytest.raises(RuntimeError, match=r"grad_rsqrt must have rsqrt's shape \(2, 1, 3, 3\)"):
        rsqrt_backward(r.flatten(), y, r, None, 0.5, 0.2, False, False)
    with pytest.raises(RuntimeError, match=r"grad_rsqrt must have one value per pixel \(18\)"):
        rsqrt_backward(r[:1], y, r, None, 0.5, 0.2, False, False)
    with pytest.raises(TypeError, match="grad_rsqrt must be torch.float32"):
        rsqrt_backward(r.double(), y, r, None, 0.5, 0.2, False, False)
    with pytest.raises(RuntimeError, match=r"rsqrt must have one value per pixel \(18\)"):
        rsqrt_backward(r[:1], y, r[:1], None, 0.5, 0.2, False, False)
    with pytest.raises(RuntimeError, match=r"bias must have shape \(4,\)"):
        rsqrt_backward(r, x, r, bias[:2], 0.5, 0.2, True, True)
    with pytest.raises(RuntimeError, match="saved must have at least 2 dimensions"):
        rsqrt_backward(r, x.flatten(), r, None, 0.5, 0.2, True, False)
    with pytest.raises(ValueError, match="saved_is_input must be true for slope -0.3"):
        rsqrt_backward(r, y, r, None, 0.5, -0.3, False, False)


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_double_backward_of_bias_gradient_with_saved_input(backend):
    """Found by tests/test_fuzz_raw_ops.py: without pixel norm and with a gradient for grad_bias, the formula ran
    the backward kernel with scale 1 on scale * G_x + G_b, and the kernel, which recomputes the pre-activation from
    the saved x (negative slope), took act' at x + bias instead of scale * x + bias."""
    ops = _library.family_ops(backend)
    x = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    bias = torch.tensor([-0.5, 1.0], dtype=torch.float64)  # scale * x + bias = [-0.13, 0.26]; x + bias = [0.5, -1]
    ggx, ggb = torch.tensor([[2.0, 3.0]], dtype=torch.float64), torch.tensor([0.25, -1.0], dtype=torch.float64)
    g_grad_y = ops.scaled_bias_act_double_backward(ggx, ggb, torch.ones_like(x), x, None, bias, 0.37, -0.3, False,
                                                   1e-8, True)[0]
    act_grad = torch.tensor([[-0.3, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(g_grad_y, act_grad * (0.37 * ggx + ggb))


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_double_backward_with_one_channel_is_float64_accurate(backend):
    """Found by tests/test_fuzz_raw_ops.py: with one channel pixel norm's derivatives are multiples of
    1 - y^2 = eps r^2, which float32 math computed as its rounding (errors ~ 1e-7 r ga, 100 % of the value)."""
    ops = _library.family_ops(backend)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 3, 3, generator=gen) * 0.05 + 0.01
    y, r = ops.scaled_bias_act_forward(x, None, 1.0, 0.2, True, 1e-8)
    gy, ggx = torch.randn(2, 4, 1, 3, 3, generator=gen)
    args = (None, gy, y, r, None, 1.0, 0.2, True, 1e-8, False)
    got = ops.scaled_bias_act_double_backward(ggx, *args)
    expected = ops.scaled_bias_act_double_backward(ggx.double(), *(a.double() if isinstance(a, torch.Tensor) else a
                                                                   for a in args))
    for o, e in zip(got[:3], expected[:3]):
        assert_close(o, e, o.dtype, grad=True)


X = torch.randn(2, 3, 4, 4)


@pytest.mark.parametrize("kwargs,exc,name", [
    (dict(x=[1.0]), TypeError, "x"),
    (dict(x=torch.ones(2, 3, dtype=torch.int32)), TypeError, "x"),
    (dict(x=torch.ones(3)), ValueError, "x"),
    (dict(x=torch.ones(0, 3, 2, 2)), ValueError, "x"),
    (dict(bias=torch.ones(4)), ValueError, "bias"),
    (dict(bias=torch.ones(3, 1)), ValueError, "bias"),
    (dict(bias=torch.ones(3, dtype=torch.float64)), TypeError, "bias"),
    (dict(bias=torch.ones(3, device="meta")), ValueError, "bias"),
    (dict(scale=math.nan), ValueError, "scale"),
    (dict(scale=math.inf), ValueError, "scale"),
    (dict(scale="2"), TypeError, "scale"),
    (dict(activation="tanh"), ValueError, "activation"),
    (dict(negative_slope=math.inf), ValueError, "negative_slope"),
    (dict(negative_slope=-math.inf), ValueError, "negative_slope"),
    (dict(pixel_norm=1), TypeError, "pixel_norm"),
    (dict(eps=-1e-8), ValueError, "eps"),
], ids=lambda v: str(v)[:40] if not isinstance(v, type) else v.__name__)
def test_bad_arguments(kwargs, exc, name):
    args = dict(x=X)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        scaled_bias_act(**args)


@st.composite
def strided_inputs(draw):
    ndim = draw(st.sampled_from([2, 3, 4]))
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(SEEDS)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn([s * 2 for s in shape], dtype=torch.float64, generator=gen).to(dtype)
    index = tuple(slice(None, None, 2) if draw(st.booleans()) else slice(0, s) for s in shape)
    x = x[index]
    if draw(st.booleans()):
        perm = draw(st.permutations(range(ndim)))
        x = x.permute(*perm).contiguous().permute(*[perm.index(i) for i in range(ndim)])
    elif ndim == 4 and draw(st.booleans()):
        x = x.contiguous(memory_format=torch.channels_last)
    bias = torch.randn(shape[1], dtype=torch.float64, generator=gen).to(dtype) if draw(st.booleans()) else None
    grad_y = torch.randn(shape, dtype=torch.float64, generator=gen).to(dtype)
    config = draw(st.sampled_from(CONFIGS))
    scale = draw(st.floats(-3, 3, allow_nan=False))
    return x, bias, grad_y, config, scale, seed


@settings(max_examples=60, deadline=None)
@given(strided_inputs())
def test_property_random_shapes_strides_dtypes(case):
    x, bias, g, (activation, slope, pixel_norm), scale, _ = case
    x = x.detach().requires_grad_()
    with progan_fast.use_backend("cpu"):
        y = scaled_bias_act(x, bias, scale, activation, slope, pixel_norm)
        (gx,) = torch.autograd.grad(y, x, g)
    assert_close(y, reference.scaled_bias_act(x.double(), None if bias is None else bias.double(), scale, activation,
                                              slope, pixel_norm), x.dtype)
    ref_x = x.detach().double().requires_grad_()
    ref_y = reference.scaled_bias_act(ref_x, None if bias is None else bias.double(), scale, activation, slope,
                                      pixel_norm)
    (ref_gx,) = torch.autograd.grad(ref_y, ref_x, g.double())
    if x.dtype in (torch.float16, torch.bfloat16):  # y is rounded before the backward reads its sign and value
        ref_gx = torch.where((ref_y.to(x.dtype) == 0) & (ref_y != 0), gx.double(), ref_gx)
    assert_close(gx, ref_gx, x.dtype, grad=True)
